"""Is one variant's mAP above another's by more than the split's noise? A paired bootstrap.

Two variants evaluated on the same images differ by a mAP difference that partly reflects which
images the split happens to hold: a choice of 100 validation images can show +0.018 where 500
show -0.004. The paired bootstrap (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993,
ch. 16) draws the split's images with replacement, the same draw for both variants, and
recomputes both mAPs on each draw; the spread of the difference over the draws is its
uncertainty. The interval is the normal one, the difference on the split plus or minus z
bootstrap standard errors (z = 1.645 for 90%): the 11-point AP is a step function of the recall,
so the draws' differences can be skewed away from the split's own (a class whose recall sits just
above a step on the split), and a percentile interval then need not contain the difference it is
about.

Why it is cheap and exact: VOC matching (``voc_ap``) decides whether a detection is a true
positive from the better detections of its own image only, so each detection's label does not
depend on which other images are drawn. A draw is then a weight per image (how often it was
drawn) on each class's ranked list, and the AP is the same rule (``voc_ap.average_precision``)
on the weighted cumulative counts. A drawn image's copies tie on every score; merging them into
one weighted step leaves both the 11-point and the all-point AP unchanged (a true positive's
copies raise recall and precision together, a false positive's copies leave recall where it
was), which ``tests/test_eval_bootstrap.py`` checks against the copies laid out image by image.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from dnet_tf.evaluation.voc_ap import VocResult, average_precision, evaluate_detections

DEFAULT_SAMPLES = 1000
DEFAULT_INTERVAL = 0.9  # the interval's coverage: delta -/+ 1.645 standard errors


@dataclasses.dataclass
class PairedDifference:
    """mAP(b) - mAP(a) on the split, and over the bootstrap draws.

    Attributes:
      delta: the difference on the split as it is.
      standard_error: the standard deviation of the draws' differences.
      low, high: delta -/+ z * standard_error, z the normal quantile of the central
        ``interval`` share (1.645 for 0.9).
      p_better: share of draws where b's mAP is above a's (ties count half).
      samples, interval, seed: the draws' number, the interval's share, the generator's seed.
    """

    delta: float
    standard_error: float
    low: float
    high: float
    p_better: float
    samples: int
    interval: float
    seed: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def positives_per_image(ground_truth: Sequence[Mapping], num_classes: int) -> np.ndarray:
    """float64 [C, N]: non-difficult ground-truth boxes of each class in each image."""
    out = np.zeros((num_classes, len(ground_truth)))
    for i, g in enumerate(ground_truth):
        classes = np.asarray(g["classes"], np.int64).reshape(-1)
        difficult = np.asarray(g.get("difficult", np.zeros(len(classes), bool)), bool).reshape(-1)
        np.add.at(out[:, i], classes[~difficult], 1.0)
    return out


def weighted_map(result: VocResult, positives: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """mAP of each draw.

    Args:
      result: ``evaluate_detections`` on the split (its per-class ranked lists and image ids).
      positives: float64 [C, N] (``positives_per_image``).
      weights: float64 [S, N], how often each image is in each draw (all ones: the split).
    Returns:
      float64 [S]: the mean over the classes with a positive in the draw (NaN where none has).
    """
    weights = np.asarray(weights, np.float64)
    aps = np.full((weights.shape[0], len(result.per_class)), np.nan)
    for c, cls in enumerate(result.per_class):
        num_pos = weights @ positives[c]  # [S]
        w = weights[:, cls.image_ids]  # [S, R]
        ctp = np.cumsum(w * cls.tp, axis=1)
        cfp = np.cumsum(w * cls.fp, axis=1)
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        for s in np.flatnonzero(num_pos > 0):
            aps[s, c] = average_precision(ctp[s] / num_pos[s], precision[s], result.use_07_metric)
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(aps)
        return np.where(
            defined.any(axis=1), np.nansum(aps, axis=1) / np.maximum(defined.sum(axis=1), 1), np.nan
        )


def paired_bootstrap(
    ground_truth: Sequence[Mapping],
    detections_a: Sequence[Mapping],
    detections_b: Sequence[Mapping],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    samples: int = DEFAULT_SAMPLES,
    interval: float = DEFAULT_INTERVAL,
    seed: int = 0,
) -> PairedDifference:
    """The paired bootstrap of mAP(b) - mAP(a) over the images (module docstring).

    Args:
      ground_truth, detections_a, detections_b: per image, as ``voc_ap.evaluate_detections``
        takes them (the same images in the same order for both variants).
      num_classes, iou_threshold, use_07_metric: as ``evaluate_detections``.
      samples: draws, >= 1; interval: in (0, 1); seed: NumPy generator seed, >= 0.
    Raises:
      ValueError: the lists differ in length or a knob is out of range (naming it).
    """
    if not len(ground_truth) == len(detections_a) == len(detections_b):
        raise ValueError(
            f"ground truth, detections_a and detections_b must cover the same images, got "
            f"{len(ground_truth)}, {len(detections_a)} and {len(detections_b)}"
        )
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must be in (0, 1), got {interval}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    results = [
        evaluate_detections(ground_truth, d, num_classes, iou_threshold, use_07_metric)
        for d in (detections_a, detections_b)
    ]
    n = len(ground_truth)
    positives = positives_per_image(ground_truth, num_classes)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=samples)
    a, b = (weighted_map(r, positives, draws) for r in results)
    diff = b - a
    delta = float(results[1].mean_ap - results[0].mean_ap)
    standard_error = float(np.nanstd(diff, ddof=1)) if samples > 1 else 0.0
    z = statistics.NormalDist().inv_cdf(0.5 + interval / 2.0)
    return PairedDifference(
        delta=delta,
        standard_error=standard_error,
        low=delta - z * standard_error,
        high=delta + z * standard_error,
        p_better=float(np.nanmean((diff > 0) + 0.5 * (diff == 0))),
        samples=int(samples),
        interval=float(interval),
        seed=int(seed),
    )
