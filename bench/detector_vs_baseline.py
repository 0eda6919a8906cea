"""DetectorNet against the sliding-window baseline, side by side in one run (Table 1, rows 1-2).

    python -m bench.detector_vs_baseline                     # runs/default on data/synthetic test
    python -m bench.detector_vs_baseline --images 10 --stride_multiplier 8
    python -m bench.detector_vs_baseline --split val --images 100 --scales 3 --aspect_ratios 3 \\
        --evaluations 72                        # the baseline at DetectorNet's budget per image

Both methods run through the same evaluation (``dnet_tf.evaluation.cli``) on the first --images
images of --split of a trained run: DetectorNet from the run directory (with --set overriding its
inference knobs), the baseline with the same run's classifier on the grid of --aspect_ratios x
--scales (the paper's 8 x 10) at a stride of 5 px x --stride_multiplier, or with --evaluations B
at the smallest stride whose grid has at most B boxes per image on average over those images
(``sliding_window.stride_multiplier_for_budget``). For each: mAP (VOC2007 11-point) on those
images, seconds per image and network evaluations per image, counted, not estimated. Also
printed: the paper's budget (~120 evaluations per class, section 7) for this class count, and the
baseline's count at the paper's own 5 px stride (from the grid formula; running it takes hours
per image on a 2-core CPU).

Needs a trained run: the main job (``bash scripts/main.sh``) leaves one at runs/default with its
data in data/synthetic. Without it the benchmark says so and writes a "skipped" result.
Writes bench/results/<--name>.json (default detector_vs_baseline.json); --eval_out keeps the
evaluation's own files (table.md, evaluation.json).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402

PAPER_EVALUATIONS_PER_CLASS = 120  # section 7: "(#windows x #mask types) ~ 120 crops per class"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run_dir", default=str(REPO / "runs" / "default"), help="trained run directory"
    )
    p.add_argument(
        "--data", default=str(REPO / "data" / "synthetic"), help="VOC root with a test split"
    )
    p.add_argument("--split", default="test")
    p.add_argument(
        "--images", type=int, default=5, help="test images (the baseline costs minutes each)"
    )
    p.add_argument(
        "--stride_multiplier",
        type=float,
        default=16.0,
        help="baseline stride = 5 px x this (1 = the paper's grid)",
    )
    p.add_argument(
        "--scales", type=int, default=10, help="baseline scales from 0.1 to 1.0 (10: the paper's)"
    )
    p.add_argument(
        "--aspect_ratios", type=int, default=8, help="baseline aspect ratios (8: the paper's)"
    )
    p.add_argument(
        "--evaluations",
        type=float,
        default=None,
        help="baseline boxes per image (mean over the images); sets the stride multiplier",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="DetectorNet inference knob override (as dnet_tf.evaluation.cli); repeatable",
    )
    p.add_argument("--eval_out", default=None, help="keep the evaluation's files here")
    p.add_argument("--name", default="detector_vs_baseline", help="results file name")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_dir, data = pathlib.Path(args.run_dir), pathlib.Path(args.data)
    if (
        not (run_dir / "config.json").is_file()
        or not (data / "ImageSets" / "Main" / f"{args.split}.txt").is_file()
    ):
        msg = (
            f"skipped: needs a trained run at {run_dir} and its data at {data} "
            "(run the main job first: bash scripts/main.sh)"
        )
        print(msg)
        write_json(args.name, {"skipped": msg})
        return 0

    from dnet_tf.data.voc import read_voc_split
    from dnet_tf.evaluation import cli as eval_cli
    from dnet_tf.evaluation.runner import REFINED, SLIDING
    from dnet_tf.evaluation.sliding_window import (
        SlidingWindowConfig,
        count_boxes,
        default_aspect_ratios,
        grid_scales,
        stride_multiplier_for_budget,
    )
    from dnet_tf.training.run_dir import CLASS_NAMES, read_class_names

    class_names = list(read_class_names(run_dir / CLASS_NAMES))
    records = read_voc_split(str(data), args.split, class_names, ignore_unknown_classes=True)[
        : args.images
    ]
    grid = SlidingWindowConfig(
        aspect_ratios=default_aspect_ratios(args.aspect_ratios), scales=grid_scales(args.scales)
    ).validate()
    multiplier = args.stride_multiplier
    if args.evaluations is not None:
        sizes = [(r.height, r.width) for r in records]
        multiplier = stride_multiplier_for_budget(sizes, grid, args.evaluations)
    sets = [a for item in args.set for a in ("--set", item)]
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.eval_out or tmp
        code = eval_cli.main(
            [
                "--model",
                str(run_dir),
                "--data",
                str(data),
                "--split",
                args.split,
                "--out",
                out_dir,
                "--baseline",
                "--max-images",
                str(args.images),
                "--baseline-stride-multiplier",
                repr(multiplier),
                "--baseline-scales",
                str(args.scales),
                "--baseline-aspect-ratios",
                str(args.aspect_ratios),
                "--quiet",
                *sets,
            ]
        )
        if code != 0:
            return code
        summary = json.loads(
            (pathlib.Path(out_dir) / "evaluation.json").read_text(encoding="utf-8")
        )
    paper_grid = [count_boxes(r.height, r.width, SlidingWindowConfig()) for r in records]
    paper_grid_mean = round(sum(paper_grid) / len(paper_grid))
    paper_budget = PAPER_EVALUATIONS_PER_CLASS * len(class_names)

    methods = summary["methods"]
    dn_evals = methods[REFINED]["network_evaluations_per_image"]
    rows = []
    for name in (REFINED, SLIDING):
        m = methods[name]
        rows.append(
            [
                f"{name}"
                + (
                    f" ({args.scales} scales x {args.aspect_ratios} ratios, stride 5 px x "
                    f"{multiplier:.4g})"
                    if name == SLIDING
                    else ""
                ),
                m["voc07"]["mAP"],
                m["seconds_per_image"],
                m["network_evaluations_per_image"],
                m["network_evaluations_per_image"] / dn_evals,
            ]
        )
    rows.append(
        [
            f"{SLIDING} at the paper's 5 px stride (counted, not run)",
            "",
            "",
            paper_grid_mean,
            paper_grid_mean / dn_evals,
        ]
    )
    rows.append(
        [
            f"the paper's DetectorNet, ~{PAPER_EVALUATIONS_PER_CLASS} per class x "
            f"{len(class_names)} classes",
            "",
            "",
            paper_budget,
            paper_budget / dn_evals,
        ]
    )
    headers = ["method", "mAP (VOC07)", "s / image", "network evals / image", "x DetectorNet evals"]
    print(
        f"{summary['num_images']} {args.split} images of {data} ({len(class_names)} classes), "
        f"run {run_dir}"
    )
    print(format_table(headers, rows))
    path = write_json(
        args.name,
        {
            "run_dir": str(run_dir),
            "data": str(data),
            "split": args.split,
            "num_images": summary["num_images"],
            "class_names": class_names,
            "stride_multiplier": multiplier,
            "scales": list(grid.scales),
            "aspect_ratios": list(grid.aspect_ratios),
            "inference_overrides": args.set,
            "methods": {
                name: {
                    "mAP_voc07": methods[name]["voc07"]["mAP"],
                    "mAP_voc10": methods[name]["voc10"]["mAP"],
                    "seconds_per_image": methods[name]["seconds_per_image"],
                    "network_evaluations_per_image": methods[name]["network_evaluations_per_image"],
                }
                for name in (REFINED, SLIDING)
            },
            "sliding_windows_paper_stride_evaluations_per_image": paper_grid_mean,
            "paper_detectornet_evaluations_per_image": paper_budget,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
