"""CardSavr's wire cryptography: login proof, ECDH, body envelopes and signatures.

Shared by the client and by the sandbox, which plays the server side of the
same protocol. Keys travel as base64 text, as every CardSavr SDK keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import urllib.parse

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CBC = "cbc"
GCM = "gcm"
SCHEMES = (CBC, GCM)
GCM_SUFFIX = "aes-256-gcm"
AUTH_SCHEME = "SWCH-HMAC-SHA256"
PBKDF2_ROUNDS = 5000


class EnvelopeError(ValueError):
    """An encrypted body that cannot be decoded or authenticated."""


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def sha256_b64(text: str) -> str:
    return b64e(hashlib.sha256(text.encode("utf-8")).digest())


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def password_key(username: str, password: str) -> bytes:
    salt = hashlib.sha256(username.encode("utf-8")).digest()
    return hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8"), salt, PBKDF2_ROUNDS, 32
    )


def password_proof(username: str, password: str, app_key_b64: str) -> str:
    """HMAC of the raw app key, keyed by the agent's PBKDF2 password key."""
    return b64e(hmac_sha256(password_key(username, password), b64d(app_key_b64)))


def generate_key_pair() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    return b64e(
        private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
    )


def shared_session_key(
    private_key: ec.EllipticCurvePrivateKey, peer_public_b64: str
) -> str:
    """The session key is the raw ECDH X coordinate, base64, with no KDF."""
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64d(peer_public_b64)
        )
    except ValueError as exc:
        raise EnvelopeError("peer public key is not a P-256 point") from exc
    return b64e(private_key.exchange(ec.ECDH(), peer))


def encrypt(plaintext: str, key_b64: str, scheme: str = CBC) -> str:
    key = b64d(key_b64)
    data = plaintext.encode("utf-8")
    if scheme == GCM:
        iv = os.urandom(12)
        sealed = AESGCM(key).encrypt(iv, data, None)
        return f"{b64e(sealed)}${b64e(iv)}${GCM_SUFFIX}"
    if scheme != CBC:
        raise ValueError(f"unknown encryption scheme {scheme!r}")
    return encrypt_cbc_with_iv(data, key, os.urandom(16))


def encrypt_cbc_with_iv(data: bytes, key: bytes, iv: bytes) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return f"{b64e(encryptor.update(padded) + encryptor.finalize())}${b64e(iv)}"


def envelope_scheme(envelope: str) -> str:
    """Tell CBC from GCM the way the SDKs do: by the IV's encoded length."""
    parts = envelope.split("$")
    if len(parts) == 3 and parts[2] == GCM_SUFFIX and len(parts[1]) == 16:
        return GCM
    if len(parts) == 2 and len(parts[1]) == 24:
        return CBC
    if len(parts) == 2 and len(parts[1]) == 16:
        return GCM
    raise EnvelopeError("envelope is neither AES-256-CBC nor AES-256-GCM")


def decrypt(envelope: str, key_b64: str) -> str:
    scheme = envelope_scheme(envelope)
    parts = envelope.split("$")
    try:
        key = b64d(key_b64)
        body = b64d(parts[0])
        iv = b64d(parts[1])
        if scheme == GCM:
            data = AESGCM(key).decrypt(iv, body, None)
        else:
            decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            padded = decryptor.update(body) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            data = unpadder.update(padded) + unpadder.finalize()
        return data.decode("utf-8")
    except (ValueError, TypeError) as exc:
        raise EnvelopeError("envelope could not be decrypted") from exc
    except Exception as exc:  # InvalidTag and padding errors carry no detail
        raise EnvelopeError("envelope could not be decrypted") from exc


def authorization_value(app_name: str) -> str:
    return f"{AUTH_SCHEME} Credentials={app_name}"


def app_name_from_authorization(value: str) -> str | None:
    prefix = f"{AUTH_SCHEME} Credentials="
    if not value.startswith(prefix):
        return None
    return value[len(prefix) :] or None


def new_nonce() -> str:
    return str(time.time_ns() // 1_000_000)


def string_to_sign(
    path_with_query: str, authorization: str, nonce: str, body: bytes | str = b""
) -> bytes:
    """Decoded path and query, authorization, nonce and the exact body bytes."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    path = urllib.parse.unquote(path_with_query)
    return (path + authorization + nonce).encode("utf-8") + body


def sign(
    key_b64: str,
    path_with_query: str,
    authorization: str,
    nonce: str,
    body: bytes | str = b"",
) -> str:
    message = string_to_sign(path_with_query, authorization, nonce, body)
    return b64e(hmac_sha256(b64d(key_b64), message))


def signature_matches(
    keys_b64: list[str] | tuple[str, ...],
    signature: str,
    path_with_query: str,
    authorization: str,
    nonce: str,
    body: bytes | str = b"",
) -> bool:
    """True when any of the keys (current first, then rotated ones) signed it."""
    for key in keys_b64:
        try:
            expected = sign(key, path_with_query, authorization, nonce, body)
        except ValueError:
            continue
        if hmac.compare_digest(expected, signature):
            return True
    return False


def sign_webhook(
    key_b64: str, full_url: str, authorization: str, nonce: str, body: bytes
) -> str:
    """Webhooks are signed over the full URL as sent, not a decoded path."""
    message = (full_url + authorization + nonce).encode("utf-8") + body
    return b64e(hmac_sha256(b64d(key_b64), message))
