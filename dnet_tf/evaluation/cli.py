"""Evaluate a detector on a Pascal VOC split: Table 1, Figures 3-4, optionally the baseline.

    python -m dnet_tf.evaluation.cli --model models/dnet/1 --data data/synthetic --split test \\
        --out eval/ [--baseline --run-dir runs/r1] [--pictures 6]

--model is an exported SavedModel (version dir, or model dir: newest version) or a training run
directory. The sliding-window baseline needs the run directory's classifier: --run-dir, or
--model when that is a run directory. The baseline's grid is the paper's (8 aspect ratios x 10
scales, 5 px stride) times --baseline-stride-multiplier (default 8: 3,800 classifier evaluations
for a 500 x 375 image instead of 165,169; see dnet_tf.evaluation.sliding_window for the cost);
--baseline-scales and --baseline-aspect-ratios give a smaller grid over the same range.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

DEFAULT_BASELINE_STRIDE_MULTIPLIER = 8.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnet-eval", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", required=True, help="SavedModel (version or model dir) or run directory"
    )
    p.add_argument(
        "--data", required=True, help="VOC root: Annotations/, JPEGImages/, ImageSets/Main/"
    )
    p.add_argument("--split", default="test", help="ImageSets/Main/<split>.txt (default: test)")
    p.add_argument(
        "--out",
        required=True,
        help="output directory for table.md/json, evaluation.json, pictures/",
    )
    p.add_argument("--baseline", action="store_true", help="also run the sliding-window baseline")
    p.add_argument(
        "--run-dir",
        default=None,
        help="run directory whose classifier the baseline uses "
        "(default: --model when it is a run directory)",
    )
    p.add_argument(
        "--baseline-stride-multiplier",
        type=float,
        default=DEFAULT_BASELINE_STRIDE_MULTIPLIER,
        help="baseline stride = 5 px x this (>= 1; 1 is the paper's full grid)",
    )
    p.add_argument(
        "--baseline-scales",
        type=int,
        default=10,
        help="baseline box scales, spaced evenly from 0.1 to 1.0 of the image (10: the paper's)",
    )
    p.add_argument(
        "--baseline-aspect-ratios",
        type=int,
        default=8,
        help="baseline aspect ratios w / h, spaced evenly in log over [1/3, 3] (8: the paper's)",
    )
    p.add_argument("--baseline-batch-size", type=int, default=64, help="crops per classifier call")
    p.add_argument(
        "--pictures", type=int, default=0, help="Figure 3 pictures for the first N images"
    )
    p.add_argument(
        "--picture-ids", default=None, help="comma-separated image ids to picture instead"
    )
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument(
        "--metric",
        choices=("voc07", "voc10"),
        default="voc07",
        help="table metric: VOC2007 11-point (the paper's) or VOC2010+ all-point; "
        "evaluation.json has both",
    )
    p.add_argument("--iou", type=float, default=0.5, help="matching Jaccard threshold")
    p.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="a bad annotation or image file: stop (fail) or drop that image with a warning (skip)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="override an InferenceConfig knob of a run directory (VALUE as JSON, else a string), "
        "e.g. --set candidate_selection=top_k --set outside_halves_weight=0; repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_overrides(items: Sequence[str]) -> dict:
    """["knob=value", ...] -> {knob: value}; values are JSON (numbers, lists, true) or strings.

    Raises ValueError naming the item without '=' or the knob InferenceConfig lacks."""
    import dataclasses
    import json

    from dnet_tf.config import InferenceConfig

    knobs = {f.name for f in dataclasses.fields(InferenceConfig)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KNOB=VALUE")
        if key not in knobs:
            raise ValueError(f"--set {item!r}: InferenceConfig has no knob {key!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _default_detector_loader(path: str, inference_overrides: dict | None = None):
    from dnet_tf.inference.detector import load_detector

    return load_detector(path, inference_overrides)


def _default_classifier_loader(run_dir: str):
    from dnet_tf.training.run_dir import load_run

    return load_run(run_dir).classifier


def main(
    argv: Sequence[str] | None = None,
    *,
    detector_loader: Callable | None = None,
    classifier_loader: Callable | None = None,
) -> int:
    """Parses ``argv`` and runs the evaluation; returns the exit code.

    ``detector_loader(path) -> detector`` and ``classifier_loader(run_dir) -> keras.Model`` default
    to the package's loaders; tests pass stand-ins.
    """
    args = _parser().parse_args(argv)
    detector_loader = detector_loader or _default_detector_loader
    classifier_loader = classifier_loader or _default_classifier_loader

    from dnet_tf.data.voc import VocError
    from dnet_tf.evaluation.runner import EvalOptions, evaluate_voc
    from dnet_tf.evaluation.sliding_window import (
        SlidingWindowConfig,
        SlidingWindowDetector,
        default_aspect_ratios,
        grid_scales,
    )
    from dnet_tf.inference.loading import is_run_dir

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.pictures < 0 or (args.max_images is not None and args.max_images < 1):
        return fail("--pictures must be >= 0 and --max-images >= 1")
    try:
        if args.baseline_scales < 1:
            raise ValueError(f"--baseline-scales must be >= 1, got {args.baseline_scales}")
        if args.baseline_aspect_ratios < 1:
            raise ValueError(
                f"--baseline-aspect-ratios must be >= 1, got {args.baseline_aspect_ratios}"
            )
        sw_cfg = SlidingWindowConfig(
            aspect_ratios=default_aspect_ratios(args.baseline_aspect_ratios),
            scales=grid_scales(args.baseline_scales),
            stride_multiplier=args.baseline_stride_multiplier,
            batch_size=args.baseline_batch_size,
        ).validate()
    except ValueError as e:
        return fail(str(e))
    run_dir = args.run_dir
    if args.baseline and run_dir is None:
        if is_run_dir(args.model):
            run_dir = args.model
        else:
            return fail(
                "--baseline needs the classifier of a run directory: pass --run-dir "
                f"({args.model} is not a run directory)"
            )
    try:
        overrides = parse_overrides(args.set)
    except ValueError as e:
        return fail(str(e))
    try:
        if overrides:
            detector = detector_loader(args.model, overrides)
        else:
            detector = detector_loader(args.model)
    except (FileNotFoundError, ValueError, TypeError) as e:
        return fail(f"cannot load model {args.model}: {e}")
    baseline = None
    if args.baseline:
        try:
            baseline = SlidingWindowDetector(classifier_loader(run_dir), sw_cfg)
        except (FileNotFoundError, ValueError) as e:
            return fail(f"cannot load the baseline classifier from {run_dir}: {e}")
    options = EvalOptions(
        use_07_metric=args.metric == "voc07",
        iou_threshold=args.iou,
        pictures=args.pictures,
        picture_ids=[s for s in args.picture_ids.split(",") if s] if args.picture_ids else None,
        progress=not args.quiet,
    )
    try:
        summary = evaluate_voc(
            detector,
            args.data,
            args.split,
            args.out,
            baseline=baseline,
            options=options,
            max_images=args.max_images,
            on_error=args.on_error,
        )
    except (VocError, ValueError) as e:
        return fail(str(e))
    skipped = summary.get("data", {}).get("skipped", [])
    if skipped:
        print(f"skipped {len(skipped)} image(s):", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
    for name, m in summary["methods"].items():
        key = "voc07" if options.use_07_metric else "voc10"
        mean_ap = m[key]["mAP"]
        shown = "n/a" if mean_ap is None else f"{mean_ap:.3f}"
        print(f"{name}: mAP {shown} ({summary['table_metric']})")
    print(f"wrote {len(summary['files'])} files to {args.out}", file=sys.stderr)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
