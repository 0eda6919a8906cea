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


def time_interleaved(run, data, split, num_images, repeats, settings: dict) -> tuple[dict, int]:
    """Median seconds per image of each setting's detector, timed image by image in turn.

    Args:
      run: training run directory; data: its VOC root; split: the images' split.
      num_images: the first images of the split; repeats: passes over them.
      settings: {name: InferenceConfig overrides of the run}; the first is the ratios' base.
    Returns:
      ({name: {overrides, median_s, ratio, n, network_evaluations_mean}}, images used).
    """
    from dnet_tf.data.voc import read_voc_split
    from dnet_tf.evaluation.runner import load_image
    from dnet_tf.inference.detector import load_detector

    detectors = {name: load_detector(run, o or None) for name, o in settings.items()}
    names = next(iter(detectors.values())).class_names
    records = read_voc_split(data, split, names, ignore_unknown_classes=True)
    images = [load_image(r.image_path) for r in records[:num_images]]
    for det in detectors.values():
        det.detect(images[:1])  # tracing
    seconds = {name: [] for name in detectors}
    evaluations = {name: [] for name in detectors}
    for _ in range(repeats):
        for image in images:
            for name, det in detectors.items():
                t0 = time.perf_counter()
                result = det.detect([image])[0]
                seconds[name].append(time.perf_counter() - t0)
                evaluations[name].append(result.network_evaluations)
    first = statistics.median(seconds[next(iter(seconds))])
    results = {}
    for name, values in seconds.items():
        med = statistics.median(values)
        results[name] = {
            "overrides": settings[name],
            "median_s": med,
            "ratio": med / first,
            "n": len(values),
            "network_evaluations_mean": statistics.mean(evaluations[name]),
        }
    return results, len(images)


def print_and_write(name: str, args, results: dict, num_images: int) -> None:
    """The table of ``time_interleaved``'s results, and bench/results/<name>.json."""
    rows = [
        [k, f"{r['median_s']:.3f}", f"{r['ratio']:.2f}", f"{r['network_evaluations_mean']:.1f}"]
        + [r["n"]]
        for k, r in results.items()
    ]
    headers = ["setting", "median s / image", "ratio", "network evals / image", "n"]
    print(format_table(headers, rows))
    path = write_json(
        name,
        {
            "machine": machine(),
            "run": args.run,
            "split": args.split,
            "images": num_images,
            "results": results,
        },
    )
    print(f"wrote {path}")


def parse_args(argv, doc: str):
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--data", required=True, help="VOC root")
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="passes over the images")
    return p.parse_args(argv)


def run(name: str, settings: dict, argv, doc: str) -> int:
    """The command of an interleaved timing benchmark: ``settings`` (label -> InferenceConfig
    overrides) timed on a run's images, the table printed and bench/results/<name>.json written."""
    args = parse_args(argv, doc)
    results, n = time_interleaved(
        args.run, args.data, args.split, args.images, args.repeats, settings
    )
    print_and_write(name, args, results, n)
    return 0


def main(argv=None) -> int:
    return run("selection_latency", SETTINGS, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
