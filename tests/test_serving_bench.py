"""bench/serving_load.py: end to end, briefly (every mode runs, nothing fails, the JSON is
complete; slow: two server processes, no timing is asserted), and its summary over rounds."""

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
            "--rounds",
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
    assert [r["mode"] for r in report["results"]] == ["direct", "unbatched", "batched"]
    assert len(report["per_round"]) == 6  # 3 modes x 2 rounds
    for r in report["per_round"]:
        assert r["errors"] == 0 and r["requests"] > 0
        assert r["p50_ms"] <= r["p99_ms"]
        assert r["requests_per_s"] == pytest.approx(r["requests"] / r["wall_s"])
    by_mode = {r["mode"]: r for r in report["results"]}
    assert by_mode["direct"]["ratio_to_peer"] == 1.0
    for mode in ("unbatched", "batched"):
        assert by_mode[mode]["server_exit_code"] == 0 and by_mode[mode]["rounds"] == 2
        assert by_mode[mode]["ratio_to_peer"] > 0
    assert 1 <= by_mode["batched"]["mean_batch_rows"] <= 2  # 2 clients: at most 2 rows
    assert "req/s" in proc.stdout and "x direct" in proc.stdout


def _run(rps, p50, p99, requests, batches=None, rows=None):
    out = {"requests_per_s": rps, "p50_ms": p50, "p99_ms": p99, "requests": requests, "errors": 0}
    if batches is not None:
        out.update(batches=batches, mean_batch_rows=rows)
    return out


def test_median_over_rounds_pairs_each_round_with_the_peer():
    from bench.serving_load import median_over_rounds

    rounds = [
        {"direct": _run(2.0, 100, 300, 20), "batched": _run(3.0, 90, 200, 30, 10, 3.0)},
        {"direct": _run(4.0, 300, 500, 40), "batched": _run(4.0, 80, 100, 40, 5, 8.0)},
        {"direct": _run(1.0, 200, 400, 10), "batched": _run(2.5, 70, 900, 25, 0, None)},
    ]
    got = median_over_rounds(rounds, ["direct", "unbatched", "batched"])
    assert list(got) == ["direct", "batched"]  # a mode in no round is left out
    d, b = got["direct"], got["batched"]
    assert (d["requests_per_s"], d["p50_ms"], d["p99_ms"], d["requests"]) == (2.0, 200, 400, 70)
    assert d["ratio_to_peer"] == 1.0 and d["mean_batch_rows"] is None
    # per-round ratios 1.5, 1.0, 2.5 -> median 1.5; the ratio of the medians would be 3.0 / 2.0
    assert b["ratio_to_peer"] == 1.5 and b["requests_per_s"] == 3.0
    assert (b["p50_ms"], b["p99_ms"], b["requests"], b["rounds"]) == (80, 200, 95, 3)
    # rows over batches of all rounds: (10 x 3 + 5 x 8) / 15
    assert b["mean_batch_rows"] == pytest.approx(70 / 15)


def test_median_over_rounds_without_the_peer_has_no_ratio():
    from bench.serving_load import median_over_rounds

    got = median_over_rounds([{"unbatched": _run(1.0, 10, 20, 5)}], ["unbatched"])
    assert got["unbatched"]["ratio_to_peer"] is None


def test_round_orders_rotate_and_batched_modes_name_each_file():
    from bench.serving_load import batched_modes, round_orders

    assert round_orders(["a", "b", "c"], 4) == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert batched_modes(["x/serving.txt"]) == {"batched": "x/serving.txt"}
    assert batched_modes(["x/b8.txt", "y/b4.txt"]) == {
        "batched:b8": "x/b8.txt",
        "batched:b4": "y/b4.txt",
    }
    with pytest.raises(SystemExit, match="must differ"):
        batched_modes(["x/b8.txt", "y/b8.txt"])
