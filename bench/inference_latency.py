"""Latency of the exported SavedModel per backbone config, and where the time goes.

    python bench/inference_latency.py                 # three configs, 20 classes, ~500x375 JPEG
    python bench/inference_latency.py --repeats 5 --batch_sizes 1

For each named config (the CPU default: the paper's backbone at width 0.25 with the conv head;
MobileNetV3-Small; the paper's full-width network with its dense head) a 20-class
detector (VOC's count) with random weights is exported and reloaded with
tf.saved_model.load; serving_default is timed on one ~500x375 JPEG (p50/p95 over --repeats),
then on batches of 1/4/16 images (throughput). Network time is measured separately by running the
localizer and the classifier alone on as many crops as the graph fed them for that image (the
``network_evaluations`` output: the windows, then the valid candidates through the classifier and
the kept ones through the localizer again, counted here as half each), batched the same way;
"rest" = total - network.

Random weights give masks around 0.5 everywhere; with the coverage threshold set to 0 every
(scale, class) canvas is searched and max_refine candidates reach the classifier: the worst case
for the box search, so "rest" is an upper bound of what a trained model costs.
Writes bench/results/inference_latency.json and prints a table. Timings depend on the machine;
the JSON records it.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402

# Named configs (dnet_tf.config.NAMED_CONFIGS): the CPU default (paper backbone at width 0.25,
# conv head), the compact one (its first stage every 10 px, bfloat16 trunks, 25 candidates per
# canvas), MobileNetV3-Small, and the paper's full-width network with its dense head.
CONFIGS = (
    "paper",
    "paper_stride10_bfloat16_candidates25",
    "mobilenet_v3_small",
    "paper_full",
)


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (tracing, allocation)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def test_jpeg(h=375, w=500) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def random_module(config_name: str, num_classes: int, seed: int = 0, every_canvas: bool = True):
    """A DetectorModule of a named config with random weights (seeded) and ``num_classes``
    classes. Random masks lie near 0.5, on either side of the coverage threshold depending on
    the draw; ``every_canvas`` sets the threshold to 0 so that every (scale, class) canvas is
    searched and max_refine candidates go on: the worst case of the box search, whatever the
    draw."""
    import keras

    from dnet_tf.config import named_config
    from dnet_tf.inference.module import DetectorModule
    from dnet_tf.models.classifier import build_classifier
    from dnet_tf.models.localizer import build_localizer

    cfg = named_config(config_name)
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, num_classes=num_classes),
        inference=dataclasses.replace(
            cfg.inference,
            coverage_threshold=0.0 if every_canvas else cfg.inference.coverage_threshold,
        ),
    ).validate()
    keras.utils.set_random_seed(seed)
    localizer, classifier = build_localizer(cfg.model), build_classifier(cfg.model)
    names = [f"class{i}" for i in range(num_classes)]
    aspects = list(np.geomspace(0.5, 2.0, 10))
    return DetectorModule(localizer, classifier, names, aspects, cfg)


def bench_config(config_name: str, num_classes: int, repeats: int, batch_sizes, tmp) -> dict:
    import tensorflow as tf

    from dnet_tf.export.saved_model import export_module

    module = random_module(config_name, num_classes)
    cfg, localizer, classifier = module.config, module.localizer, module.classifier
    path = export_module(module, tmp, config_name)
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    jpeg = tf.constant([test_jpeg()])
    lat = timed(lambda: fn(images=jpeg), repeats)
    # The crops the graph sent through a network for this image: the windows, then the valid
    # candidates through the classifier and the kept ones through the localizer again.
    evals = int(loaded.signatures["detect_with_masks"](images=jpeg)["network_evaluations"][0])
    n_cls = (evals - module.num_windows + 1) // 2  # the split is not an output: half each
    n_ref = evals - module.num_windows - n_cls
    n_loc = module.num_windows + n_ref

    s = cfg.model.input_size
    windows = tf.random.uniform([module.num_windows, s, s, 3], 0, 255)
    cls_crops = tf.random.uniform([n_cls, s, s, 3], 0, 255)
    ref_crops = tf.random.uniform([n_ref, s, s, 3], 0, 255)
    loc = tf.function(lambda x: localizer(x, training=False))
    cls = tf.function(lambda x: classifier(x, training=False))
    net = timed(lambda: (loc(windows), loc(ref_crops), cls(cls_crops)), repeats)

    throughput = {}
    for b in batch_sizes:
        batch = tf.constant([test_jpeg()] * b)
        t = timed(lambda batch=batch: fn(images=batch), max(2, repeats // 4))
        throughput[str(b)] = {"p50_s": float(np.median(t)), "images_per_s": b / float(np.median(t))}
    p50, net50 = float(np.median(lat)), float(np.median(net))
    return {
        "config": config_name,
        "backbone": cfg.model.backbone,
        "head": cfg.model.head,
        "width": cfg.model.width,
        "num_classes": num_classes,
        "p50_s": p50,
        "p95_s": float(np.percentile(lat, 95)),
        "network_p50_s": net50,
        "rest_p50_s": max(p50 - net50, 0.0),
        "rest_fraction": max(p50 - net50, 0.0) / p50,
        "network_evaluations_per_image": evals,
        "max_network_evaluations_per_image": module.max_network_evaluations,
        "localizer_evaluations": n_loc,
        "classifier_evaluations": n_cls,
        "windows": module.num_windows,
        "refinement_crops": n_ref,
        "batch_throughput": throughput,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--batch_sizes", default="1,4,16")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "inference_latency.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            rows.append(bench_config(name, args.num_classes, args.repeats, batch_sizes, tmp))
    result = {"machine": machine(), "image": "500x375 JPEG", "results": rows}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"{'config (backbone/head/width)':<40}{'p50 ms':>9}{'p95 ms':>9}{'net ms':>9}"
        f"{'rest ms':>9}{'rest %':>8}{'evals':>7}"
        + "".join(f"{'img/s b=' + b:>12}" for b in map(str, batch_sizes))
    )
    for r in rows:
        label = f"{r['config']} ({r['backbone']}/{r['head']}/{r['width']})"
        print(
            f"{label:<40}{r['p50_s'] * 1e3:>9.0f}{r['p95_s'] * 1e3:>9.0f}"
            f"{r['network_p50_s'] * 1e3:>9.0f}{r['rest_p50_s'] * 1e3:>9.0f}"
            f"{r['rest_fraction'] * 100:>7.0f}%"
            f"{r['network_evaluations_per_image']:>7}"
            + "".join(
                f"{r['batch_throughput'][str(b)]['images_per_s']:>12.2f}" for b in batch_sizes
            )
        )
    print(
        f"machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
