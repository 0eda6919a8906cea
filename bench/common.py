"""Helpers shared by the benchmarks: the machine, median timing, JSON results, a printed table.

Benchmarks print numbers and write them; they never assert on timings.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Sequence

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on: CPU model and count, load, library versions."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else None
    except OSError:
        info["cpu_model"] = None
    try:
        import tensorflow as tf  # noqa: PLC0415

        info["tensorflow"] = tf.__version__
        info["tf_threads"] = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    except ImportError:
        pass
    return info


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict:
    """Runs ``fn`` warmup + repeats times; wall and process-CPU seconds per call.

    Returns:
      dict with wall_median_s, wall_min_s, wall_p90_s, cpu_median_s (CPU time of all threads of
      this process: on a machine shared with other jobs, wall time includes waiting for a core,
      CPU time does not), repeats.
    """
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    walls.sort()
    return {
        "wall_median_s": statistics.median(walls),
        "wall_min_s": walls[0],
        "wall_p90_s": walls[min(len(walls) - 1, int(round(0.9 * (len(walls) - 1))))],
        "cpu_median_s": statistics.median(cpus),
        "repeats": repeats,
    }


def write_json(name: str, payload: dict, directory: pathlib.Path | None = None) -> pathlib.Path:
    """Writes payload (with the machine added) to <directory>/<name>.json; returns the path."""
    directory = pathlib.Path(directory) if directory else RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    body = {"machine": machine(), **payload}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned; floats with 4 significant digits."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "  ".join(h.rjust(w) for h, w in zip(headers, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in text]
    return "\n".join(lines)
