"""Dataset statistics stored with a trained run (run_dir/dataset_stats.json).

The box search of §5.2 slides boxes of 10 aspect ratios "estimated by k-means clustering of the
boxes of the objects in the training data". Here: k-means of w/h in log space (so 2:1 and 1:2 are
equally far from 1:1), initialised at evenly spaced quantiles and iterated to convergence, hence
deterministic; the centres are returned as ratios, ascending.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

# Bin edges of the box-size histogram: mean box side / mean image side, the measure of the box
# search's size fractions (InferenceConfig.size_fractions).
SIZE_BIN_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_ASPECT_RANGE = (0.25, 4.0)  # used, with a warning, when there are no boxes


def kmeans_log_aspect_ratios(aspect_ratios, k: int = 10, iterations: int = 100) -> list:
    """Deterministic 1-D k-means of w/h ratios in log space.

    Args:
      aspect_ratios: float [M] > 0, box width / height.
      k: number of clusters.
    Returns:
      list of k floats (ratios), ascending. With fewer distinct ratios than k, some centres repeat.
    """
    x = np.log(np.asarray(aspect_ratios, np.float64).reshape(-1))
    if x.size == 0:
        raise ValueError("no boxes to cluster")
    if not np.all(np.isfinite(x)):
        raise ValueError("aspect ratios must be finite and > 0")
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
        new = centres.copy()
        for j in range(k):
            members = x[assign == j]
            if members.size:
                new[j] = members.mean()
        if np.allclose(new, centres, atol=1e-12):
            break
        centres = new
    return sorted(float(v) for v in np.exp(centres))


def stats_from_annotations(
    annotations: Sequence[dict], class_names: Sequence[str], num_aspect_ratios: int = 10
) -> dict:
    """Statistics of annotations (see pipeline.read_annotations for the dict layout)."""
    boxes = [a["boxes_image_yxyx"] for a in annotations]
    all_boxes = np.concatenate(boxes + [np.zeros((0, 4), np.float32)]).astype(np.float64)
    bh = all_boxes[:, 2] - all_boxes[:, 0]
    bw = all_boxes[:, 3] - all_boxes[:, 1]
    mean_image_side = np.concatenate(
        [np.full(len(a["boxes_image_yxyx"]), (a["height"] + a["width"]) / 2.0) for a in annotations]
        + [np.zeros(0)]
    )
    ids = np.concatenate(
        [np.asarray(a["class_ids"], np.int64) for a in annotations] + [np.zeros(0, np.int64)]
    )
    if all_boxes.shape[0]:
        aspect = kmeans_log_aspect_ratios(bw / bh, num_aspect_ratios)
    else:
        warnings.warn(
            "no boxes: aspect ratios fall back to a log-spaced range", UserWarning, stacklevel=2
        )
        lo, hi = DEFAULT_ASPECT_RANGE
        aspect = [float(v) for v in np.geomspace(lo, hi, num_aspect_ratios)]
    size = ((bw + bh) / 2.0) / np.maximum(mean_image_side, 1e-9)
    hist, _ = np.histogram(np.clip(size, 0.0, 1.0), bins=SIZE_BIN_EDGES)
    objects_per_image = np.bincount([len(b) for b in boxes]) if boxes else np.zeros(1, np.int64)
    return {
        "aspect_ratios": aspect,
        "num_images": len(annotations),
        "num_boxes": int(all_boxes.shape[0]),
        "class_names": list(class_names),
        "class_counts": {name: int((ids == i).sum()) for i, name in enumerate(class_names)},
        "box_size_histogram": {
            "measure": "mean box side / mean image side",
            "bin_edges": list(SIZE_BIN_EDGES),
            "counts": [int(c) for c in hist],
        },
        "objects_per_image": {str(n): int(c) for n, c in enumerate(objects_per_image)},
        "image_size_px": {
            "min_height": int(min((a["height"] for a in annotations), default=0)),
            "max_height": int(max((a["height"] for a in annotations), default=0)),
            "min_width": int(min((a["width"] for a in annotations), default=0)),
            "max_width": int(max((a["width"] for a in annotations), default=0)),
        },
        "aspect_ratio_range": [float((bw / bh).min()), float((bw / bh).max())]
        if all_boxes.shape[0]
        else [],
    }


def compute_dataset_stats(
    source: str,
    split: str,
    class_names: Sequence[str] | None = None,
    num_aspect_ratios: int = 10,
    on_error: str = "fail",
) -> dict:
    """Statistics of a dataset split: the run directory's dataset_stats.json.

    Args:
      source: VOC root directory or TFRecord glob.
      split: VOC split name (unused for TFRecords).
      class_names: the class list; None: the sorted names found in the data.
      num_aspect_ratios: k of the k-means (SamplerConfig.num_aspect_ratios).
      on_error: the VOC reader's policy for a bad file ("fail" or "skip").
    Returns:
      dict with "aspect_ratios" (k floats, w/h, ascending), "num_images", "num_boxes",
      "class_names", "class_counts" {name: boxes}, "box_size_histogram" {measure, bin_edges,
      counts}, "objects_per_image" {n: images}, "image_size_px", "aspect_ratio_range".
    """
    from dnet_tf.data.pipeline import load_class_names, read_annotations

    if class_names is None:
        class_names = load_class_names(source, split)
    annotations = read_annotations(source, split, class_names, on_error=on_error)
    return stats_from_annotations(annotations, class_names, num_aspect_ratios)


def write_stats(stats: dict, path) -> None:
    """Writes the statistics as JSON (sorted keys, indented)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")


def read_stats(path) -> dict:
    """Reads dataset_stats.json and checks its aspect ratios (positive, ascending)."""
    path = pathlib.Path(path)
    try:
        stats = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read dataset statistics ({e})") from None
    ar = stats.get("aspect_ratios")
    if (
        not isinstance(ar, list)
        or not ar
        or not all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in ar)
    ):
        raise ValueError(
            f"{path}: field 'aspect_ratios' must be a non-empty list of positive numbers"
        )
    if ar != sorted(ar):
        raise ValueError(f"{path}: field 'aspect_ratios' must be ascending")
    return stats
