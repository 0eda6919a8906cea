"""Training samples per second produced by the §6 input pipeline (dnet_tf.data.pipeline).

    python bench/data_pipeline.py                          # data/synthetic, 20 batches of 32 each
    python bench/data_pipeline.py --batches 50 --samples-per-image 4,8,16
    python bench/data_pipeline.py --source 'data/train-*.tfrecord'

Measured per dataset (localizer: images + Eq. (1) masks; classifier: images + labels), after
``--warmup`` batches (tracing, shuffle-buffer fill): samples/s, ms per batch, and the time to the
first batch. Also the decode-only rate (images/s through read + JPEG decode) so the share of the
crop/resize/target work is visible. A table goes to stdout and everything to JSON (default
bench/results/data_pipeline.json). Timings depend on the machine and on what else runs on it: the
JSON records the CPU count and load average next to them.

When --source is absent and data/synthetic does not exist, a 200-image synthetic set is generated
into a temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from dnet_tf.config import named_config  # noqa: E402
from dnet_tf.data import pipeline  # noqa: E402


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def time_batches(ds: tf.data.Dataset, warmup: int, batches: int) -> dict:
    it = iter(ds)
    t0 = time.perf_counter()
    first = next(it)
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    dt = time.perf_counter() - t1
    b = int(first[0].shape[0])
    return {
        "first_batch_s": first_s,
        "seconds": dt,
        "batches": batches,
        "batch_size": b,
        "samples_per_s": batches * b / dt,
        "ms_per_batch": 1000.0 * dt / batches,
        "batch_shapes": [list(t.shape) for t in batch],
    }


def time_decode(source: str, split: str, class_names, images: int) -> dict:
    ds = pipeline.decoded_images(source, split, class_names, seed=0).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(images):
        next(it)
    dt = time.perf_counter() - t0
    return {"images": images, "seconds": dt, "images_per_s": images / dt}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--source", default=None, help="VOC directory or TFRecord glob (default data/synthetic)"
    )
    p.add_argument("--split", default="train")
    p.add_argument("--config", default="paper", help="named DetectorConfig (input size, mask size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=20, help="timed batches per dataset")
    p.add_argument("--warmup", type=int, default=3, help="batches before timing starts")
    p.add_argument(
        "--samples-per-image",
        default="8",
        help="comma-separated crops per decoded image to compare",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "data_pipeline.json"))
    args = p.parse_args(argv)

    tmp = None
    source = args.source
    if source is None:
        source = str(REPO / "data" / "synthetic")
        if not (pathlib.Path(source) / "Annotations").is_dir():
            from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc

            tmp = tempfile.TemporaryDirectory()
            source = tmp.name
            write_synthetic_voc(
                source, SyntheticConfig(num_train=200, num_val=0, num_test=0), progress=False
            )
    class_names = pipeline.load_class_names(source, args.split)
    cfg = named_config(args.config)
    cfg.model.num_classes = len(class_names)

    rows = []
    for k in [int(v) for v in args.samples_per_image.split(",")]:
        pcfg = pipeline.PipelineConfig(samples_per_image=k)
        for name, make in (
            ("localizer", pipeline.localizer_dataset),
            ("classifier", pipeline.classifier_dataset),
        ):
            ds = make(
                source, args.split, class_names, cfg, args.batch_size, seed=0, pipeline_cfg=pcfg
            )
            r = time_batches(ds, args.warmup, args.batches)
            rows.append({"dataset": name, "samples_per_image": k, **r})
    decode = time_decode(source, args.split, class_names, images=100)

    print(
        f"source {source} ({args.split}), input {cfg.model.input_size}px, masks "
        f"{cfg.model.mask_size}^2 x 5 x {cfg.model.num_classes}, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'dataset':<11} {'crops/img':>9} {'samples/s':>10} {'ms/batch':>9} {'1st batch s':>11}")
    for r in rows:
        print(
            f"{r['dataset']:<11} {r['samples_per_image']:>9} {r['samples_per_s']:>10.1f} "
            f"{r['ms_per_batch']:>9.1f} {r['first_batch_s']:>11.2f}"
        )
    print(f"decode only: {decode['images_per_s']:.1f} images/s")

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "source": source,
        "split": args.split,
        "config": args.config,
        "input_size": cfg.model.input_size,
        "mask_size": cfg.model.mask_size,
        "num_classes": cfg.model.num_classes,
        "results": rows,
        "decode_only": decode,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
