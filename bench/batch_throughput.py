"""Images/s of offline detection: the Beam pipeline on the DirectRunner vs the inference CLI.

    python bench/batch_throughput.py                       # paper config, 8 and 32 JPEGs
    python bench/batch_throughput.py --model models/dnet/1 --counts 16,64

Each job is a fresh command, as a user would start it, on the same ~500x375 JPEGs:
  inference CLI     python -m dnet_tf.inference.cli --nodraw (one image at a time,
                    detect_with_masks signature, JSON per image)
  beam in_memory    python -m dnet_tf.batch --direct_running_mode=in_memory (one worker)
  beam 2 processes  python -m dnet_tf.batch --direct_running_mode=multi_processing
                    --direct_num_workers=2 (the command's default on a 2-core machine)
Both Beam jobs batch --batch_size images per serving_default call. Every job is run for two image
counts; "job img/s" is images / wall of the whole command (start-up and model load included),
"marginal img/s" is the difference in images over the difference in wall between the two counts
(start-up cancelled out). Without --model a detector with random weights is exported (the CPU
default config, 20 classes). Writes bench/results/batch_throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402
from bench.inference_latency import test_jpeg  # noqa: E402


def random_export(config_name: str, num_classes: int, base: pathlib.Path) -> pathlib.Path:
    """A SavedModel of the named config with random weights (what a trained one computes)."""
    import numpy as np

    from dnet_tf.config import named_config
    from dnet_tf.export.saved_model import export_module
    from dnet_tf.inference.module import DetectorModule
    from dnet_tf.models.classifier import build_classifier
    from dnet_tf.models.localizer import build_localizer

    cfg = named_config(config_name)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))
    module = DetectorModule(
        build_localizer(cfg.model),
        build_classifier(cfg.model),
        [f"class{i}" for i in range(num_classes)],
        list(np.geomspace(0.5, 2.0, 10)),
        cfg.validate(),
    )
    return export_module(module, base, "dnet")


def jobs(model: pathlib.Path, images: pathlib.Path, out: pathlib.Path, batch: int) -> dict:
    py = [sys.executable, "-m"]
    files = sorted(str(p) for p in images.glob("*.jpg"))
    beam = py + ["dnet_tf.batch", f"--model={model}", f"--input_glob={images}/*.jpg"]
    beam += [f"--batch_size={batch}"]
    return {
        "inference CLI": py
        + ["dnet_tf.inference.cli", f"--model={model}", f"--out={out}/cli", "--nodraw"]
        + files,
        "beam in_memory": beam + [f"--output={out}/mem/", "--direct_running_mode=in_memory"],
        "beam 2 processes": beam
        + [
            f"--output={out}/mp/",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="SavedModel version dir (default: a random-weight export)")
    p.add_argument("--config", default="paper")
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--counts", default="8,32", help="two image counts")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--out", default=None, help="JSON directory (default bench/results)")
    args = p.parse_args(argv)
    small, large = (int(c) for c in args.counts.split(","))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model = pathlib.Path(args.model) if args.model else None
        if model is None:
            model = random_export(args.config, args.num_classes, tmp / "models")
        jpeg = test_jpeg()
        walls: dict[str, dict[int, float]] = {}
        for count in (small, large):
            images = tmp / f"images{count}"
            images.mkdir()
            for i in range(count):
                (images / f"img{i:04d}.jpg").write_bytes(jpeg)
            for name, cmd in jobs(model, images, tmp / f"out{count}", args.batch_size).items():
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
                walls.setdefault(name, {})[count] = wall
                print(f"{name}: {count} images in {wall:.1f} s", file=sys.stderr, flush=True)
    for name, w in walls.items():
        # None when the larger job was not slower: the machine's load changed between the runs
        marginal = (large - small) / (w[large] - w[small]) if w[large] > w[small] else None
        job_rate = large / w[large]
        results.append(
            {
                "job": name,
                "wall_s": {str(k): round(v, 2) for k, v in w.items()},
                "job_images_per_s": job_rate,
                "marginal_images_per_s": marginal,
            }
        )
    cli = next(r for r in results if r["job"] == "inference CLI")
    for r in results:
        both = r["marginal_images_per_s"] and cli["marginal_images_per_s"]
        r["marginal_vs_cli"] = (
            r["marginal_images_per_s"] / cli["marginal_images_per_s"] if both else None
        )
        r["job_vs_cli"] = r["job_images_per_s"] / cli["job_images_per_s"]
        rows.append(
            [
                r["job"],
                r["wall_s"][str(small)],
                r["wall_s"][str(large)],
                r["job_images_per_s"],
                r["job_vs_cli"],
                "n/a" if r["marginal_images_per_s"] is None else r["marginal_images_per_s"],
                "n/a" if r["marginal_vs_cli"] is None else r["marginal_vs_cli"],
            ]
        )
    headers = ["job", f"wall s ({small})", f"wall s ({large})", "job img/s", "x CLI"]
    print(format_table(headers + ["marginal img/s", "x CLI"], rows))
    payload = {
        "model": str(args.model or f"random-weight {args.config} export"),
        "image": "500x375 JPEG",
        "counts": [small, large],
        "batch_size": args.batch_size,
        "results": results,
    }
    path = write_json("batch_throughput", payload, pathlib.Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
