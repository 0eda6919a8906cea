"""Where the time of one image goes: a TF profiler trace of serving_default, the top ops by time.

    python -m bench.profile_graph                      # models/dnet when exported, else random
    python -m bench.profile_graph --model models/dnet  # an exported model (newest version)
    python -m bench.profile_graph --config paper --num_classes 20   # random weights

The SavedModel is loaded with tf.saved_model.load, warmed up, and --runs calls of
serving_default on one JPEG (the first test image of data/synthetic when present, else the
benchmarks' 500x375 JPEG) are traced with ``tf.profiler.experimental``. The trace's host plane
holds one event per op execution, named "<node name>:<op type>"; the table sums them per op type
and per stage (the node name's scope: localizer, classifier, box search, NMS, ...), per image.
Container ops (function calls, loops, conditionals) are left out: their time is their
children's. Writes bench/results/profile_graph.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402
from bench.gpu_check import newest_version  # noqa: E402
from bench.inference_latency import random_module, test_jpeg  # noqa: E402

# Ops whose events contain their children's (function calls, control flow).
CONTAINERS = {
    "StatefulPartitionedCall",
    "PartitionedCall",
    "While",
    "StatelessWhile",
    "If",
    "StatelessIf",
    "Case",
    "StatelessCase",
}

# Stage of an op, from words in its node name (first match wins).
STAGES = (
    ("decode", ("decode", "Decode", "ragged", "Ragged", "image_format", "declared_size")),
    ("localizer", ("localizer",)),
    ("classifier", ("classifier",)),
    ("NMS", ("non_max", "NonMax", "class_nms", "demote")),
    ("crop", ("crop_and_resize", "CropAndResize")),
    ("merge (paste_max)", ("paste_max", "TensorScatterMax")),
    ("box search", ("search", "integral", "eq3", "shape_block")),
)


def stage_of(name: str) -> str:
    for stage, words in STAGES:
        if any(w in name for w in words):
            return stage
    return "other"


def first_test_jpeg() -> tuple[bytes, str]:
    data = REPO / "data" / "synthetic"
    test = data / "ImageSets" / "Main" / "test.txt"
    if test.exists():
        ids = test.read_text().split()
        if ids:
            path = data / "JPEGImages" / f"{ids[0]}.jpg"
            return path.read_bytes(), str(path.relative_to(REPO))
    return test_jpeg(), "500x375 benchmark JPEG"


def trace_ops(fn, jpeg: bytes, runs: int, logdir: str) -> list[tuple[str, str, float]]:
    """(node name, op type, microseconds) of every op execution of ``runs`` traced calls."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    images = tf.constant([jpeg])
    for _ in range(2):
        fn(images=images)  # warm-up
    tf.profiler.experimental.start(logdir)
    for _ in range(runs):
        fn(images=images)
    tf.profiler.experimental.stop()
    events = []
    for path in pathlib.Path(logdir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace.FromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            meta = {k: v.name for k, v in plane.event_metadata.items()}
            stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
            for line in plane.lines:
                for ev in line.events:
                    name = meta.get(ev.metadata_id, "")
                    if name == "ExecutorState::ProcessAsync::Start":
                        # Asynchronous kernels (CropAndResize on the CPU) carry the node name
                        # and op type as stats referring to names.
                        stats = {
                            stat_names.get(st.metadata_id): stat_names.get(st.ref_value, "")
                            for st in ev.stats
                        }
                        name = f"{stats.get('name', '')}:{stats.get('kernel_type', '')}"
                    elif "::" in name or ":" not in name:
                        continue  # executor bookkeeping around the op events
                    node, op = name.rsplit(":", 1)
                    if op in CONTAINERS or not op or " " in op:
                        continue
                    events.append((node, op, ev.duration_ps / 1e6))
    return events


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="SavedModel dir or model base dir (newest)")
    p.add_argument("--config", default=None, help="named config with random weights instead")
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    jpeg, image_label = first_test_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        default_model = REPO / "models" / "dnet"
        if args.config is None and (args.model or default_model.exists()):
            path = newest_version(pathlib.Path(args.model or default_model))
            label = f"export {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
        else:
            from dnet_tf.export.saved_model import export_module

            name = args.config or "paper"
            path = export_module(random_module(name, args.num_classes), tmp, name)
            label = f"{name}, {args.num_classes} classes, random weights"
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        events = trace_ops(fn, jpeg, args.runs, os.path.join(tmp, "trace"))

    per_op = collections.defaultdict(lambda: [0, 0.0])
    per_stage = collections.defaultdict(float)
    for node, op, us in events:
        per_op[op][0] += 1
        per_op[op][1] += us
        per_stage[stage_of(node + ":" + op)] += us
    total = sum(us for _, _, us in events) or 1.0
    runs = args.runs
    op_rows = sorted(per_op.items(), key=lambda kv: -kv[1][1])[: args.top]
    print(f"{label}; {image_label}; {runs} traced calls; summed op time per image (2 threads run")
    print("ops in parallel, so the sum exceeds the wall time)")
    print(
        format_table(
            ["op type", "executions / image", "ms / image", "share"],
            [
                [op, c / runs, us / runs / 1e3, f"{100 * us / total:.1f}%"]
                for op, (c, us) in op_rows
            ],
        )
    )
    stage_rows = sorted(per_stage.items(), key=lambda kv: -kv[1])
    print(
        format_table(
            ["stage (by node name)", "ms / image", "share"],
            [[s, us / runs / 1e3, f"{100 * us / total:.1f}%"] for s, us in stage_rows],
        )
    )
    out = write_json(
        "profile_graph",
        {
            "model": label,
            "image": image_label,
            "runs": runs,
            "ops_ms_per_image": {op: us / runs / 1e3 for op, (_, us) in per_op.items()},
            "stages_ms_per_image": {s: us / runs / 1e3 for s, us in per_stage.items()},
        },
    )
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
