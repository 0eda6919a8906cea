"""Per-window latency of the TFLite variants of the localizer (and per crop of the classifier).

    python -m bench.tflite_latency                         # both named configs, random weights
    python -m bench.tflite_latency --run_dir runs/default  # a trained run's networks
    python -m bench.tflite_latency --configs mobilenet_v3_small --repeats 50 --threads 1,2,4

For each network: float32, float16, dynamic-range int8 and full-integer int8 (``dnet_tf.tflite``)
on the LiteRT interpreter (XNNPACK delegate, the default), timed one window per invoke (as a
device runs the windows one by one) and with one image's 35 windows in one invoke (per window),
for each thread count; the Keras model under TensorFlow as the reference. Medians of --repeats
calls after one warm-up call. Without --run_dir the networks of the named configs ("paper": the
paper's backbone and dense head; "mobilenet_v3_small": MobileNetV3-Small with the conv head) are
built with random weights (cost does not depend on the weights) for 6 classes (the embedded
dataset's); int8 is calibrated on uniform-noise crops (fine for timing, not for accuracy).

Prints a table and writes bench/results/tflite_latency.json; timings depend on the machine (the
JSON records it and its load). Never asserts on timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from bench.common import format_table, write_json


def _networks_of(args):
    """[(label, config, {network: keras model})]."""
    from dnet_tf.config import named_config

    if args.run_dir:
        from dnet_tf.training.run_dir import load_run

        run = load_run(args.run_dir)
        return [
            (
                f"run:{args.run_dir}",
                run.config,
                {"localizer": run.localizer, "classifier": run.classifier},
            )
        ]
    from dnet_tf.models.classifier import build_classifier
    from dnet_tf.models.localizer import build_localizer

    out = []
    for name in args.configs:
        cfg = named_config(name)
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, num_classes=args.classes)
        )
        out.append(
            (
                name,
                cfg,
                {
                    "localizer": build_localizer(cfg.model),
                    "classifier": build_classifier(cfg.model),
                },
            )
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run_dir",
        default=None,
        help="trained run directory (default: named configs, random weights)",
    )
    p.add_argument(
        "--configs", type=lambda s: s.split(","), default=["paper", "mobilenet_v3_small"]
    )
    p.add_argument(
        "--classes",
        type=int,
        default=6,
        help="classes of the random-weight networks (the embedded dataset has 6)",
    )
    p.add_argument(
        "--variants",
        type=lambda s: s.split(","),
        default=["float32", "float16", "dynamic_int8", "int8"],
    )
    p.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--calibration", type=int, default=32, help="int8 calibration crops (noise)")
    args = p.parse_args(argv)

    from dnet_tf.tflite.convert import convert_variants
    from dnet_tf.tflite.report import network_latency

    results, rows = {}, []
    for label, cfg, models in _networks_of(args):
        s = cfg.model.input_size
        windows = int(sum(cfg.inference.windows_per_scale))
        rng = np.random.default_rng(0)
        calibration = rng.uniform(0, 255, (args.calibration, s, s, 3)).astype(np.float32)
        files, sizes = {}, {}
        for network, model in models.items():
            files[network] = convert_variants(model, args.variants, calibration)
            sizes[network] = {v: len(b) for v, b in files[network].items()}
        lat = network_latency(models, files, s, windows, args.repeats, args.threads)
        results[label] = {
            "model": dataclasses.asdict(cfg.model),
            "windows_per_image": windows,
            "bytes": sizes,
            "latency_ms": lat,
        }
        for network in models:
            ref = lat[network]["keras"]["tensorflow"]
            rows.append(
                [
                    label,
                    network,
                    "keras (TF)",
                    "-",
                    "-",
                    round(ref["batch_1"], 3),
                    round(ref[f"batch_{windows}"], 3),
                ]
            )
            for v in args.variants:
                for t in args.threads:
                    cell = lat[network][v][f"threads_{t}"]
                    rows.append(
                        [
                            label,
                            network,
                            v,
                            t,
                            round(sizes[network][v] / 2**20, 2),
                            round(cell["batch_1"], 3),
                            round(cell[f"batch_{windows}"], 3),
                        ]
                    )
    print(
        format_table(
            [
                "config",
                "network",
                "variant",
                "threads",
                "MB",
                "ms/window, 1 per call",
                "ms/window, all in one call",
            ],
            rows,
        )
    )
    path = write_json(
        "tflite_latency", {"repeats": args.repeats, "threads": args.threads, "results": results}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
