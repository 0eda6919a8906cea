"""This detector against KerasHub RetinaNet, same JPEGs, same process, one tf.function each.

    python -m bench.peers                   # needs the bench extra: pip install -e .[bench]
    python -m bench.peers --images 10 --repeats 5

Rows (each timed as bytes in, detections out, batch 1):
  * the main job's export (models/dnet, the newest version) when it exists, or the SavedModels
    given with --exports: serving_default, trained weights;
  * the main job's run (runs/default) exported with the inference knobs of each named config of
    --run_configs (default: the compact one, paper_stride10_bfloat16_candidates25), when the
    run exists;
  * the default configuration with random weights, 20 classes, the coverage threshold at 0 so
    that every (scale, class) canvas is searched (the bound of the box search);
  * KerasHub RetinaNet with a ResNet-18 backbone at 384 x 384 and a ResNet-50 backbone at
    512 x 512, 20 classes, random initialisation (built from the class constructors: no preset,
    nothing downloaded); decode, resize, normalisation, forward pass, box decoding and NMS in one
    ``tf.function``.
The images are the first --images test images of data/synthetic (the main job's dataset) when
present, else the benchmarks' 500x375 JPEG. The models take turns image by image (one call of
each per image and repeat), so load on a shared machine hits them alike; p50 is over all calls,
and the ratio column divides by RetinaNet-ResNet18 @384's p50 of the same run. The network
evaluations of this detector (crops through a network per image) come from the detect_with_masks
signature on the same images. Writes bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, machine, write_json  # noqa: E402
from bench.inference_latency import random_module, test_jpeg  # noqa: E402

PEER_CLASSES = 20
# (label, ResNet block type, blocks per stage, input side)
RETINANETS = (
    ("KerasHub RetinaNet-ResNet18 @384", "basic_block", [2, 2, 2, 2], 384),
    ("KerasHub RetinaNet-ResNet50 @512", "bottleneck_block", [3, 4, 6, 3], 512),
)
REFERENCE = RETINANETS[0][0]


def retinanet_fn(block_type: str, blocks, side: int, num_classes: int = PEER_CLASSES):
    """tf.string [1] JPEG -> dict of boxes/scores/classes, RetinaNet with random weights."""
    import keras_hub
    import tensorflow as tf

    image_encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=blocks,
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=block_type,
        use_pre_activation=False,
        image_shape=(side, side, 3),
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=image_encoder,
        min_level=3,
        max_level=7,
        use_p5=False,
        image_shape=(side, side, 3),
    )
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=num_classes, bounding_box_format="yxyx"
    )
    mean = tf.constant([0.485, 0.456, 0.406]) * 255.0
    std = tf.constant([0.229, 0.224, 0.225]) * 255.0

    @tf.function(input_signature=[tf.TensorSpec([1], tf.string)])
    def run(jpegs):
        image = tf.io.decode_image(jpegs[0], channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32)[None], [side, side])
        image = (image - mean) / std
        decoded = model.decode_predictions(model(image, training=False), image)
        return {k: decoded[k] for k in ("boxes", "confidence", "labels", "num_detections")}

    return run


def test_images(n: int) -> tuple[list[bytes], str]:
    data = REPO / "data" / "synthetic"
    split = data / "ImageSets" / "Main" / "test.txt"
    if split.exists():
        ids = split.read_text().split()[:n]
        return [(data / "JPEGImages" / f"{i}.jpg").read_bytes() for i in ids], (
            f"the first {len(ids)} test images of data/synthetic"
        )
    return [test_jpeg()], "the 500x375 benchmark JPEG"


def run_exported_as(config_name: str, base: str) -> pathlib.Path | None:
    """The main job's run (runs/default) exported under ``base`` with the inference knobs in
    which the named config differs from the default; None without the run."""
    import dataclasses

    from dnet_tf.config import InferenceConfig, named_config
    from dnet_tf.export.saved_model import export_run

    run = REPO / "runs" / "default"
    if not (run / "config.json").exists():
        return None
    knobs, default = named_config(config_name).inference, InferenceConfig()
    overrides = {
        f.name: getattr(knobs, f.name)
        for f in dataclasses.fields(knobs)
        if getattr(knobs, f.name) != getattr(default, f.name)
    }
    return export_run(run, base, config_name, inference_overrides=overrides)


def newest_export() -> pathlib.Path | None:
    from dnet_tf.inference.detector import resolve_saved_model_dir

    base = REPO / "models" / "dnet"
    return resolve_saved_model_dir(base) if base.exists() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="passes over the images")
    p.add_argument("--random_config", default="paper")
    p.add_argument(
        "--exports",
        default="",
        help="comma-separated SavedModel dirs (default: models/dnet newest)",
    )
    p.add_argument(
        "--run_configs",
        default="paper_stride10_bfloat16_candidates25",
        help="comma-separated named configs whose inference knobs the main job's run is also "
        "exported with (empty: none)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    jpegs, image_label = test_images(args.images)
    models, evals = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        exports = [pathlib.Path(e) for e in args.exports.split(",") if e] or [newest_export()]
        for export in exports:
            if export is None:
                continue
            loaded = tf.saved_model.load(str(export))
            where = export.resolve()
            where = where.relative_to(REPO) if where.is_relative_to(REPO) else where
            models[f"this detector, export {where}"] = (
                loaded.signatures["serving_default"],
                loaded.signatures["detect_with_masks"],
            )
        for name in (n for n in args.run_configs.split(",") if n):
            export = run_exported_as(name, tmp)
            if export is not None:
                loaded = tf.saved_model.load(str(export))
                models[f"this detector, runs/default exported as {name}"] = (
                    loaded.signatures["serving_default"],
                    loaded.signatures["detect_with_masks"],
                )
        from dnet_tf.export.saved_model import export_module

        module = random_module(args.random_config, PEER_CLASSES)
        path = export_module(module, tmp, args.random_config)
        loaded_random = tf.saved_model.load(str(path))
        label = f"this detector, {args.random_config}, {PEER_CLASSES} classes, random weights"
        models[label + ", every canvas searched"] = (
            loaded_random.signatures["serving_default"],
            loaded_random.signatures["detect_with_masks"],
        )
        try:
            import keras_hub

            peer_note = f"keras-hub {keras_hub.__version__}"
            for label, block_type, blocks, side in RETINANETS:
                models[label] = (retinanet_fn(block_type, blocks, side), None)
        except ImportError:
            peer_note = "keras-hub not installed (pip install -e .[bench]): no peer rows"

        calls = {}
        for label, (fn, with_masks) in models.items():
            calls[label] = lambda data, fn=fn: fn(tf.constant([data]))
            calls[label](jpegs[0])  # warm-up: tracing, allocation
            if with_masks is not None:
                evals[label] = [
                    int(with_masks(images=tf.constant([d]))["network_evaluations"][0])
                    for d in jpegs
                ]
        times = {label: [] for label in calls}
        for _ in range(args.repeats):
            for data in jpegs:
                for label, call in calls.items():  # take turns: same load for all
                    t = time.perf_counter()
                    call(data)
                    times[label].append(time.perf_counter() - t)

    p50 = {label: float(np.median(t)) for label, t in times.items()}
    ref = p50.get(REFERENCE)
    rows = []
    for label in calls:
        ev = evals.get(label)
        rows.append(
            [
                label,
                round(p50[label] * 1e3),
                round(float(np.percentile(times[label], 90)) * 1e3),
                f"{p50[label] / ref:.2f}" if ref else "",
                f"{np.mean(ev):.1f} ({min(ev)}-{max(ev)})" if ev else "",
            ]
        )
    info = machine()
    print(
        f"batch 1, {image_label}, {args.repeats} passes; {peer_note}; "
        f"{info['cpus']} CPUs, load {', '.join(f'{x:.2f}' for x in info['load_average'])}"
    )
    print(
        format_table(
            ["model", "p50 ms", "p90 ms", f"x {REFERENCE.split()[-2]}", "network evals (range)"],
            rows,
        )
    )
    out = write_json(
        "peers",
        {
            "images": image_label,
            "repeats": args.repeats,
            "peers": peer_note,
            "p50_s": p50,
            "network_evaluations": evals,
        },
    )
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
