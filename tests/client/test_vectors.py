"""The published test vectors (reference §1.9) against cardsavr.crypto."""

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cardsavr import crypto
from cardsavr.par import par

V6_KEY = "VeY9uD0w3zRdrlmIPxnU/l+Vr8w2bbV26E6DxajFu+A="
V10_SCALAR = "00887fa7d70e790f01dfd4a2352263e0e611e81832f7f5ff469fc517771c3f1e"
V3_SALT = "Ouz/hj6TER8Sf+nI2t8h3PICweZ0Jb2o8c4OySIjIIU="
AUTH = crypto.authorization_value("test_app")
NONCE = "1700000000000"
CANCEL_BODY = (
    '{"encrypted_body":"tbdQJ3GrS6NVV4lipg2xBpdJ4zu7d+thKiUJj6UvFXQ='
    '$AAECAwQFBgcICQoLDA0ODw=="}'
)


def v10_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(V10_SCALAR, 16), ec.SECP256R1())


def test_v2_sha256_of_string():
    assert (
        crypto.sha256_b64("This is a string to test")
        == "phNlTjUfBv63D27bmLEIeIYHqe9zbSVaF0K3EFvbHUA="
    )


def test_v3_pbkdf2_sha256_with_ascii_salt():
    key = hashlib.pbkdf2_hmac(
        "sha256", b"password", V3_SALT.encode("ascii"), crypto.PBKDF2_ROUNDS, 32
    )
    assert crypto.b64e(key) == "ykWREt8EZn335UvJXPcSmRkU13ca4VKuvnRRj07SVyo="


def test_v4_hmac_keyed_by_password_key():
    key = crypto.password_key("username", "password")
    assert (
        crypto.b64e(crypto.hmac_sha256(key, V3_SALT.encode("ascii")))
        == "BCWnfGG2Hb70aFXne6A2pFCZgn8NCSjENwOZVf8L9ko="
    )


def test_v5_hmac_with_base64_key():
    key = crypto.b64d("OkzxB4HQit43k3OEbSYTAPG5hf96erAAlhb4prAjH/I=")
    assert (
        crypto.b64e(crypto.hmac_sha256(key, b"This is a string to test"))
        == "/G/EmFauLHppkvXkX7wN2amzGCMGEV4CS0I37L1jG5Q="
    )


def test_v6_hmac_of_test_string():
    assert (
        crypto.b64e(crypto.hmac_sha256(crypto.b64d(V6_KEY), b"this is a test string"))
        == V3_SALT
    )


def test_v7_sha256_of_other_string():
    assert (
        crypto.sha256_b64("hash-this-string!")
        == "QY6u6uPnXP1AI5TnFA0WQWrxVFm0npXvF95B8kz4COg="
    )


def test_v8_password_key():
    key = crypto.password_key("some-user-dude", "a-strong-password")
    assert crypto.b64e(key) == "o20Wf5X6aK+BmQIYK/JSUB0rXbmLQNgbJwk9zXpvMJI="


V9_ENVELOPE = (
    "yVBmKx4onMa966t0ljFB9k3C0TUbmwRmOgpBV6OJd/LwT2byBsq93bo0E2Xj"
    "$YWJjZGVmZ2hpamts$aes-256-gcm"
)


def test_v9_gcm_envelope_decrypts():
    assert crypto.envelope_scheme(V9_ENVELOPE) == crypto.GCM
    assert crypto.decrypt(V9_ENVELOPE, V6_KEY) == "some super double secret text"


def test_v9_gcm_layout_is_ciphertext_and_tag_then_iv_then_suffix():
    sealed = AESGCM(crypto.b64d(V6_KEY)).encrypt(
        b"abcdefghijkl", b"some super double secret text", None
    )
    built = f"{crypto.b64e(sealed)}${crypto.b64e(b'abcdefghijkl')}$aes-256-gcm"
    assert built == V9_ENVELOPE


def test_v10_public_key_is_uncompressed_point():
    assert (
        crypto.public_key_b64(v10_private_key())
        == "BCvHHKUty2OORZDpfDD0fm2zZuPzQzfoI0gOUnVnLiqn0av4Z8VGJuHoqktTzl6E"
        "cz8WiO6+mvCj44OjU2xdwxY="
    )


def test_v11_ecdh_shared_secret():
    peer = (
        "BDsTBR7LwWwYPVjkeTddCmDCVbeCtZqgiNvEQnnB4Nrr"
        "ti4KvlBNzAMtZyxsqH58k9pRzaXxklV25pfI1A2aoeU="
    )
    assert (
        crypto.shared_session_key(v10_private_key(), peer)
        == "RxQMfnqs0cKSu+nkbazROunXKE7YMcpqUZ/soJbJmwM="
    )


def test_v12_ecdh_shared_secret():
    peer = (
        "BP0/5A6u4qsZxb8ZPO+/j2ojJc9v28oZ4A594kW7ZVrL"
        "PZ1bZc73d0ViMQmV68UqCd5cbB8Kc+GRE4yHRl4snRo="
    )
    assert (
        crypto.shared_session_key(v10_private_key(), peer)
        == "zEY70XnXMtnRMqoDAoXK3ILqcqMcoGj9xZNVKr22af0="
    )


