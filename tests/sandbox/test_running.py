"""Certificates, determinism, logging hygiene and the ways to start the sandbox."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509

from sandbox.certs import ensure_certificate
from sandbox.clock import ManualClock
from sandbox.engine import Engine
from sandbox.server import serve
from tests.conftest import sandbox_config

from .wire import WireClient

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_certificate_names_every_loopback_address(tmp_path):
    cert_path, key_path = ensure_certificate(tmp_path / "ca.pem")

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert key_path == tmp_path / "ca.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_existing_certificate_is_reused(tmp_path):
    first, _ = ensure_certificate(tmp_path / "ca.pem")
    before = first.read_bytes()
    second, _ = ensure_certificate(tmp_path / "ca.pem")

    assert second.read_bytes() == before


def _quick_start_envelope(seed: int) -> str:
    engine = Engine(sandbox_config(seed=seed, clock=ManualClock()))
    holder, _ = engine.upsert_cardholder({"cuid": "same"})
    card = engine.create_card(
        {
            "cardholder_id": holder["id"],
            "pan": "4111111111111111",
            "expiration_month": "01",
            "expiration_year": "30",
            "name_on_card": "Same",
        }
    )
    job = engine.create_jobs(
        [
            {
                "cardholder_id": holder["id"],
                "card_id": card["id"],
                "account": {"merchant_site_id": 1},
            }
        ],
        {"credential_requests"},
        "https://sandbox",
    )[0]
    return job["credential_requests"][0]["envelope_id"]


def test_seeded_engines_issue_the_same_ids_and_envelopes():
    assert _quick_start_envelope(3) == _quick_start_envelope(3)
    assert _quick_start_envelope(3) != _quick_start_envelope(4)


async def test_logs_never_contain_credentials_card_data_or_keys(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    async with WireClient(sandbox) as client:
        await client.login()
        holder = await client.new_cardholder()
        await client.call(
            "POST",
            "/cardsavr_cards",
            {
                "cardholder_id": holder["id"],
                "pan": "4000056655665556",
                "cvv": "8642",
                "expiration_month": "11",
                "expiration_year": "29",
                "name_on_card": "Log Check",
            },
        )
        job = await client.start_job(
            {"username": "wrong-user-zq", "password": "pw-zq-secret"}, cardholder=holder
        )
        for _ in range(100):
            current = await client.job(job["id"])
            if current["credential_requests"]:
                break
            await asyncio.sleep(0.05)
        await client.answer(
            job["id"],
            current["credential_requests"][0]["envelope_id"],
            {"username": "good_email", "password": "pw-zq-other"},
        )
        session_key = client.key

    text = caplog.text
    for secret in (
        "4000056655665556",
        "8642",
        "wrong-user-zq",
        "pw-zq-secret",
        "pw-zq-other",
        sandbox.config.app_key,
        session_key,
        sandbox.config.password,
    ):
        assert secret not in text
    assert "PENDING_NEWCREDS" in text
    assert "GET /place_card_on_single_site_jobs/" in text


async def test_serve_runs_inside_an_existing_event_loop(tmp_path):
    port = _free_port()
    ca_file = tmp_path / "ca.pem"
    task = asyncio.create_task(serve(sandbox_config(), "127.0.0.1", port, ca_file))
    try:
        for _ in range(200):
            if ca_file.exists():
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=str(ca_file))
        ) as http:
            for _ in range(200):
                try:
                    response = await http.get(f"https://127.0.0.1:{port}/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert response.status_code == 200


def test_runsandbox_command_serves_with_the_portal_settings(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        CARDSAVR_APP_NAME="command_app",
        CARDSAVR_CA_FILE=str(tmp_path / "ca.pem"),
        DJANGO_SETTINGS_MODULE="cardsavr_portal.settings",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runsandbox",
            "--port",
            str(port),
            "--speed",
            "20",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            if (tmp_path / "ca.pem").exists():
                try:
                    text = httpx.get(
                        f"https://127.0.0.1:{port}/",
                        verify=ssl.create_default_context(
                            cafile=str(tmp_path / "ca.pem")
                        ),
                    ).text
                    break
                except httpx.TransportError:
                    pass
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)

    assert "command_app" in text
    assert "speed 20x" in output


def test_ids_can_start_past_ones_a_caller_already_holds():
    engine = Engine(sandbox_config(clock=ManualClock()))
    engine.start_ids_after(cardholder=90_000, card=None)

    holder, _ = engine.upsert_cardholder({})

    assert holder["id"] == 90_001
