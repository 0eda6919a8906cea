"""Pascal VOC detection evaluation: per-class average precision (AP) and mAP, in NumPy.

Follows the official devkit (``VOCevaldet.m`` of VOCdevkit 2007-2012, and the Python port
``voc_eval.py``), with these documented points:

* Boxes are continuous image_yxyx ([ymin, xmin, ymax, xmax], pixel (r, c) covers
  [r, r+1) x [c, c+1)). The devkit works on 1-based inclusive pixel boxes and therefore adds 1 to
  every width and height (``iw = min(xmax) - max(xmin) + 1``). Our boxes are continuous, so the
  width of [xmin, xmax) is ``xmax - xmin`` with no +1. A VOC box converted with
  ``dnet_tf.ops.boxes.voc_to_yxyx`` (xmin - 1, xmax) has exactly the devkit's +1 width, so IoU
  values agree with the devkit's on converted VOC boxes.
* A detection matches when IoU >= ``iou_threshold`` (0.5), as in ``VOCevaldet.m``
  (``ovmax >= VOCopts.minoverlap``); the Python port uses ``>`` — the two differ only for IoU
  exactly 0.5.
* Detections of a class are ranked by score, highest first; ties keep input order (image order,
  then order within the image) through a stable sort. The devkit's ``sort`` leaves tie order to
  the sort implementation.
* Each detection is compared with all ground-truth boxes of its class in its image, "difficult"
  ones included; it takes the one with the highest IoU. If that IoU passes the threshold and the
  box is difficult, the detection is ignored (neither true nor false positive). If the box is not
  difficult and not yet taken, the detection is a true positive and takes it; if already taken
  (a duplicate), a false positive. Below the threshold: a false positive. Difficult boxes are
  not counted in the number of positives.
* VOC2007 11-point AP: mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t
  (0 when none). The thresholds are computed as k / 10 so that recall 3/10 == 0.3 compares equal;
  ``np.arange(0, 1.1, 0.1)`` in the Python port gives 0.30000000000000004 and misses it.
* VOC2010+ all-point AP: area under the precision envelope p_interp(r) = max_{r' >= r} p(r'),
  summed over the recall steps.
* AP over a size range (``size_subset``, COCO's rule for "small" objects): ground truth outside
  the range counts as difficult, and a detection outside it that matches no ground truth of the
  range is ignored instead of counted false (field "ignore_unmatched").
* A class with no non-difficult ground truth has no defined AP (the devkit divides by zero);
  here its AP is NaN and it is left out of mAP, which is the mean over the remaining classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from dnet_tf.core import boxes as core_boxes

ELEVEN_POINT_THRESHOLDS = np.arange(11) / 10.0  # recall levels 0, 0.1, ..., 1.0, exactly k/10


@dataclasses.dataclass
class ClassResult:
    """Evaluation of one class.

    Attributes (R = detections of the class not ignored for matching a difficult box):
      ap: average precision in [0, 1]; NaN when num_positives == 0.
      num_positives: non-difficult ground-truth boxes of the class.
      num_detections: detections of the class submitted (ignored ones included).
      scores: float64 [R], scores of the ranked, non-ignored detections, descending.
      tp, fp: bool [R], true/false positive flags in that order.
      recall, precision: float64 [R], cumulative recall tp/num_positives (NaN-free: 0 when
        num_positives == 0) and precision tp/(tp+fp) after each detection.
      image_ids: int64 [R], the index of each ranked detection's image in the evaluated list
        (a detection's tp / fp depends on its own image only: ``bootstrap`` reweighs images).
    """

    ap: float
    num_positives: int
    num_detections: int
    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    image_ids: np.ndarray

    def to_dict(self) -> dict:
        return {
            "ap": _json_float(self.ap),
            "num_positives": self.num_positives,
            "num_detections": self.num_detections,
            "num_true_positives": int(self.tp.sum()),
            "num_false_positives": int(self.fp.sum()),
        }


@dataclasses.dataclass
class VocResult:
    """Evaluation over all classes.

    Attributes:
      per_class: one ClassResult per class id 0..C-1.
      mean_ap: mean of the defined per-class APs (NaN when none is defined).
      use_07_metric: True for the VOC2007 11-point AP, False for the all-point AP.
      iou_threshold: matching threshold used.
      num_images: images evaluated.
    """

    per_class: list
    mean_ap: float
    use_07_metric: bool
    iou_threshold: float
    num_images: int

    @property
    def aps(self) -> np.ndarray:
        """float64 [C], per-class AP (NaN where undefined)."""
        return np.array([c.ap for c in self.per_class], dtype=np.float64)

    def pooled_curve(self) -> tuple:
        """Precision-recall curve of all classes pooled (the "overall" curve of Fig. 4).

        All non-ignored detections of all classes are ranked together by score (stable over class
        order); each keeps the true/false positive flag of its own class's matching.
        Returns:
          (recall, precision), float64 [R_total] each; recall is over all classes' positives.
        """
        scores = (
            np.concatenate([c.scores for c in self.per_class]) if self.per_class else np.zeros(0)
        )
        tp = np.concatenate([c.tp for c in self.per_class]) if self.per_class else np.zeros(0, bool)
        order = np.argsort(-scores, kind="stable")
        npos = sum(c.num_positives for c in self.per_class)
        return _curve(tp[order], ~tp[order], npos)

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        names = (
            list(class_names)
            if class_names is not None
            else [str(i) for i in range(len(self.per_class))]
        )
        if len(names) != len(self.per_class):
            raise ValueError(
                f"class_names has {len(names)} names for {len(self.per_class)} classes"
            )
        return {
            "metric": "VOC2007 11-point" if self.use_07_metric else "VOC2010 all-point",
            "iou_threshold": self.iou_threshold,
            "num_images": self.num_images,
            "mAP": _json_float(self.mean_ap),
            "per_class": {n: c.to_dict() for n, c in zip(names, self.per_class)},
        }


def _json_float(x: float):
    return None if x is None or not np.isfinite(x) else float(x)


def iou_matrix(a_yxyx: np.ndarray, b_yxyx: np.ndarray) -> np.ndarray:
    """Pairwise IoU float64 [N, M] in [0, 1] of continuous boxes [N, 4] and [M, 4] (no +1 on
    widths; see the module docstring); 0 where the union is empty (``dnet_tf.core.boxes``)."""
    a = np.asarray(a_yxyx, dtype=np.float64).reshape(-1, 4)
    return core_boxes.iou(a, np.asarray(b_yxyx, dtype=np.float64).reshape(-1, 4))


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a ranked precision-recall curve.

    Args:
      recall, precision: float [R], cumulative values after each ranked detection.
      use_07_metric: True: VOC2007 11-point interpolation; False: VOC2010+ all-point area.
    Returns:
      AP in [0, 1] (0.0 for an empty curve).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(
            f"recall {recall.shape} and precision {precision.shape} must be equal 1-D shapes"
        )
    if use_07_metric:
        # Sum first, divide once: eleven additions of p / 11 would give 1.0000000000000002
        # for p = 1.
        best = [
            precision[recall >= t].max() if np.any(recall >= t) else 0.0
            for t in ELEVEN_POINT_THRESHOLDS
        ]
        return float(np.sum(best) / len(ELEVEN_POINT_THRESHOLDS))
    # All-point: pad with sentinels, make precision monotonically non-increasing from the right,
    # then sum rectangle areas where recall steps.
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _curve(tp: np.ndarray, fp: np.ndarray, num_positives: int) -> tuple:
    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(fp, dtype=np.float64)
    recall = ctp / num_positives if num_positives > 0 else np.zeros_like(ctp)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision


def _as_array(
    record: Mapping, key: str, where: str, dtype, shape_tail: tuple, default=None
) -> np.ndarray:
    if key not in record:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing field '{key}'")
    arr = np.asarray(record[key], dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape((0,) + shape_tail)
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        expected = "[" + ", ".join(["N"] + [str(s) for s in shape_tail]) + "]"
        raise ValueError(f"{where}: field '{key}' has shape {arr.shape}, expected {expected}")
    return arr


def _check_classes(classes: np.ndarray, num_classes: int, where: str) -> None:
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"{where}: field 'classes' has ids outside [0, {num_classes - 1}]: "
            f"min {classes.min()}, max {classes.max()}"
        )


def evaluate_detections(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> VocResult:
    """Pascal VOC per-class AP and mAP.

    Args:
      ground_truth: one mapping per image with
        "boxes_yxyx": float [N, 4] image_yxyx, "classes": int [N] 0-based class ids,
        "difficult": bool [N] (optional, default all False).
      detections: one mapping per image, same image order, with
        "boxes_yxyx": float [K, 4] image_yxyx, "scores": float [K], "classes": int [K] 0-based,
        "ignore_unmatched": bool [K] (optional, default all False): a detection that is not a
        true positive is ignored instead of counted false (``size_subset``).
      num_classes: C, number of object classes.
      iou_threshold: a detection matches a box when IoU >= this; (0, 1].
      use_07_metric: True: VOC2007 11-point AP (the paper's Table 1, VOC2007 test);
        False: VOC2010+ all-point AP.
    Returns:
      VocResult.
    Raises:
      ValueError: naming the image index and field on malformed input.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"ground_truth has {len(ground_truth)} images but detections has {len(detections)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")

    gts, dets = [], []
    for i, (g, d) in enumerate(zip(ground_truth, detections)):
        gw, dw = f"ground_truth[{i}]", f"detections[{i}]"
        g_boxes = _as_array(g, "boxes_yxyx", gw, np.float64, (4,))
        g_classes = _as_array(g, "classes", gw, np.int64, ())
        g_difficult = _as_array(g, "difficult", gw, bool, (), default=np.zeros(len(g_boxes), bool))
        if not len(g_boxes) == len(g_classes) == len(g_difficult):
            raise ValueError(
                f"{gw}: boxes_yxyx, classes and difficult have different lengths "
                f"({len(g_boxes)}, {len(g_classes)}, {len(g_difficult)})"
            )
        _check_classes(g_classes, num_classes, gw)
        d_boxes = _as_array(d, "boxes_yxyx", dw, np.float64, (4,))
        d_scores = _as_array(d, "scores", dw, np.float64, ())
        d_classes = _as_array(d, "classes", dw, np.int64, ())
        if not len(d_boxes) == len(d_scores) == len(d_classes):
            raise ValueError(
                f"{dw}: boxes_yxyx, scores and classes have different lengths "
                f"({len(d_boxes)}, {len(d_scores)}, {len(d_classes)})"
            )
        d_ignore = _as_array(
            d, "ignore_unmatched", dw, bool, (), default=np.zeros(len(d_boxes), bool)
        )
        if not len(d_boxes) == len(d_scores) == len(d_classes) == len(d_ignore):
            raise ValueError(f"{dw}: field 'ignore_unmatched' has a different length")
        if not np.all(np.isfinite(d_scores)):
            raise ValueError(f"{dw}: field 'scores' has non-finite values")
        _check_classes(d_classes, num_classes, dw)
        gts.append((g_boxes, g_classes, g_difficult))
        dets.append((d_boxes, d_scores, d_classes, d_ignore))

    per_class = [
        _evaluate_class(c, gts, dets, iou_threshold, use_07_metric) for c in range(num_classes)
    ]
    defined = [r.ap for r in per_class if r.num_positives > 0]
    mean_ap = float(np.mean(defined)) if defined else float("nan")
    return VocResult(
        per_class=per_class,
        mean_ap=mean_ap,
        use_07_metric=use_07_metric,
        iou_threshold=float(iou_threshold),
        num_images=len(gts),
    )


def _evaluate_class(cls: int, gts, dets, iou_threshold: float, use_07_metric: bool) -> ClassResult:
    # Ground truth of this class per image, and the flattened detections of this class.
    gt_boxes, gt_difficult = [], []
    num_positives = 0
    for boxes, classes, difficult in gts:
        keep = classes == cls
        gt_boxes.append(boxes[keep])
        gt_difficult.append(difficult[keep])
        num_positives += int(np.count_nonzero(~difficult[keep]))
    image_ids, boxes_l, scores_l, ignore_l = [], [], [], []
    for i, (boxes, scores, classes, ignore_unmatched) in enumerate(dets):
        keep = classes == cls
        image_ids.append(np.full(int(keep.sum()), i, dtype=np.int64))
        boxes_l.append(boxes[keep])
        scores_l.append(scores[keep])
        ignore_l.append(ignore_unmatched[keep])
    image_ids = np.concatenate(image_ids) if image_ids else np.zeros(0, np.int64)
    det_boxes = np.concatenate(boxes_l) if boxes_l else np.zeros((0, 4))
    det_scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    det_ignore = np.concatenate(ignore_l) if ignore_l else np.zeros(0, bool)

    order = np.argsort(-det_scores, kind="stable")
    taken = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    tp = np.zeros(len(order), dtype=bool)
    fp = np.zeros(len(order), dtype=bool)
    ignored = np.zeros(len(order), dtype=bool)
    for rank, k in enumerate(order):
        img = image_ids[k]
        if len(gt_boxes[img]) == 0:
            fp[rank] = True
            continue
        overlaps = iou_matrix(det_boxes[k : k + 1], gt_boxes[img])[0]
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou_threshold:
            if gt_difficult[img][j]:
                ignored[rank] = True
            elif not taken[img][j]:
                tp[rank] = True
                taken[img][j] = True
            else:
                fp[rank] = True  # duplicate detection of an already matched box
        else:
            fp[rank] = True

    ignored |= fp & det_ignore[order]  # outside a size range and matching nothing of it
    kept = ~ignored
    tp, fp = tp[kept], fp[kept]
    recall, precision = _curve(tp, fp, num_positives)
    ap = average_precision(recall, precision, use_07_metric) if num_positives > 0 else float("nan")
    return ClassResult(
        ap=ap,
        num_positives=num_positives,
        num_detections=len(order),
        scores=det_scores[order][kept],
        tp=tp,
        fp=fp,
        recall=recall,
        precision=precision,
        image_ids=image_ids[order][kept],
    )


def size_subset(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    image_hw: Sequence,
    min_side: float = 0.0,
    max_side: float = float("inf"),
) -> tuple:
    """Ground truth and detections restricted to one object size range, for AP over that range
    (COCO's "small": ground truth outside the range is difficult, detections outside it that
    match nothing of the range are ignored).

    Size = sqrt(box area / image area), the box's side relative to the image's (a box of a
    quarter of a square image's side has size 0.25).

    Args:
      ground_truth, detections: as ``evaluate_detections``, per image.
      image_hw: per image (height, width) in px.
      min_side, max_side: the range [min_side, max_side) of sizes kept.
    Returns:
      (ground_truth, detections): new mappings for ``evaluate_detections``.
    """
    if not len(ground_truth) == len(detections) == len(image_hw):
        raise ValueError("size_subset: ground_truth, detections and image_hw differ in length")

    def outside(boxes, hw):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        size = np.sqrt(np.maximum(core_boxes.area(boxes), 0.0) / float(hw[0] * hw[1]))
        return (size < min_side) | (size >= max_side)

    gts, dets = [], []
    for g, d, hw in zip(ground_truth, detections, image_hw):
        g_boxes = np.asarray(g["boxes_yxyx"]).reshape(-1, 4)
        difficult = np.asarray(g.get("difficult", np.zeros(len(g_boxes), bool)), bool)
        gts.append(dict(g, difficult=difficult | outside(g_boxes, hw)))
        dets.append(dict(d, ignore_unmatched=outside(d["boxes_yxyx"], hw)))
    return gts, dets
