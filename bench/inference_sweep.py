"""Inference-time knobs of a trained run against accuracy: the ablation behind a compact setting.

    python -m bench.inference_sweep                          # runs/default on the validation split
    python -m bench.inference_sweep --split test --settings default   # evaluations on test
    python -m bench.inference_sweep --settings "default;2 scales"     # names separated by ';'

For each setting (InferenceConfig overrides of the trained run; no retraining) the detector is
built from the run directory, run on every image of the split (the JPEG files, one at a time),
and scored with VOC2007 11-point AP. Printed per setting: mAP and its difference to the default,
median and mean seconds per image, and the network evaluations per image (mean, median, 90th
percentile, max: with the candidate-driven graph they depend on the image). Choose settings on
the validation split; the test split is for reporting. Timings on a shared machine are noisy:
the settings take turns image by image in one process, the table gives medians, and the JSON
(bench/results/inference_sweep_<split>.json) the machine's load.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402

# name -> InferenceConfig overrides. Each cuts one cost: windows (scales), the first-stage
# search (stride), the refinement's search (its stride, canvas and shapes) or its crops.
_COARSE_REFINE_SHAPES = {
    "refine_size_fractions": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "refine_aspect_ratios": [0.5, 0.61, 0.743, 0.906, 1.104, 1.346, 1.641, 2.0],
}
SETTINGS = {
    "default": {},
    "classifier after the NMS": {"classifier_stage": "detections"},
    "classifier after the NMS, coarse refine shapes": {
        "classifier_stage": "detections",
        **_COARSE_REFINE_SHAPES,
    },
    "max_refine 20": {"max_refine": 20},
    "max_refine 10": {"max_refine": 10},
    "2 scales": {"num_scales": 2},
    "stride 10 px": {"stride_px": 10.0},
    "bfloat16 networks": {"network_precision": "bfloat16"},
    "stride 10 px, bfloat16 networks": {"stride_px": 10.0, "network_precision": "bfloat16"},
    "refine stride 2": {"refine_stride": 2.0},
    "refine canvas 32": {"refine_canvas": 32},
    "coarse refine shapes": _COARSE_REFINE_SHAPES,
    "candidate NMS off": {"candidate_nms_iou": 1.0},
    "candidate NMS 0.3": {"candidate_nms_iou": 0.3},
    "candidate NMS 0.4": {"candidate_nms_iou": 0.4},
    "candidate NMS 0.5": {"candidate_nms_iou": 0.5},
    "candidate NMS 0.7": {"candidate_nms_iou": 0.7},
    "candidate NMS 0.5, max_refine 20": {"candidate_nms_iou": 0.5, "max_refine": 20},
    "candidate NMS 0.5, 2 scales": {"candidate_nms_iou": 0.5, "num_scales": 2},
    "refine canvas 32, coarse refine shapes, candidate NMS 0.5": {
        "refine_canvas": 32,
        "candidate_nms_iou": 0.5,
        **_COARSE_REFINE_SHAPES,
    },
    "refine canvas 32, coarse refine shapes, candidate NMS 0.5, stride 10 px": {
        "refine_canvas": 32,
        "candidate_nms_iou": 0.5,
        "stride_px": 10.0,
        **_COARSE_REFINE_SHAPES,
    },
    "refine canvas 32, coarse refine shapes": {"refine_canvas": 32, **_COARSE_REFINE_SHAPES},
    "refine canvas 32, refine stride 2": {"refine_canvas": 32, "refine_stride": 2.0},
    "coarse search": {
        "stride_px": 10.0,
        "refine_canvas": 32,
        **_COARSE_REFINE_SHAPES,
    },
    "window overlap 0": {"window_overlap": 0.0},
    "window overlap 0, refine canvas 32, coarse refine shapes, candidate NMS 0.3": {
        "window_overlap": 0.0,
        "refine_canvas": 32,
        "candidate_nms_iou": 0.3,
        **_COARSE_REFINE_SHAPES,
    },
    "window overlap 0, refine canvas 32, coarse refine shapes, candidate NMS 0.3, stride 10 px": {
        "window_overlap": 0.0,
        "refine_canvas": 32,
        "candidate_nms_iou": 0.3,
        "stride_px": 10.0,
        **_COARSE_REFINE_SHAPES,
    },
    "2 scales, max_refine 10": {"num_scales": 2, "max_refine": 10},
    "2 scales, refine canvas 32, coarse refine shapes": {
        "num_scales": 2,
        "refine_canvas": 32,
        **_COARSE_REFINE_SHAPES,
    },
}


def run_setting(run_dir, records, overrides: dict) -> dict:
    """One setting's row (``run_settings`` with that setting alone)."""
    return run_settings(run_dir, records, {"setting": overrides})["setting"]