def test_v13_ecdh_shared_secret():
    peer = (
        "BLApe7axIYP6K29Mwf0An4r/GkOE3PaqNWxIVNVguC28"
        "3VXOIw+SHLtvbfivIEAuGmwgIaA41idL4trEZvoyndo="
    )
    assert (
        crypto.shared_session_key(v10_private_key(), peer)
        == "QsoBbjzycrLAOdvOFkeTx0OnffFiTu3h8VEl35U59cM="
    )


def test_v14_ecdh_shared_secret():
    peer = (
        "BB6e1vHbVbXyOT7V3kChwc35Rrm9Rz5tC/UXi8SLAeuZ"
        "nPn4ge/PMX8MgyCVUalPD4OGsDont7r6TdRzjjjwGuY="
    )
    assert (
        crypto.shared_session_key(v10_private_key(), peer)
        == "nDWVbXs5ZraATuaU8U62cEe4/8Hf7m0rkJCY03VVPuA="
    )


V15_BODY = (
    '{"jobs":[{"job_id":228,"completed_on":"2023-09-28T06:53:22.505Z",'
    '"merchant_site":{"id":1,"host":"synthetic-sites-server.vercel.app/index.html",'
    '"name":"SS Standard Login"},"termination_type":"BILLABLE",'
    '"job_status_message":"Your card was placed successfully.",'
    '"job_status":"SUCCESSFUL","custom_data":null,'
    '"card_customer_key":"C111jwNWwu0YW6f4qN4UDBExKnNs="}],'
    '"financial_institution_id":2,"financial_institution":"Default",'
    '"trace":{"key":"iiodknpfk33i57zmghij"},"custom_data":null,'
    '"cuid":"iiodknpfk33i57zmghij","username":"iiodknpfk33i57zmghij"}'
)


def test_v15_webhook_signature_over_full_url():
    signature = crypto.sign_webhook(
        "Gp0nCuj+XiA0pb8AFKUzqbx5JL1GzBexbzds4oqahAc=",
        "https://synthetic-sites-server.vercel.app/webhook",
        "SWCH-HMAC-SHA256 Credentials=cardupdatr_ux_integrator",
        "1695884151469",
        V15_BODY.encode("utf-8"),
    )
    assert signature == "IvP5sku4yDw9ALA3hkaqodHNNCmPqYEYzfGtwY2ZdNE="


def test_computed_password_proof():
    assert (
        crypto.password_proof("some-user-dude", "a-strong-password", V6_KEY)
        == "X+3MCzPd05GE08wns/nOcqU5u0xwzr/HP6G1vN2RXgk="
    )


def test_computed_cbc_envelope_with_fixed_iv():
    envelope = crypto.encrypt_cbc_with_iv(
        b'{"status":"CANCEL_REQUESTED"}', crypto.b64d(V6_KEY), bytes(range(16))
    )
    assert f'{{"encrypted_body":"{envelope}"}}' == CANCEL_BODY


def test_computed_cbc_envelope_decrypts():
    envelope = CANCEL_BODY.split('"')[3]
    assert crypto.envelope_scheme(envelope) == crypto.CBC
    assert crypto.decrypt(envelope, V6_KEY) == '{"status":"CANCEL_REQUESTED"}'


def test_computed_signature_of_put_with_body():
    signature = crypto.sign(
        V6_KEY, "/place_card_on_single_site_jobs/123", AUTH, NONCE, CANCEL_BODY
    )
    assert signature == "k7CCFOxUf/6maNgdIKj4HifSjKho1JkSyy4iaLIDHFA="


def test_computed_signature_of_get_with_query():
    signature = crypto.sign(
        V6_KEY,
        "/place_card_on_single_site_jobs?cardholder_ids=5&status_exclude=SUCCESSFUL",
        AUTH,
        NONCE,
    )
    assert signature == "NtoD2tOexWL1Fpo1YeOxrzN0bvagllsDmuGPnD6JFCA="


def test_signature_is_over_the_decoded_path():
    encoded = crypto.sign(
        V6_KEY, "/merchant_sites?name_starts_with=Best%20Buy", AUTH, NONCE
    )
    decoded = crypto.sign(
        V6_KEY, "/merchant_sites?name_starts_with=Best Buy", AUTH, NONCE
    )
    assert encoded == decoded


def test_gcm_round_trip_with_random_iv():
    envelope = crypto.encrypt('{"a":1}', V6_KEY, crypto.GCM)
    assert envelope.endswith("$aes-256-gcm")
    assert len(envelope.split("$")[1]) == 16
    assert crypto.decrypt(envelope, V6_KEY) == '{"a":1}'


def test_tampered_gcm_envelope_is_refused():
    body, iv, suffix = V9_ENVELOPE.split("$")
    raw = bytearray(crypto.b64d(body))
    raw[0] ^= 1
    tampered = f"{crypto.b64e(bytes(raw))}${iv}${suffix}"
    try:
        crypto.decrypt(tampered, V6_KEY)
    except crypto.EnvelopeError:
        return
    raise AssertionError("a tampered GCM envelope decrypted")


def test_v1_par_matches_the_javascript_sdk():
    assert par("4111111111111111", "12", "24", "markbudos") == (
        "C1PdrJAa7yl1bcor6cpx59TgXaFc="
    )
