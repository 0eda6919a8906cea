"""Training throughput (samples/s) per backbone and head: the localizer and classifier steps.

  python -m bench.train_throughput [--backbones paper,mobilenet_v3_small] [--widths 0.25,1.0]
      [--heads conv,dense] [--batch_size 16] [--steps 6] [--data data/synthetic]

Times the compiled train step (forward, weighted mask loss or cross-entropy, backward, AdaGrad
update) on one fixed in-memory batch, so the number is the networks' cost alone; with --data it
also times the localizer step fed by the real input pipeline (decode, crop, Eq. (1) targets),
which shares the same CPU. The first two steps (tracing, warm-up) are not timed; the figures are
medians. Prints a table and writes bench/results/train_throughput.json (with the machine and its
load). Wall-time rates on a shared machine vary with its load; CPU-seconds per sample do not.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, time_call, write_json  # noqa: E402


def _rates(timing: dict, batch: int) -> tuple:
    """(samples/s from the median wall time, CPU-seconds per sample from the median CPU time)."""
    return (round(batch / timing["wall_median_s"], 2), round(timing["cpu_median_s"] / batch, 4))


def bench_one(
    backbone: str,
    head: str,
    width: float,
    batch: int,
    steps: int,
    data: str | None,
    input_size: int,
    mask_size: int,
) -> dict:
    import tensorflow as tf

    from dnet_tf.config import DetectorConfig, ModelConfig
    from dnet_tf.models import build_classifier, build_localizer
    from dnet_tf.training.recipe import (
        classifier_example_loss,
        localizer_example_loss,
        make_optimizer,
        make_train_step,
    )

    cfg = DetectorConfig(
        model=ModelConfig(
            backbone=backbone, head=head, width=width, input_size=input_size, mask_size=mask_size
        )
    )
    s, d, c = cfg.model.input_size, cfg.model.mask_size, cfg.model.num_classes
    strategy = tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(0)
    row = {
        "backbone": backbone,
        "head": head,
        "width": width,
        "batch_size": batch,
        "input_size": s,
        "mask_size": d,
    }

    images = tf.random.uniform((batch, s, s, 3), 0.0, 255.0, seed=1)
    masks = tf.cast(tf.random.uniform((batch, d, d, 5, c), seed=2) > 0.8, tf.float32)
    labels = tf.random.uniform((batch,), 0, c + 1, dtype=tf.int32, seed=3)

    localizer = build_localizer(cfg.model)
    row["localizer_params"] = int(localizer.count_params())
    step = make_train_step(
        strategy, localizer, make_optimizer(cfg.train), localizer_example_loss(cfg.loss), batch
    )
    fixed = iter(tf.data.Dataset.from_tensors((images, masks)).repeat())
    # float() waits for the step to finish.
    timing = time_call(lambda: float(step(fixed)[0]), repeats=steps)
    row["localizer_samples_per_s"], row["localizer_cpu_s_per_sample"] = _rates(timing, batch)
    if data:
        from dnet_tf.data.pipeline import load_class_names, localizer_dataset

        names = load_class_names(data, "train")
        if len(names) == c:
            it = iter(localizer_dataset(data, "train", names, cfg, batch, seed=0))
            timing = time_call(lambda: float(step(it)[0]), repeats=steps)
            row["localizer_pipeline_samples_per_s"] = _rates(timing, batch)[0]
    infer = tf.function(lambda x, model=localizer: model(x, training=False))  # compiled, as served
    timing = time_call(lambda: infer(images).numpy(), repeats=3)
    row["localizer_inference_ms_per_image"] = round(timing["wall_median_s"] / batch * 1e3, 2)
    del localizer, step

    classifier = build_classifier(cfg.model)
    row["classifier_params"] = int(classifier.count_params())
    step = make_train_step(
        strategy, classifier, make_optimizer(cfg.train), classifier_example_loss, batch
    )
    fixed = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    timing = time_call(lambda: float(step(fixed)[0]), repeats=steps)
    row["classifier_samples_per_s"], row["classifier_cpu_s_per_sample"] = _rates(timing, batch)
    return row


COLUMNS = (
    "backbone",
    "head",
    "width",
    "localizer_params",
    "localizer_samples_per_s",
    "localizer_cpu_s_per_sample",
    "localizer_pipeline_samples_per_s",
    "classifier_samples_per_s",
    "localizer_inference_ms_per_image",
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="paper,mobilenet_v3_small")
    p.add_argument("--heads", default="conv,dense")
    p.add_argument(
        "--widths",
        default="0.25,1.0",
        help="ModelConfig.width per backbone, comma-separated in --backbones order",
    )
    p.add_argument("--input_size", type=int, default=225)
    p.add_argument("--mask_size", type=int, default=24)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement (median)")
    p.add_argument(
        "--data", default=None, help="VOC folder: also time the localizer fed by the real pipeline"
    )
    p.add_argument("--name", default="train_throughput", help="JSON name under bench/results/")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    backbones = args.backbones.split(",")
    widths = [float(w) for w in args.widths.split(",")]
    if len(widths) == 1:
        widths = widths * len(backbones)
    if len(widths) != len(backbones):
        p.error("--widths needs one value, or one per backbone")
    started = time.time()
    rows = []
    for backbone, width in zip(backbones, widths):
        for head in args.heads.split(","):
            rows.append(
                bench_one(
                    backbone,
                    head,
                    width,
                    args.batch_size,
                    args.steps,
                    args.data,
                    args.input_size,
                    args.mask_size,
                )
            )
            print(
                f"  {backbone} {head} x{width}: localizer {rows[-1]['localizer_samples_per_s']} "
                f"samples/s",
                flush=True,
            )
    print(format_table(COLUMNS, [[row.get(col, "-") for col in COLUMNS] for row in rows]))
    path = write_json(
        args.name,
        {
            "benchmark": "train_throughput",
            "note": "median of the timed steps; samples/s is wall time (includes waiting for a "
            "core on a shared machine), cpu_s_per_sample is process CPU time (load-independent)",
            "settings": {k: v for k, v in vars(args).items()},
            "seconds": round(time.time() - started, 1),
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
