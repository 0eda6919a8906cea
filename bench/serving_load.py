"""Load run against the local model server, with and without server-side batching, beside
the same SavedModel called directly in this process.

    python bench/serving_load.py                       # 3 rounds x 10 s per mode, 8 clients
    python bench/serving_load.py --rounds 5 --duration 5
    python bench/serving_load.py --model_base_path models/dnet --transport rest
    python bench/serving_load.py --voc_dir data/synthetic --split test

Modes:
  direct     the peer: the newest version under the model base path loaded in this process with
             ``tf.saved_model.load`` and its ``serving_default`` signature called from the same
             number of threads with the same string tensor a client sends (no server, no RPC);
  unbatched  the local server (``python -m dnet_tf.serving.server_cli``) in its own process;
  batched    the same with ``--enable_batching`` and ``--batching_parameters_file``; given
             several files, one batched mode per file, named ``batched:<file stem>`` (to compare
             settings in the same rounds).
Each client (a thread of this process) sends one image per request, back to back. The server
processes start before the first round and stay up; the modes then take turns in short rounds
(the order rotates each round), so load from other jobs on the machine falls on every mode
alike. Per mode: the median over rounds of requests/s, p50 and p99 latency, and of the ratio
requests/s of the mode / requests/s of direct in the same round; errors and requests summed; for
batched the mean rows per batch the server formed (from its Prometheus metrics). A table goes to
stdout and everything, rounds included, to JSON (default bench/results/serving_load.json).

Model: --model_base_path, else the exported detector at models/dnet when it holds a version,
else the tests' small contract-conforming model (dnet_tf.serving.toy_model) in a temporary
directory; the JSON records which. Images: --images, else the ``--split`` ids of the VOC-layout
--voc_dir, else up to 16 JPEGs of data/synthetic, else generated. Timings depend on the machine;
the JSON records CPU count and load average before and after the run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dnet_tf.serving.client import (  # noqa: E402
    IMAGE_INPUT,
    DetectorClient,
    RestDetectorClient,
    RetryPolicy,
)
from dnet_tf.serving.server_cli import free_port, server_command  # noqa: E402
from dnet_tf.serving.versions import scan_versions  # noqa: E402

MODES = ("direct", "unbatched", "batched")
PEER = "direct"  # the mode every ratio is taken against


def percentile(values, q: float) -> float:
    """q-th percentile (0..100) by linear interpolation, NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def pick_model(arg: str | None, name: str, tmp: pathlib.Path) -> tuple[pathlib.Path, str]:
    if arg:
        base = pathlib.Path(arg)
        if not scan_versions(base):
            raise SystemExit(f"no <version>/saved_model.pb under {base}")
        return base, "given"
    exported = REPO / "models" / name
    if scan_versions(exported):
        return exported, "the exported detector"
    from dnet_tf.serving.toy_model import export_toy_model

    return export_toy_model(tmp, name, 1).parent, "toy model (dnet_tf.serving.toy_model)"


def pick_images(paths, count: int = 16, voc_dir=None, split: str = "test") -> list[bytes]:
    if paths:
        return [pathlib.Path(p).read_bytes() for p in paths]
    if voc_dir:
        root = pathlib.Path(voc_dir)
        ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        if not ids:
            raise SystemExit(f"{root}/ImageSets/Main/{split}.txt lists no image ids")
        return [(root / "JPEGImages" / f"{i}.jpg").read_bytes() for i in ids]
    synthetic = sorted((REPO / "data" / "synthetic" / "JPEGImages").glob("*.jpg"))[:count]
    if synthetic:
        return [p.read_bytes() for p in synthetic]
    from PIL import Image

    rng = np.random.RandomState(0)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.randint(0, 256, (240, 320, 3), dtype=np.uint8)).save(
            buf, format="JPEG", quality=90
        )
        out.append(buf.getvalue())
    return out