def run_settings(run_dir, records, settings: dict) -> dict:
    """name -> row for each {name: InferenceConfig overrides}, timed image by image in turn.

    Every setting's detector is built (and traced on the first image, untimed) before any is
    timed; then each image goes through every setting, one after another, so that a machine
    whose speed drifts during the run slows every setting alike and the ratios between them
    hold (timed one setting after another, a drift of 2x reads as one setting's cost).
    """
    from dnet_tf.evaluation.runner import ground_truth_of
    from dnet_tf.evaluation.voc_ap import evaluate_detections
    from dnet_tf.inference.detector import load_detector

    detectors = {name: load_detector(run_dir, overrides) for name, overrides in settings.items()}
    jpegs = [pathlib.Path(r.image_path).read_bytes() for r in records]
    for det in detectors.values():
        det.detect_encoded(jpegs[:1])  # tracing, untimed
    dets = {name: [] for name in settings}
    seconds = {name: [] for name in settings}
    evals = {name: [] for name in settings}
    for data in jpegs:
        for name, det in detectors.items():
            t = time.perf_counter()
            res = det.detect_encoded([data])[0]
            seconds[name].append(time.perf_counter() - t)
            dets[name].append(res.detections.arrays())
            evals[name].append(int(res.network_evaluations))
    gts = [ground_truth_of(r) for r in records]
    rows = {}
    for name, det in detectors.items():
        result = evaluate_detections(gts, dets[name], len(det.class_names), 0.5, use_07_metric=True)
        e = np.asarray(evals[name])
        rows[name] = {
            "overrides": settings[name],
            "mAP": float(result.mean_ap),
            "p50_s": float(np.median(seconds[name])),
            "mean_s": float(np.mean(seconds[name])),
            "evaluations_mean": float(e.mean()),
            "evaluations_p50": float(np.median(e)),
            "evaluations_p90": float(np.percentile(e, 90)),
            "evaluations_min": int(e.min()),
            "evaluations_max": int(e.max()),
            "evaluations_histogram": {
                int(v): int(c) for v, c in zip(*np.unique(e, return_counts=True))
            },
        }
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", default=str(REPO / "runs" / "default"))
    p.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    p.add_argument("--split", default="val")
    p.add_argument("--settings", default=";".join(SETTINGS), help="names separated by ';'")
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    p.add_argument("--max_images", type=int, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not (pathlib.Path(args.run_dir) / "config.json").exists():
        print(f"no trained run at {args.run_dir}: run the main job first")
        return 0
    from dnet_tf.data.voc import read_voc_split
    from dnet_tf.training.run_dir import load_run

    names = load_run(args.run_dir).class_names
    records = read_voc_split(args.data, args.split, names)[: args.max_images]
    chosen = args.settings.split(";")
    unknown = [n for n in chosen if n not in SETTINGS]
    if unknown:
        print(f"unknown settings {unknown}; known: {sorted(SETTINGS)}", file=sys.stderr)
        return 2
    rows = run_settings(args.run_dir, records, {n: SETTINGS[n] for n in chosen})
    base = rows.get("default", next(iter(rows.values())))
    print(
        f"run {pathlib.Path(args.run_dir).name}, {args.split} split ({len(records)} images), "
        "VOC2007 11-point mAP; s / image of detect_with_masks on the JPEG, one at a time"
    )
    print(
        format_table(
            ["setting", "mAP", "d mAP", "p50 ms", "mean ms", "evals mean", "p50", "p90", "max"],
            [
                [
                    name,
                    round(r["mAP"], 3),
                    round(r["mAP"] - base["mAP"], 3),
                    round(r["p50_s"] * 1e3),
                    round(r["mean_s"] * 1e3),
                    round(r["evaluations_mean"], 1),
                    r["evaluations_p50"],
                    r["evaluations_p90"],
                    r["evaluations_max"],
                ]
                for name, r in rows.items()
            ],
        )
    )
    out = write_json(f"inference_sweep_{args.split}{args.tag}", {"run": args.run_dir, "rows": rows})
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
