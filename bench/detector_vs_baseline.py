"""DetectorNet against the sliding-window baseline, side by side in one run (Table 1, rows 1-2).

    python -m bench.detector_vs_baseline                     # runs/default on data/synthetic test
    python -m bench.detector_vs_baseline --images 10 --stride_multiplier 8

Both methods run through the same evaluation (``dnet_tf.evaluation.cli``) on the first --images
test images of a trained run: DetectorNet from the run directory, the baseline with the same run's
classifier on the 8 aspect ratios x 10 scales grid at a stride of 5 px x --stride_multiplier. For
each: mAP (VOC2007 11-point) on those images, seconds per image and network evaluations per image,
counted, not estimated. Also printed: the paper's budget (~120 evaluations per class, section 7)
for this class count, and the baseline's count at the paper's own 5 px stride (from the grid
formula; running it takes hours per image on a 2-core CPU).

Needs a trained run: the main job (``bash scripts/main.sh``) leaves one at runs/default with its
data in data/synthetic. Without it the benchmark says so and writes a "skipped" result.
Writes bench/results/detector_vs_baseline.json.
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
        write_json("detector_vs_baseline", {"skipped": msg})
        return 0

    from dnet_tf.data.voc import read_voc_split
    from dnet_tf.evaluation import cli as eval_cli
    from dnet_tf.evaluation.runner import REFINED, SLIDING
    from dnet_tf.evaluation.sliding_window import SlidingWindowConfig, count_boxes

    with tempfile.TemporaryDirectory() as tmp:
        code = eval_cli.main(
            [
                "--model",
                str(run_dir),
                "--data",
                str(data),
                "--split",
                args.split,
                "--out",
                tmp,
                "--baseline",
                "--max-images",
                str(args.images),
                "--baseline-stride-multiplier",
                str(args.stride_multiplier),
                "--quiet",
            ]
        )
        if code != 0:
            return code
        summary = json.loads((pathlib.Path(tmp) / "evaluation.json").read_text(encoding="utf-8"))
    class_names = summary["class_names"]
    records = read_voc_split(str(data), args.split, class_names, ignore_unknown_classes=True)[
        : args.images
    ]
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
                + (f" (stride 5 px x {args.stride_multiplier:g})" if name == SLIDING else ""),
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
        "detector_vs_baseline",
        {
            "run_dir": str(run_dir),
            "data": str(data),
            "split": args.split,
            "num_images": summary["num_images"],
            "class_names": class_names,
            "stride_multiplier": args.stride_multiplier,
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
