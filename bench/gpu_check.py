"""Latency, throughput and op placement of the exported detector on a GPU machine (a few minutes).

    python -m bench.gpu_check                        # default config, 20 classes, random weights
    python -m bench.gpu_check --model models/dnet    # the newest version of an exported model
    python -m bench.gpu_check --require_gpu          # exit 2 when TensorFlow sees no GPU

1. serving_default on one ~500x375 JPEG at batch 1: p50/p95 over --repeats;
2. images/s at batch --batch (16), the same JPEG repeated;
3. where each op ran: the SavedModel loaded with the TF1 session loader (the path TF Serving's C++
   loader takes, so the placement is the one TF Serving makes), one traced run (RunMetadata with
   FULL_TRACE), node executions and their time summed per device, and the op types that ran on
   the CPU with their time: on a GPU machine those should be the decoding and string ops only
   (``dnet_tf.export.device_kernels.CPU_ONLY_OPS``; tests/test_device_kernels.py checks the kernel
   registry).

Without a GPU it still runs (every op on the CPU), which checks the script itself. Prints tables and
writes bench/results/gpu_check.json with the machine and the GPUs TensorFlow saw.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402
from bench.inference_latency import random_module, test_jpeg, timed  # noqa: E402


def newest_version(model_dir: pathlib.Path) -> pathlib.Path:
    """``model_dir`` itself when it holds saved_model.pb, else its largest integer version."""
    if (model_dir / "saved_model.pb").exists():
        return model_dir
    versions = sorted(
        (p for p in model_dir.glob("*") if p.name.isdigit() and (p / "saved_model.pb").exists()),
        key=lambda p: int(p.name),
    )
    if not versions:
        raise FileNotFoundError(f"no SavedModel version under {model_dir}")
    return versions[-1]


def op_type(node_stats) -> str:
    """The op type of a NodeExecStats: its timeline label reads 'name = OpType(inputs)'."""
    label = node_stats.timeline_label
    if " = " in label:
        return label.split(" = ", 1)[1].split("(", 1)[0].strip()
    return node_stats.node_name.split(":", 1)[0]


def placement(path: pathlib.Path, jpeg: bytes) -> dict:
    """One traced serving_default run through the TF1 session loader: time and ops per device.

    Returns:
      dict: devices {device: {"nodes": int, "ms": float}}, cpu_ops [(op type, count, ms)] sorted
      by time (the op types executed on a CPU device).
    """
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        sig = meta.signature_def["serving_default"]
        feed = {sig.inputs["images"].name: [jpeg]}
        fetch = {k: v.name for k, v in sig.outputs.items()}
        sess.run(fetch, feed)  # warm-up: kernels, autotuning
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        metadata = tf.compat.v1.RunMetadata()
        sess.run(fetch, feed, options=options, run_metadata=metadata)
    devices = {}
    cpu_ops = collections.defaultdict(lambda: [0, 0.0])
    for dev in metadata.step_stats.dev_stats:
        ms = sum(n.all_end_rel_micros for n in dev.node_stats) / 1e3
        devices[dev.device] = {"nodes": len(dev.node_stats), "ms": ms}
        if "/device:CPU" in dev.device or "cpu" in dev.device.lower():
            for n in dev.node_stats:
                entry = cpu_ops[op_type(n)]
                entry[0] += 1
                entry[1] += n.all_end_rel_micros / 1e3
    ranked = sorted(((k, c, t) for k, (c, t) in cpu_ops.items()), key=lambda r: -r[2])
    return {"devices": devices, "cpu_ops": ranked}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="SavedModel dir or model base dir (newest)")
    p.add_argument("--config", default="paper", help="named config when --model is not given")
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--require_gpu", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    print(f"GPUs TensorFlow sees: {gpus or 'none'}")
    if not gpus and args.require_gpu:
        print("no GPU visible (--require_gpu): stopping")
        return 2
    jpeg = test_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            path, label = newest_version(pathlib.Path(args.model)), f"export {args.model}"
        else:
            from dnet_tf.export.saved_model import export_module

            t = time.perf_counter()
            module = random_module(args.config, args.num_classes)
            path = export_module(module, tmp, args.config)
            label = f"{args.config}, {args.num_classes} classes, random weights"
            print(f"exported {label} in {time.perf_counter() - t:.0f} s")
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        one = tf.constant([jpeg])
        lat = timed(lambda: fn(images=one), args.repeats)
        many = tf.constant([jpeg] * args.batch)
        lat_b = timed(lambda: fn(images=many), max(3, args.repeats // 5))
        placed = placement(path, jpeg)

    rows = [
        ["batch 1 p50 ms", float(np.median(lat)) * 1e3],
        ["batch 1 p95 ms", float(np.percentile(lat, 95)) * 1e3],
        [f"batch {args.batch} images/s", args.batch / float(np.median(lat_b))],
    ]
    print(f"{label}; one 500x375 JPEG")
    print(format_table(["measure", "value"], rows))
    print("one traced run (TF1 session loader), node executions per device:")
    print(
        format_table(
            ["device", "nodes", "summed node ms"],
            [[d, v["nodes"], v["ms"]] for d, v in placed["devices"].items()],
        )
    )
    print("op types that ran on a CPU device, by time:")
    print(format_table(["op", "executions", "ms"], [list(r) for r in placed["cpu_ops"][:25]]))
    out = write_json(
        "gpu_check",
        {
            "model": label,
            "gpus": gpus,
            "batch1_p50_s": float(np.median(lat)),
            "batch1_p95_s": float(np.percentile(lat, 95)),
            "batch": args.batch,
            "batch_images_per_s": args.batch / float(np.median(lat_b)),
            "devices": placed["devices"],
            "cpu_ops": placed["cpu_ops"],
        },
    )
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
