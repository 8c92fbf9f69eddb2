"""`make bench-smoke` as part of the test suite: every benchmark runs at a small
size and reports every figure it owes (its numbers are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import BENCHMARKS, REQUIRED

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-smoke")
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads((out / "results.json").read_text())
    results["_stderr"] = run.stderr[-3000:]
    results["_table"] = (out / "results.md").read_text()
    return results


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_and_reports_every_figure(smoke_results, name):
    failure = smoke_results.get("failures", {}).get(name)
    assert failure is None, failure
    for key in REQUIRED[name]:
        assert isinstance(smoke_results.get(key), int | float), key


def test_smoke_results_record_the_machine(smoke_results):
    machine = smoke_results["machine"]
    assert machine["cores"] >= 1
    assert machine["versions"]["Django"]


def test_smoke_table_lists_product_and_naive(smoke_results):
    assert "| figure" in smoke_results["_table"]
    assert "naive/product" in smoke_results["_table"]
