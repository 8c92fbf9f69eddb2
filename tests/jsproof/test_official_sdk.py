"""The official Strivve JavaScript SDK completes a TFA job against the sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.jsproof


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is required in CI for the JavaScript SDK proof")
        pytest.skip("node is not installed")
    return node


def _install_sdk() -> None:
    if (HERE / "node_modules" / "@strivve" / "strivve-sdk").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to install the pinned SDK"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        check=True,
        capture_output=True,
        timeout=600,
    )


def test_official_sdk_places_card_through_tfa_and_sees_billable_success(sandbox):
    node = _node_or_skip()
    _install_sdk()
    config = sandbox.config
    env = dict(
        os.environ,
        NODE_EXTRA_CA_CERTS=sandbox.ca_file,
        SANDBOX_URL=sandbox.url,
        SANDBOX_APP_NAME=config.app_name,
        SANDBOX_APP_KEY=config.app_key,
        SANDBOX_USERNAME=config.username,
        SANDBOX_PASSWORD=config.password,
    )
    completed = subprocess.run(
        [node, "prove.js"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    steps = {
        line["step"]: line for line in map(json.loads, completed.stdout.splitlines())
    }

    assert steps["login"]["signed"] is True
    assert steps["merchant_sites"]["signed"] is True
    assert steps["merchant_sites"]["paging"]["total_results"] == 1
    assert steps["cardholder"]["status"] == 201
    assert steps["card"]["has_pan"] is False
    assert steps["card"]["has_cvv"] is False
    assert steps["card"]["last_4"] == "1111"
    assert steps["job"]["plural"] is True
    assert steps["credential_request"]["job_status"] == "PENDING_TFA"
    assert steps["credential_request"]["key_names"] == ["tfa"]
    assert steps["answer"]["status"] == 200
    assert steps["result"]["result"] == {
        "status": "SUCCESSFUL",
        "termination_type": "BILLABLE",
    }