class DirectModel:
    """The peer of the server: the newest version under ``base_path`` loaded in this process and
    its ``serving_default`` signature called with the tensor a client sends (DT_STRING [N] of
    encoded images). One instance serves every thread: a concrete function is thread-safe."""

    def __init__(self, base_path: pathlib.Path):
        import tensorflow as tf

        self._tf = tf
        version, path = max(scan_versions(base_path).items())
        self.version = int(version)
        self._fn = tf.saved_model.load(str(path), tags=["serve"]).signatures["serving_default"]

    def predict_encoded(self, encoded) -> tuple[dict[str, np.ndarray], int]:
        outputs = self._fn(**{IMAGE_INPUT: self._tf.constant(list(encoded), self._tf.string)})
        return {k: v.numpy() for k, v in outputs.items()}, self.version

    def close(self) -> None:
        pass


class ServerProcess:
    """The local server in a subprocess, ready when it prints its ready line."""

    def __init__(
        self,
        base_path: pathlib.Path,
        name: str,
        batching_file: str | None,
        extra_flags: list[str] = (),
    ):
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = server_command(
            base_path,
            name,
            self.grpc_port,
            self.rest_port,
            "--file_system_poll_wait_seconds=0",
            f"--monitoring_config_file={REPO / 'serving' / 'monitoring.config'}",
            "--log_level=WARNING",
            *extra_flags,
        )
        if batching_file:
            cmd += ["--enable_batching", "--batching_parameters_file", batching_file]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(180):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _pump(self):
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("dnet-serve ready"):
                self._ready.set()

    def batch_stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics", timeout=10
        ) as resp:
            text = resp.read().decode()
        total = sum(
            float(v)
            for v in re.findall(r"^:tensorflow:serving:batch_size_sum\{[^}]*\} (\S+)$", text, re.M)
        )
        count = sum(
            float(v)
            for v in re.findall(
                r"^:tensorflow:serving:batch_size_count\{[^}]*\} (\S+)$", text, re.M
            )
        )
        return {"batches": int(count), "mean_batch_rows": (total / count) if count else None}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def run_load(make_client, images: list[bytes], clients: int, duration: float) -> dict:
    """``clients`` threads send one image per request for ``duration`` seconds."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(k: int):
        client = make_client()
        i = k
        start_gate.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                client.predict_encoded([images[i % len(images)]])
                latencies[k].append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors[k].append(f"{type(e).__name__}: {e}")
            i += clients
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + duration
    t0 = time.monotonic()
    start_gate.wait()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat = [x for per in latencies for x in per]
    errs = [x for per in errors for x in per]
    return {
        "requests": len(lat),
        "errors": len(errs),
        "first_errors": errs[:3],
        "wall_s": wall,
        "requests_per_s": len(lat) / wall if wall > 0 else float("nan"),
        "p50_ms": 1000 * percentile(lat, 50),
        "p99_ms": 1000 * percentile(lat, 99),
        "mean_ms": 1000 * float(np.mean(lat)) if lat else float("nan"),
    }


def median_over_rounds(
    rounds: list[dict[str, dict]], modes: list[str], peer: str = PEER
) -> dict[str, dict]:
    """Per mode, the medians over rounds of one load run per mode and round.

    Args:
      rounds: one dict per round, mode -> ``run_load`` result (requests_per_s, p50_ms, p99_ms,
        requests, errors, optionally mean_batch_rows and batches).
      modes: the modes to summarize, in the order wanted (a mode in no round is left out).
      peer: the mode ratios are taken against; absent from a round = no ratio for that round.
    Returns:
      mode -> {rounds, requests_per_s, p50_ms, p99_ms (medians), requests, errors (sums),
      ratio_to_peer (median over rounds of requests_per_s / the peer's in the same round, None
      without the peer), mean_batch_rows (rows over batches, all rounds; None if not batched)}.
    """
    out = {}
    for mode in modes:
        runs = [r[mode] for r in rounds if mode in r]
        if not runs:
            continue
        ratios = [
            r[mode]["requests_per_s"] / r[peer]["requests_per_s"]
            for r in rounds
            if mode in r and peer in r and r[peer]["requests_per_s"] > 0
        ]
        batches = sum(x.get("batches") or 0 for x in runs)
        batch_rows = sum((x.get("mean_batch_rows") or 0) * (x.get("batches") or 0) for x in runs)
        out[mode] = {
            "rounds": len(runs),
            "requests_per_s": statistics.median(x["requests_per_s"] for x in runs),
            "p50_ms": statistics.median(x["p50_ms"] for x in runs),
            "p99_ms": statistics.median(x["p99_ms"] for x in runs),
            "requests": sum(x["requests"] for x in runs),
            "errors": sum(x["errors"] for x in runs),
            "ratio_to_peer": statistics.median(ratios) if ratios else None,
            "mean_batch_rows": batch_rows / batches if batches else None,
        }
    return out


def round_orders(modes: list[str], rounds: int) -> list[list[str]]:
    """The order of the modes in each round: rotated by one each round, so no mode always runs
    first (after an idle pause) or right after another."""
    return [modes[k % len(modes) :] + modes[: k % len(modes)] for k in range(rounds)]


def _batch_delta(before: dict, after: dict) -> dict:
    n = after["batches"] - before["batches"]
    rows_total = (after["mean_batch_rows"] or 0) * after["batches"] - (
        before["mean_batch_rows"] or 0
    ) * before["batches"]
    return {"batches": n, "mean_batch_rows": rows_total / n if n else None}


def _client_factory(args, server: ServerProcess):
    retry = RetryPolicy(max_attempts=1)  # errors are measured, not hidden by retries
    if args.transport == "grpc":
        return lambda: DetectorClient(
            f"127.0.0.1:{server.grpc_port}", args.model_name, timeout_s=args.timeout, retry=retry
        )
    return lambda: RestDetectorClient(
        f"http://127.0.0.1:{server.rest_port}",
        args.model_name,
        timeout_s=args.timeout,
        retry=retry,
    )


def batched_modes(files: list[str]) -> dict[str, str]:
    """Mode name -> batching parameters file: "batched" for one file, "batched:<file stem>" for
    each of several (a variant per file, for comparing settings in the same rounds)."""
    if len(files) == 1:
        return {"batched": files[0]}
    named = {f"batched:{pathlib.Path(f).stem}": f for f in files}
    if len(named) != len(files):
        raise SystemExit(f"--batching_parameters_file: file names must differ, got {files}")
    return named


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(
            f"--modes: a comma-separated subset of {','.join(MODES)}, got {text!r}"
        )
    return [m for m in MODES if m in modes]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model_base_path", help="model base path (default: models/dnet, else the toy model)"
    )
    p.add_argument("--model_name", default="dnet")
    p.add_argument(
        "--clients", type=int, default=8, help="concurrent clients / threads (default 8)"
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds of load per mode and round (10)"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds over the modes (default 3)")
    p.add_argument(
        "--warmup_requests", type=int, default=4, help="requests per mode before timing (4)"
    )
    p.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    p.add_argument(
        "--modes", type=_modes, default=list(MODES), help=f"subset of {','.join(MODES)} (all)"
    )
    p.add_argument(
        "--batching_parameters_file",
        nargs="+",
        default=[str(REPO / "serving" / "batching_parameters.txt")],
        help="BatchingParameters text proto(s); several = one batched mode per file",
    )
    p.add_argument(
        "--server_flag",
        action="append",
        default=[],
        help="extra server flag for both server modes, e.g. --server_flag=--grpc_max_threads=8",
    )
    p.add_argument("--images", nargs="*", help="image files to send")
    p.add_argument("--voc_dir", help="VOC-layout directory whose --split images are sent")
    p.add_argument("--split", default="test", help="ImageSets/Main split of --voc_dir (test)")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="deadline per request, s (default 120)"
    )
    p.add_argument(
        "--json", dest="json_path", default=str(REPO / "bench" / "results" / "serving_load.json")
    )
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.rounds < 1:
        p.error("--clients and --rounds must be >= 1 and --duration > 0")

    load_before = list(os.getloadavg())
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        base, model_source = pick_model(args.model_base_path, args.model_name, pathlib.Path(tmp))
        images = pick_images(args.images, voc_dir=args.voc_dir, split=args.split)
        batching = batched_modes(args.batching_parameters_file) if "batched" in args.modes else {}
        modes = [m for m in args.modes if m != "batched"] + list(batching)
        servers: dict[str, ServerProcess] = {}
        factories = {}
        exit_codes = {}
        try:
            for mode in modes:
                if mode == "direct":
                    direct = DirectModel(base)
                    factories[mode] = lambda direct=direct: direct
                else:
                    servers[mode] = ServerProcess(
                        base, args.model_name, batching.get(mode), args.server_flag
                    )
                    factories[mode] = _client_factory(args, servers[mode])
            for mode in modes:
                warm = factories[mode]()
                for i in range(args.warmup_requests):
                    warm.predict_encoded([images[i % len(images)]])
                warm.close()
            rounds: list[dict[str, dict]] = []
            for k, order in enumerate(round_orders(modes, args.rounds)):
                results = {}
                for mode in order:
                    server = servers.get(mode)
                    before = server.batch_stats() if mode in batching else None
                    result = run_load(factories[mode], images, args.clients, args.duration)
                    if before is not None:
                        result.update(_batch_delta(before, server.batch_stats()))
                    result.update(round=k, position=order.index(mode))
                    results[mode] = result
                    print(
                        f"round {k + 1}/{args.rounds} {mode:<16} "
                        f"{result['requests_per_s']:7.2f} req/s  p50 {result['p50_ms']:7.1f} ms",
                        flush=True,
                    )
                rounds.append(results)
        finally:
            for mode, server in servers.items():
                exit_codes[mode] = server.stop()
    summary = median_over_rounds(rounds, modes)
    for mode, code in exit_codes.items():
        summary[mode]["server_exit_code"] = code

    report = {
        "benchmark": "serving_load",
        "transport": args.transport,
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "peer": PEER,
        "model_base_path": str(base),
        "model_source": model_source,
        "images": len(images),
        "batching_parameters_files": batching,
        "server_flags": args.server_flag,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()),
        },
        "wall_s": time.monotonic() - t_start,
        "results": [{"mode": m, **v} for m, v in summary.items()],
        "per_round": [{"mode": m, **r} for rnd in rounds for m, r in rnd.items()],
    }
    print(
        f"serving load: {args.clients} {args.transport} clients (direct: threads) x "
        f"{args.duration:g} s x {args.rounds} rounds, medians over rounds; "
        f"model: {model_source} ({base}); {len(images)} images; "
        f"load average {load_before[0]:.1f} -> {report['machine']['load_average_after'][0]:.1f}"
    )
    width = max(10, *(len(m) for m in summary))
    print(
        f"{'mode':<{width}} {'req/s':>8} {'x direct':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7} "
        f"{'requests':>9} {'rows/batch':>11}"
    )
    for mode, r in summary.items():
        rb, ratio = r["mean_batch_rows"], r["ratio_to_peer"]
        print(
            f"{mode:<{width}} {r['requests_per_s']:>8.2f} "
            f"{f'{ratio:.2f}' if ratio is not None else '-':>9} {r['p50_ms']:>9.1f} "
            f"{r['p99_ms']:>9.1f} {r['errors']:>7d} {r['requests']:>9d} "
            f"{f'{rb:.2f}' if rb else '-':>11}"
        )
    out = pathlib.Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["errors"] == 0 for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
