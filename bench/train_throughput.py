"""Training throughput (samples/s) per backbone and head: the localizer and classifier steps.

  python bench/train_throughput.py [--width 0.25] [--batch_size 32] [--steps 8]
      [--backbones paper,mobilenet_v3_small] [--heads dense,conv] [--data data/synthetic]

Times the compiled train step (forward, weighted mask loss or cross-entropy, backward, AdaGrad
update) on one fixed in-memory batch, so the number is the networks' cost alone; with --data it
also times the localizer step fed by the real input pipeline (decode, crop, Eq. (1) targets),
which shares the same CPU. The first two steps (tracing, warm-up) are not timed. Prints a table
and writes bench/results/train_throughput.json. Numbers on a shared machine vary with its load;
the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _common():
    """bench/common.py helpers when present (machine info, JSON writing)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import common  # noqa: F401

        return common
    except ImportError:
        return None
    finally:
        sys.path.pop(0)


def time_steps(step, iterator, steps: int, batch: int) -> float:
    """Samples per second of ``steps`` calls of step(iterator) after two untimed ones."""
    for _ in range(2):
        float(step(iterator)[0])
    t0 = time.perf_counter()
    for _ in range(steps):
        float(step(iterator)[0])  # float() waits for the step to finish
    return steps * batch / (time.perf_counter() - t0)


def bench_one(backbone: str, head: str, width: float, batch: int, steps: int, data: str | None,
              input_size: int, mask_size: int) -> dict:
    import tensorflow as tf

    from dnet_tf.config import DetectorConfig, ModelConfig
    from dnet_tf.models import build_classifier, build_localizer
    from dnet_tf.training.recipe import (classifier_example_loss, localizer_example_loss,
                                         make_optimizer, make_train_step)

    cfg = DetectorConfig(model=ModelConfig(backbone=backbone, head=head, width=width,
                                           input_size=input_size, mask_size=mask_size))
    s, d, c = cfg.model.input_size, cfg.model.mask_size, cfg.model.num_classes
    strategy = tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(0)
    row = {"backbone": backbone, "head": head, "width": width, "batch_size": batch,
           "input_size": s, "mask_size": d}

    images = tf.random.uniform((batch, s, s, 3), 0.0, 255.0, seed=1)
    masks = tf.cast(tf.random.uniform((batch, d, d, 5, c), seed=2) > 0.8, tf.float32)
    labels = tf.random.uniform((batch,), 0, c + 1, dtype=tf.int32, seed=3)

    localizer = build_localizer(cfg.model)
    row["localizer_params"] = int(localizer.count_params())
    step = make_train_step(strategy, localizer, make_optimizer(cfg.train),
                           localizer_example_loss(cfg.loss), batch)
    fixed = iter(tf.data.Dataset.from_tensors((images, masks)).repeat())
    row["localizer_samples_per_s"] = round(time_steps(step, fixed, steps, batch), 2)
    if data:
        from dnet_tf.data.pipeline import load_class_names, localizer_dataset

        names = load_class_names(data, "train")
        if len(names) == c:
            ds = localizer_dataset(data, "train", names, cfg, batch, seed=0)
            row["localizer_pipeline_samples_per_s"] = round(time_steps(step, iter(ds), steps, batch), 2)
    t0 = time.perf_counter()
    for _ in range(3):
        localizer(images, training=False)
    row["localizer_inference_ms_per_image"] = round((time.perf_counter() - t0) / 3 / batch * 1e3, 2)
    del localizer, step

    classifier = build_classifier(cfg.model)
    row["classifier_params"] = int(classifier.count_params())
    step = make_train_step(strategy, classifier, make_optimizer(cfg.train), classifier_example_loss, batch)
    fixed = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    row["classifier_samples_per_s"] = round(time_steps(step, fixed, steps, batch), 2)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="paper,mobilenet_v3_small")
    p.add_argument("--heads", default="dense,conv")
    p.add_argument("--width", type=float, default=0.25, help="ModelConfig.width for every backbone")
    p.add_argument("--input_size", type=int, default=225)
    p.add_argument("--mask_size", type=int, default=24)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    p.add_argument("--data", default=None, help="VOC folder: also time the localizer on the real pipeline")
    p.add_argument("--out", default=str(RESULTS / "train_throughput.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    load_before = os.getloadavg()
    rows = []
    for backbone in args.backbones.split(","):
        for head in args.heads.split(","):
            row = bench_one(backbone, head, args.width, args.batch_size, args.steps, args.data,
                            args.input_size, args.mask_size)
            rows.append(row)
            print(f"  {backbone:>20} {head:>5}: localizer {row['localizer_samples_per_s']:8.1f} "
                  f"samples/s, classifier {row['classifier_samples_per_s']:8.1f} samples/s", flush=True)
    result = {
        "benchmark": "train_throughput",
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
    }
    common = _common()
    if common is not None and hasattr(common, "machine_info"):
        result["machine"].update(common.machine_info())

    cols = ["backbone", "head", "localizer_params", "localizer_samples_per_s",
            "localizer_pipeline_samples_per_s", "classifier_samples_per_s",
            "localizer_inference_ms_per_image"]
    widths = [max(len(c), 10) for c in cols]
    print(" | ".join(c.rjust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row.get(c, "-")).rjust(w) for c, w in zip(cols, widths)))

    out = pathlib.Path(args.out)
    if common is not None and hasattr(common, "write_json"):
        common.write_json(out, result)
    else:
        import json

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
