"""Seconds per image of a trained run under several inference settings, interleaved.

    python bench/selection_latency.py --run runs/default --data data/synthetic --split val \\
        --images 20 --repeats 3

Each setting is a set of InferenceConfig overrides of the run ("paper": the paper's candidate
selection and Eq. (3); "default": the run's config as it is, new knobs at their defaults). The
settings' detectors (the run directory's graph, one tf.function each) are warmed up, then timed
image by image in turn (A, B, A, B, ...) so that a machine whose load drifts charges them alike;
the table gives the median seconds per image of each setting and its ratio to the first.
Writes bench/results/selection_latency.json.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, machine, write_json  # noqa: E402

SETTINGS = {
    "paper": {
        "candidate_selection": "top_k",
        "outside_halves_weight": 0.0,
        "candidate_containment": 0.0,
    },
    "default": {},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--data", required=True, help="VOC root")
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="passes over the images")
    args = p.parse_args(argv)

    from dnet_tf.data.voc import read_voc_split
    from dnet_tf.evaluation.runner import load_image
    from dnet_tf.inference.detector import load_detector

    detectors = {name: load_detector(args.run, o or None) for name, o in SETTINGS.items()}
    names = next(iter(detectors.values())).class_names
    records = read_voc_split(args.data, args.split, names, ignore_unknown_classes=True)
    images = [load_image(r.image_path) for r in records[: args.images]]
    for det in detectors.values():
        det.detect(images[:1])  # tracing
    seconds = {name: [] for name in detectors}
    for _ in range(args.repeats):
        for image in images:
            for name, det in detectors.items():
                t0 = time.perf_counter()
                det.detect([image])
                seconds[name].append(time.perf_counter() - t0)
    first = statistics.median(seconds[next(iter(seconds))])
    rows, results = [], {}
    for name, values in seconds.items():
        med = statistics.median(values)
        results[name] = {
            "overrides": SETTINGS[name],
            "median_s": med,
            "ratio": med / first,
            "n": len(values),
        }
        rows.append([name, f"{med:.3f}", f"{med / first:.2f}", len(values)])
    print(format_table(["setting", "median s / image", "ratio", "n"], rows))
    path = write_json(
        "selection_latency",
        {
            "machine": machine(),
            "run": args.run,
            "split": args.split,
            "images": len(images),
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
