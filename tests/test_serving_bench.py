"""bench/serving_load.py end to end, briefly: both modes run, nothing fails, the JSON is complete.
Slow (two server processes); no timing is asserted."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serving_load_short_run(tmp_path):
    out = tmp_path / "serving_load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "serving_load.py"),
            "--duration",
            "2",
            "--clients",
            "2",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert [r["mode"] for r in report["results"]] == ["unbatched", "batched"]
    for r in report["results"]:
        assert r["errors"] == 0 and r["requests"] > 0 and r["server_exit_code"] == 0
        assert r["p50_ms"] <= r["p99_ms"]
        assert r["requests_per_s"] == pytest.approx(r["requests"] / r["wall_s"])
    batched = report["results"][1]
    assert (
        batched["batches"] >= 1 and 1 <= batched["mean_batch_rows"] <= 8
    )  # max_batch_size in serving/
    assert "req/s" in proc.stdout and "p99 ms" in proc.stdout
