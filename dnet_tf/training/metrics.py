"""How good are the localizer's masks on held-out crops: the full-mask IoU.

Definition (used by the training summary and the acceptance figure):

  For every crop n and class c, threshold both full masks at 0.5:
      P = { cells (i, j) : predicted full mask y[n, i, j, FULL, c] >= 0.5 }
      T = { cells (i, j) : target full mask    m[n, i, j, FULL, c] >= 0.5 }
  (a target cell is in T when the class's boxes cover at least half of it, Eq. (1)).
  A pair (n, c) is *positive* when T is not empty. Its IoU is |P ∩ T| / |P ∪ T|.
  mean_iou is the mean IoU over all positive pairs (0 pairs -> NaN).

  A pair is *negative* when the target full mask of that class is 0 in every cell (no box of
  the class touches the crop). false_positive_rate is the share of negative pairs whose P is
  not empty. Pairs with a box touching the crop but covering no cell by half are neither.

The crops come from the localizer sampler on the validation split (60% negatives, 40% crops
covering >= 80% of some box), so mean_iou is measured on held-out positive crops.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dnet_tf.constants import FULL

THRESHOLD = 0.5


@dataclasses.dataclass
class MaskIoU:
    """Full-mask agreement over a set of crops (see the module docstring).

    Attributes:
      mean_iou: mean IoU over positive (crop, class) pairs; NaN when there are none.
      num_positive: number of positive pairs.
      false_positive_rate: share of negative pairs with a predicted cell >= 0.5; NaN when none.
      num_negative: number of negative pairs.
    """

    mean_iou: float
    num_positive: int
    false_positive_rate: float
    num_negative: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mask_iou(pred_masks, target_masks, threshold: float = THRESHOLD) -> MaskIoU:
    """Full-mask IoU of predictions against targets.

    Args:
      pred_masks: float [N, d, d, 5, C] localizer outputs in [0, 1].
      target_masks: float [N, d, d, 5, C] Eq. (1) targets in [0, 1].
      threshold: cells >= threshold count as "on" in both.
    Returns:
      MaskIoU.
    Raises:
      ValueError: shapes differ or are not [N, d, d, 5, C].
    """
    pred = np.asarray(pred_masks)
    target = np.asarray(target_masks)
    if pred.shape != target.shape or pred.ndim != 5 or pred.shape[3] != 5:
        raise ValueError(
            f"mask_iou: expected two [N, d, d, 5, C] arrays of the same shape, got "
            f"{pred.shape} and {target.shape}"
        )
    p = pred[:, :, :, FULL, :] >= threshold  # [N, d, d, C]
    t = target[:, :, :, FULL, :] >= threshold
    inter = np.sum(p & t, axis=(1, 2))  # [N, C]
    union = np.sum(p | t, axis=(1, 2))
    positive = np.any(t, axis=(1, 2))
    negative = ~np.any(target[:, :, :, FULL, :] > 0, axis=(1, 2))
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    mean_iou = float(np.mean(inter[positive] / union[positive])) if n_pos else math.nan
    fp_rate = float(np.mean(np.any(p, axis=(1, 2))[negative])) if n_neg else math.nan
    return MaskIoU(
        mean_iou=mean_iou, num_positive=n_pos, false_positive_rate=fp_rate, num_negative=n_neg
    )


def evaluate_localizer(localizer, dataset, num_batches: int) -> MaskIoU:
    """Runs the localizer (inference mode) over batches of a localizer dataset.

    Args:
      localizer: Keras model, images [B, S, S, 3] float32 0..255 -> [B, d, d, 5, C].
      dataset: tf.data.Dataset of (images, masks [B, d, d, 5, C]).
      num_batches: batches taken from the dataset; >= 1.
    Returns:
      MaskIoU over all crops of those batches.
    """
    if num_batches < 1:
        raise ValueError(f"evaluate_localizer: num_batches must be >= 1, got {num_batches}")
    preds, targets = [], []
    for images, masks in dataset.take(num_batches):
        preds.append(np.asarray(localizer(images, training=False)))
        targets.append(np.asarray(masks))
    return mask_iou(np.concatenate(preds), np.concatenate(targets))


def evaluate_classifier(classifier, dataset, num_batches: int) -> dict:
    """Top-1 accuracy of the classifier (inference mode) over batches of a classifier dataset.

    Args:
      dataset: tf.data.Dataset of (images, labels int32 [B] in [0, C]).
    Returns:
      {"accuracy": float, "background_accuracy": float, "object_accuracy": float, "num": int};
      the last two are NaN when the batches hold no sample of that kind.
    """
    if num_batches < 1:
        raise ValueError(f"evaluate_classifier: num_batches must be >= 1, got {num_batches}")
    correct, labels_all = [], []
    for images, labels in dataset.take(num_batches):
        pred = np.argmax(np.asarray(classifier(images, training=False)), axis=-1)
        labels = np.asarray(labels)
        correct.append(pred == labels)
        labels_all.append(labels)
    correct, labels_all = np.concatenate(correct), np.concatenate(labels_all)
    bg = labels_all == 0

    def mean_or_nan(x):
        return float(np.mean(x)) if x.size else math.nan

    return {
        "accuracy": mean_or_nan(correct),
        "background_accuracy": mean_or_nan(correct[bg]),
        "object_accuracy": mean_or_nan(correct[~bg]),
        "num": int(correct.size),
    }
