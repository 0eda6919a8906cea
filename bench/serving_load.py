"""Load run against the local model server, with and without server-side batching.

    python bench/serving_load.py                       # 8 clients x 30 s per mode
    python bench/serving_load.py --duration 5          # shorter
    python bench/serving_load.py --model_base_path models/dnet --transport rest

For each mode the server runs in its own process (``python -m dnet_tf.serving.server_cli``), so
the clients (threads of this process) do not share its interpreter. Each client sends one image
per request, back to back, for the duration. Reported per mode: requests/s, p50/p99 latency,
error count, and the mean rows per batch the server formed (from its Prometheus metrics).
A table goes to stdout and everything to JSON (default bench/results/serving_load.json).

Model: --model_base_path, else the exported detector at models/dnet when it holds a version,
else the
tests' small contract-conforming model (dnet_tf.serving.toy_model) in a temporary directory —
the JSON records which. Images: --images, else up to 16 JPEGs of data/synthetic, else generated.
Timings depend on the machine; the JSON records CPU count and load average next to them.
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
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dnet_tf.serving.client import DetectorClient, RestDetectorClient, RetryPolicy  # noqa: E402
from dnet_tf.serving.server_cli import free_port, server_command  # noqa: E402
from dnet_tf.serving.versions import scan_versions  # noqa: E402


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


def pick_images(paths, count: int = 16) -> list[bytes]:
    if paths:
        return [pathlib.Path(p).read_bytes() for p in paths]
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


class ServerProcess:
    """The local server in a subprocess, ready when it prints its ready line."""

    def __init__(self, base_path: pathlib.Path, name: str, batching_file: str | None):
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = server_command(
            base_path,
            name,
            self.grpc_port,
            self.rest_port,
            "--file_system_poll_wait_seconds=0",
            f"--monitoring_config_file={REPO / 'serving' / 'monitoring.config'}",
            "--log_level=WARNING",
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model_base_path", help="model base path (default: models/dnet, else the toy model)"
    )
    p.add_argument("--model_name", default="dnet")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load per mode (default 30)"
    )
    p.add_argument(
        "--warmup_requests", type=int, default=4, help="requests before timing (default 4)"
    )
    p.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--modes", choices=("both", "unbatched", "batched"), default="both")
    p.add_argument(
        "--batching_parameters_file", default=str(REPO / "serving" / "batching_parameters.txt")
    )
    p.add_argument(
        "--images", nargs="*", help="image files to send (default: data/synthetic or generated)"
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, help="deadline per request, s (default 120)"
    )
    p.add_argument(
        "--json", dest="json_path", default=str(REPO / "bench" / "results" / "serving_load.json")
    )
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0:
        p.error("--clients must be >= 1 and --duration > 0")

    with tempfile.TemporaryDirectory() as tmp:
        base, model_source = pick_model(args.model_base_path, args.model_name, pathlib.Path(tmp))
        images = pick_images(args.images)
        modes = ["unbatched", "batched"] if args.modes == "both" else [args.modes]
        rows = []
        for mode in modes:
            server = ServerProcess(
                base, args.model_name, args.batching_parameters_file if mode == "batched" else None
            )
            try:
                retry = RetryPolicy(max_attempts=1)  # errors are measured, not hidden by retries
                if args.transport == "grpc":

                    def make_client(server=server, retry=retry):
                        return DetectorClient(
                            f"127.0.0.1:{server.grpc_port}",
                            args.model_name,
                            timeout_s=args.timeout,
                            retry=retry,
                        )
                else:

                    def make_client(server=server, retry=retry):
                        return RestDetectorClient(
                            f"http://127.0.0.1:{server.rest_port}",
                            args.model_name,
                            timeout_s=args.timeout,
                            retry=retry,
                        )

                warm = make_client()
                for i in range(args.warmup_requests):
                    warm.predict_encoded([images[i % len(images)]])
                warm.close()
                before = server.batch_stats() if mode == "batched" else {}
                result = run_load(make_client, images, args.clients, args.duration)
                if mode == "batched":
                    after = server.batch_stats()
                    n = after["batches"] - before["batches"]
                    rows_total = (after["mean_batch_rows"] or 0) * after["batches"] - (
                        before["mean_batch_rows"] or 0
                    ) * before["batches"]
                    result["batches"] = n
                    result["mean_batch_rows"] = rows_total / n if n else None
            finally:
                exit_code = server.stop()
            result.update(mode=mode, server_exit_code=exit_code)
            rows.append(result)

    report = {
        "benchmark": "serving_load",
        "transport": args.transport,
        "clients": args.clients,
        "duration_s": args.duration,
        "model_base_path": str(base),
        "model_source": model_source,
        "images": len(images),
        "batching_parameters_file": args.batching_parameters_file,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "results": rows,
    }
    header = (
        f"{'mode':<10} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7} {'requests':>9} "
        f"{'rows/batch':>11}"
    )
    print(
        f"serving load: {args.clients} {args.transport} clients x {args.duration:g} s, "
        f"model: {model_source} ({base})"
    )
    print(header)
    for r in rows:
        rb = r.get("mean_batch_rows")
        print(
            f"{r['mode']:<10} {r['requests_per_s']:>8.2f} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
            f"{r['errors']:>7d} {r['requests']:>9d} {f'{rb:.2f}' if rb else '-':>11}"
        )
    out = pathlib.Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
