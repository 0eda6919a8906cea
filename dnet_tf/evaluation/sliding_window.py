"""The paper's sliding-window baseline (§7, Table 1 row "Sliding windows").

The classifier (``[B, S, S, 3]`` float32 0..255 -> ``[B, C + 1]`` softmax, index 0 = background)
is applied to every box of a dense grid; the score of a box for class k is P(class k | crop);
boxes are pruned per class by greedy non-maximum suppression at Jaccard 0.5 with the project's one
NMS rule (``dnet_tf.core.nms``: a box is suppressed above the threshold, so a box at exactly 0.5
survives; the paper says "at least 0.5", and its detector rows and ours use one meaning).

Box shapes (the paper: "8 different aspect ratios and 10 different scales ... The smallest scale is
1/10-th of the image size, while the largest covers the whole image"; it gives no more detail):

* Scale s in {0.1, 0.2, ..., 1.0}: the box's mean side (h + w) / 2 is s times the image's mean
  side (H + W) / 2 — the same size measure as the detector's box search (design §7), extended to
  s = 1.0.
* Aspect ratio r = w / h in 8 values spaced evenly in log between 1/3 and 3
  (``default_aspect_ratios``):
  r_k = 3^((2k - 7) / 7), k = 0..7, i.e. 0.333, 0.457, 0.624, 0.855, 1.170, 1.600, 2.188, 3.0.
  Symmetric under w <-> h, so a transposed image gets the transposed boxes. (An even count leaves
  out r = 1; the nearest ratios are 0.855 and 1.170.)
* So h = 2 s M / (1 + r), w = r h with M = (H + W) / 2. A side longer than the image is clipped
  to it (at s = 1 this gives the whole image for the image's own aspect ratio, and boxes spanning
  the full height or width otherwise); shapes made equal by clipping are counted once.

Positions: along each axis a box of side h slides over [0, H - h] in n = ceil((H - h) / stride) + 1
evenly spaced steps (first box at the edge 0, last flush with the far edge, step <= stride), n = 1
when the box spans the axis. ``stride = stride_px x stride_multiplier`` with the paper's
stride_px = 5. That grid has 165,169 boxes for a 500 x 375 VOC image (the paper: "approximately
150,000"). The paper-size classifier (225 px input, width 1) ran at 10-17 evaluations/s on a
shared 2-core CPU, i.e. 3-4 hours per image, so evaluation runs use ``stride_multiplier`` > 1,
which divides the count by about its square (x8: 3,800 boxes, 4-6 minutes per image there). The
number of boxes actually sent through the classifier is returned as ``network_evaluations``;
nothing is skipped or cached behind that count.

Equal budgets: DetectorNet runs about 72 networks per image on the synthetic set, fewer than the
80 shapes of the paper's grid. ``grid_scales`` (with ``default_aspect_ratios``) gives a smaller
grid of the same range (n scales from 0.1 to the whole image) and
``stride_multiplier_for_budget`` the smallest stride multiplier whose grid has at most a given
number of boxes per image on average over a set of images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from dnet_tf.core.nms import greedy_nms
from dnet_tf.ops.crops import crop_and_resize


def default_aspect_ratios(count: int = 8, max_ratio: float = 3.0) -> tuple:
    """``count`` aspect ratios w / h spaced evenly in log over [1 / max_ratio, max_ratio],
    ascending."""
    if count == 1:
        return (1.0,)
    exps = np.linspace(-1.0, 1.0, count)
    return tuple(float(max_ratio**e) for e in exps)


def grid_scales(count: int = 10, smallest: float = 0.1) -> tuple:
    """``count`` scales spaced evenly from ``smallest`` to 1.0 (the whole image), ascending,
    rounded to 6 decimals; 10 gives the paper's 0.1, 0.2, ..., 1.0.

    Worked: 4 -> 0.1, 0.4, 0.7, 1.0; 1 -> 0.55 (the middle of the range).

    Raises:
      ValueError: count < 1 or smallest outside (0, 1].
    """
    if int(count) != count or count < 1:
        raise ValueError(f"sliding-window scales: the count must be an integer >= 1, got {count}")
    if not 0 < smallest <= 1:
        raise ValueError(f"sliding-window scales: smallest must be in (0, 1], got {smallest}")
    if count == 1:
        return (round((smallest + 1.0) / 2, 6),)
    return tuple(round(float(v), 6) for v in np.linspace(smallest, 1.0, int(count)))


@dataclasses.dataclass
class SlidingWindowConfig:
    """Knobs of the sliding-window baseline."""

    aspect_ratios: Sequence[float] = dataclasses.field(
        default_factory=default_aspect_ratios
    )  # w / h; > 0
    # mean box side (h + w) / 2 as a fraction of the image's (H + W) / 2; each in (0, 1]
    scales: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    stride_px: float = (
        5.0  # px between neighbouring boxes before the multiplier (the paper's 5); > 0
    )
    stride_multiplier: float = 1.0  # the stride actually used is stride_px x this; >= 1
    nms_iou: float = 0.5  # a box is suppressed when its Jaccard with a kept box is > this; (0, 1]
    min_score: float = 0.0  # boxes with class probability below this are dropped before NMS; [0, 1]
    pre_nms_top_k: int = 5000  # best boxes per class entering NMS; >= 1
    max_detections_per_class: int = 100  # boxes kept per class after NMS; >= 1
    batch_size: int = 64  # crops per classifier call; >= 1

    def validate(self) -> SlidingWindowConfig:
        def check(cond, name, msg):
            if not cond:
                raise ValueError(f"sliding-window config field '{name}': {msg}")

        check(
            len(self.aspect_ratios) >= 1 and all(r > 0 for r in self.aspect_ratios),
            "aspect_ratios",
            "must be a non-empty list of positive w / h values",
        )
        check(
            len(self.scales) >= 1 and all(0 < s <= 1 for s in self.scales),
            "scales",
            "must be a non-empty list of values in (0, 1]",
        )
        check(self.stride_px > 0, "stride_px", f"must be > 0, got {self.stride_px}")
        check(
            self.stride_multiplier >= 1,
            "stride_multiplier",
            f"must be >= 1, got {self.stride_multiplier}",
        )
        check(0 < self.nms_iou <= 1, "nms_iou", f"must be in (0, 1], got {self.nms_iou}")
        check(0 <= self.min_score <= 1, "min_score", f"must be in [0, 1], got {self.min_score}")
        check(self.pre_nms_top_k >= 1, "pre_nms_top_k", "must be >= 1")
        check(self.max_detections_per_class >= 1, "max_detections_per_class", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        return self

    @property
    def stride(self) -> float:
        """px between neighbouring box positions (at most; see the module docstring)."""
        return self.stride_px * self.stride_multiplier


def box_shapes(height: int, width: int, cfg: SlidingWindowConfig) -> np.ndarray:
    """Distinct box sizes of the grid.

    Args:
      height, width: image size H, W in px.
    Returns:
      float64 [P, 2] of (h, w) in px, in (scale, aspect ratio) order, duplicates (from clipping to
      the image) removed keeping the first.
    """
    mean_side = (height + width) / 2.0
    shapes, seen = [], set()
    for s in cfg.scales:
        for r in cfg.aspect_ratios:
            h = 2.0 * s * mean_side / (1.0 + r)
            w = r * h
            h, w = min(h, float(height)), min(w, float(width))
            key = (round(h, 6), round(w, 6))
            if key not in seen:
                seen.add(key)
                shapes.append((h, w))
    return np.array(shapes, np.float64).reshape(-1, 2)


def _positions(extent: float, side: float, stride: float) -> np.ndarray:
    """Start coordinates of a box of ``side`` sliding over [0, extent]."""
    room = extent - side
    if room <= 1e-9:
        return np.zeros(1)
    n = int(math.ceil(room / stride - 1e-9)) + 1  # epsilon: exact multiples do not round up
    return np.linspace(0.0, room, n)


def sliding_window_boxes(height: int, width: int, cfg: SlidingWindowConfig) -> np.ndarray:
    """All boxes of the baseline's grid for an H x W image.

    Args:
      height, width: image size in px.
      cfg: SlidingWindowConfig.
    Returns:
      float32 [N, 4] image_yxyx, shape by shape, rows then columns.
    """
    cfg.validate()
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    out = []
    for h, w in box_shapes(height, width, cfg):
        ys = _positions(height, h, cfg.stride)
        xs = _positions(width, w, cfg.stride)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        yy, xx = yy.ravel(), xx.ravel()
        out.append(np.stack([yy, xx, yy + h, xx + w], axis=1))
    return np.concatenate(out).astype(np.float32)


def count_boxes(height: int, width: int, cfg: SlidingWindowConfig) -> int:
    """Number of boxes (= classifier evaluations) for an H x W image, without building them."""
    cfg.validate()
    return int(
        sum(
            len(_positions(height, h, cfg.stride)) * len(_positions(width, w, cfg.stride))
            for h, w in box_shapes(height, width, cfg)
        )
    )


def stride_multiplier_for_budget(
    sizes_hw: Sequence[tuple], cfg: SlidingWindowConfig, budget: float
) -> float:
    """The smallest stride multiplier >= 1 whose grid has at most ``budget`` boxes per image,
    on average over images of sizes ``sizes_hw`` (the other knobs of ``cfg`` kept).

    The count does not grow with the stride, so a bisection finds the step where it falls to the
    budget; the result is that step's multiplier to a relative 1e-6 (from above).
    Worked: one 100 x 100 image, one 50 px square shape (scale 0.5, ratio 1), 5 px stride: a
    box slides over 50 px in ceil(50 / (5 m)) + 1 steps per axis; budget 9 boxes = 3 x 3 steps
    -> m = 5 (a 25 px stride); budget 8 -> 2 x 2 steps -> m = 10.

    Args:
      sizes_hw: (height, width) px of each image, at least one.
      cfg: SlidingWindowConfig (its stride_multiplier is ignored).
      budget: boxes (= classifier evaluations) per image, > 0.
    Returns:
      float multiplier >= 1.
    Raises:
      ValueError: no images, a budget <= 0, or a budget below the grid's least count (every
        shape at its first and last position on each axis): fewer scales or aspect ratios.
    """
    sizes = [(int(h), int(w)) for h, w in sizes_hw]
    if not sizes or budget <= 0:
        raise ValueError(f"needs at least one image size and a budget > 0, got {budget}")

    def mean_count(multiplier):
        grid = dataclasses.replace(cfg, stride_multiplier=multiplier)
        return sum(count_boxes(h, w, grid) for h, w in sizes) / len(sizes)

    if mean_count(1.0) <= budget:
        return 1.0
    # At a stride of the longest side every shape has at most 2 positions per axis: the least.
    hi = max(1.0, max(max(h, w) for h, w in sizes) / cfg.stride_px)
    least = mean_count(hi)
    if least > budget:
        raise ValueError(
            f"budget {budget:g} boxes per image is below the grid's least count {least:g} "
            f"({len(cfg.scales)} scales x {len(cfg.aspect_ratios)} aspect ratios): use fewer"
        )
    lo = 1.0
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        if mean_count(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


class SlidingWindowDetector:
    """Runs the baseline with one classifier.

    Args:
      classifier: keras.Model [B, S, S, 3] float32 0..255 -> [B, C + 1] softmax (0 = background).
      cfg: SlidingWindowConfig.
    """

    def __init__(self, classifier, cfg: SlidingWindowConfig | None = None):
        self.cfg = (cfg or SlidingWindowConfig()).validate()
        shape = classifier.input_shape
        if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"classifier input must be [B, S, S, 3], got {shape}")
        self.input_size = int(shape[1])
        self.num_classes = int(classifier.output_shape[-1]) - 1
        if self.num_classes < 1:
            raise ValueError(
                f"classifier output must be [B, C + 1] with C >= 1, got {classifier.output_shape}"
            )
        size = self.input_size

        # reduce_retracing: image sizes and last-batch sizes vary; one generic trace serves them.
        @tf.function(reduce_retracing=True)
        def score(image, boxes):
            # Affine crops with half-pixel-centre sampling (dnet_tf.ops.crops); grid boxes lie
            # inside.
            crops = crop_and_resize(
                image[None], boxes, tf.zeros(tf.shape(boxes)[:1], tf.int32), size
            )
            return classifier(crops, training=False)

        self._score = score

    def warm_up(self) -> None:
        """Traces the scoring graph outside any timing: two calls of different shapes leave the
        shape-generic trace that every later image uses (``reduce_retracing``)."""
        for side, n in ((self.input_size, 1), (self.input_size + 3, 2)):
            self._score(
                tf.zeros([side, side + 1, 3], tf.float32), tf.constant([[0.0, 0.0, 1.0, 1.0]] * n)
            )

    def class_probabilities(self, image: np.ndarray) -> tuple:
        """Classifier probabilities for every grid box of one image.

        Args:
          image: uint8 or float [H, W, 3] RGB, values 0..255.
        Returns:
          (boxes float32 [N, 4] image_yxyx, probabilities float32 [N, C + 1]).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
        boxes = sliding_window_boxes(image.shape[0], image.shape[1], self.cfg)
        pixels = tf.constant(image, tf.float32)
        probs = [
            self._score(pixels, tf.constant(boxes[i : i + self.cfg.batch_size])).numpy()
            for i in range(0, len(boxes), self.cfg.batch_size)
        ]
        return boxes, np.concatenate(probs).astype(np.float32)

    def detect(self, image: np.ndarray) -> dict:
        """Detections of one image.

        Args:
          image: uint8 or float [H, W, 3] RGB, values 0..255.
        Returns:
          dict with "boxes_yxyx" float32 [K, 4] image_yxyx, "scores" float32 [K] (classifier
          probability of the class), "classes" int32 [K] 0-based, sorted by score (descending);
          "network_evaluations": int, crops sent through the classifier; "seconds": wall time.
        """
        start = time.perf_counter()
        boxes, probs = self.class_probabilities(image)
        cfg = self.cfg
        out_boxes, out_scores, out_classes = [], [], []
        for k in range(self.num_classes):
            scores = probs[:, k + 1]
            idx = np.flatnonzero(scores >= cfg.min_score)
            if idx.size > cfg.pre_nms_top_k:
                idx = idx[np.argsort(-scores[idx], kind="stable")[: cfg.pre_nms_top_k]]
            keep = idx[
                greedy_nms(boxes[idx], scores[idx], cfg.max_detections_per_class, cfg.nms_iou)
            ]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_classes.append(np.full(len(keep), k, np.int32))
        all_scores = np.concatenate(out_scores)
        order = np.argsort(-all_scores, kind="stable")
        return {
            "boxes_yxyx": np.concatenate(out_boxes).reshape(-1, 4)[order].astype(np.float32),
            "scores": all_scores[order].astype(np.float32),
            "classes": np.concatenate(out_classes)[order].astype(np.int32),
            "network_evaluations": int(len(boxes)),
            "seconds": time.perf_counter() - start,
        }


def sliding_window_detect(
    classifier, images: Sequence[np.ndarray], cfg: SlidingWindowConfig | None = None
) -> list:
    """The baseline on a list of images; see ``SlidingWindowDetector.detect`` for each dict."""
    detector = SlidingWindowDetector(classifier, cfg)
    return [detector.detect(im) for im in images]
