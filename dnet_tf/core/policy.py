"""The detection policy: how candidates are scored, ranked and demoted (one definition each).

The paper defines the masks (Eq. (1)), the box scores (Eq. (2)-(3)) and Algorithm 1; it does not
say how to rank detections for precision-recall, how to combine the first-stage and refinement
scores, or what to do with a detection lying inside a better one of its class. These rules are
ours, chosen on validation AP (the README's architecture section gives the numbers), and both
pipelines take them from here:

  * ``confidence``: P(class | box) x clip(Eq. (3) / 5, 0, 1) (``score_mode`` "product"), or
    either factor alone ("classifier", "eq3").
  * ``refined_agreement``: the Eq. (3) score a refined detection is ranked by: the refinement's
    own ("refined"), the mean of the first-stage and refinement scores ("mean"), their
    minimum ("min"), or the first stage's alone ("first": the refinement only moves the box).
  * ``is_candidate``: which of the best ``max_refine`` first-stage boxes go on to the classifier
    and the refinement: every filled slot, or those whose Eq. (3) reaches ``min_candidate_eq3``.
  * ``reported_box``: where a refined detection lies: the refinement's box (the paper), a point
    between it and the first-stage box (``refined_box``, ``refine_blend``), or the first-stage
    box where the refinement's Eq. (3) falls short of it (``refinement_kept``,
    ``refine_accept_margin``).
  * ``refinement_crop``: the image region the refinement looks at: the detection grown by
    ``refine_enlarge`` about its centre (the paper; past the image's edge it reads black), that
    region shifted back inside the image where it fits ("shift"), or cut to the image ("clip").
  * ``part_of``: a detection is a part of another of its class when the other ranks above it (or
    scores at least ``rank_ratio`` of it), is larger and covers at least ``containment`` of its
    area; a part's score is multiplied by ``part_score_factor``.
  * ``INVALID_SCORE``: the score of empty or pruned slots, far below any Eq. (3) score.
  * Class ids: see ``dnet_tf.constants`` (background 0 in the classifier, 1-based exports).

Elementwise rules are written over an array namespace ``xp`` (``dnet_tf.core.xp``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dnet_tf.constants import FULL, NUM_MASK_TYPES
from dnet_tf.core import boxes
from dnet_tf.core.xp import NUMPY

# Score of empty or pruned slots: far below any Eq. (3) score (which lies in [-10, 10]).
INVALID_SCORE = -1e9
# Eq. (3) sums five terms in [-1, 1]: 5 means every mask agrees with the box perfectly.
EQ3_MAX = 5.0
# Best boxes of a refinement crop's search that are rescored with the ring read past the crop's
# edge (the search clips the ring to the crop, which makes boxes hugging its edge look perfect).
REFINE_CANDIDATES = 16

EQ3 = "eq3"  # the score_mode that ranks by the masks alone
SCORE_MODES = ("classifier", EQ3, "product")
REFINE_AGREEMENTS = ("refined", "mean", "min", "first")
# Where the refinement crop lies (InferenceConfig.refine_crop; ``refinement_crop``).
REFINE_CROPS = ("grow", "shift", "clip")
# InferenceConfig.network_precision: the trunks' arithmetic in the inference graph.
NETWORK_PRECISIONS = ("float32", "bfloat16")
# What a classifier training sample's pixels show of its labelled box (TrainConfig.
# shared_head_view, data.pipeline.classifier_samples): "box" = the box itself (the paper's
# classifier, §6); "refinement" = its refinement_crop, what the shared class head sees at
# inference (InferenceConfig.classifier = "shared").
CLASSIFIER_VIEWS = ("box", "refinement")
# Where P(class | crop) comes from (InferenceConfig.classifier): the paper's own network on the
# first-stage box, or a head on the localizer's trunk on the refinement crop.
CLASSIFIERS = ("separate", "shared")
SHARED = "shared"
# Which detections the separate classifier sees (InferenceConfig.classifier_stage): every
# first-stage candidate, on its own box, before the refinement (the paper, Algorithm 1), or only
# the final detections, on their first-stage box, after the refinement and the final NMS.
CANDIDATES, DETECTIONS = "candidates", "detections"
CLASSIFIER_STAGES = (CANDIDATES, DETECTIONS)
# Which of the localizer's masks the box search reads (InferenceConfig.mask_types): all five (the
# paper's Eq. (3)), or the full mask alone (the ablation of §5.1's claim that it cannot separate
# touching objects).
FIVE_MASKS, FULL_MASK_ONLY = "five", "full"
MASK_TYPE_SETS = (FIVE_MASKS, FULL_MASK_ONLY)


def confidence(class_prob, eq3, mode: str, xp=NUMPY):
    """Detection confidence in [0, 1].

    Args:
      class_prob: float32 [...], P(class of the detection | crop of its box).
      eq3: float32 [...], the Eq. (3) score the detection is ranked by.
      mode: one of SCORE_MODES.
    Returns:
      float32 [...].
    """
    if mode == "classifier":
        return class_prob
    agreement = xp.clip(eq3 / EQ3_MAX, 0.0, 1.0)
    if mode == "eq3":
        return agreement
    if mode != "product":
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {mode!r}")
    return class_prob * agreement


def refined_agreement(first_eq3, refined_eq3, mode: str, xp=NUMPY):
    """The Eq. (3) score [...] a refined detection is ranked by, from the first-stage box's and
    the refined box's (both float32 [...])."""
    if mode == "mean":
        return 0.5 * (first_eq3 + refined_eq3)
    if mode == "min":
        return xp.minimum(first_eq3, refined_eq3)
    if mode == "first":
        return first_eq3
    if mode != "refined":
        raise ValueError(f"refine_agreement must be one of {REFINE_AGREEMENTS}, got {mode!r}")
    return refined_eq3


def is_candidate(scores, min_eq3: float):
    """Which first-stage slots [...] (Eq. (3) ``scores``, INVALID_SCORE in empty ones) are sent on
    to the classifier and the refinement: filled ones scoring at least ``min_eq3``. Works on
    NumPy arrays and tensors alike (comparisons only)."""
    filled = scores > INVALID_SCORE / 2
    if min_eq3 <= -2 * EQ3_MAX:  # below any Eq. (3) score: off
        return filled
    return filled & (scores >= min_eq3)


def refined_box(first_yxyx, refined_yxyx, blend: float):
    """The box [..., 4] a refined detection reports: first + blend * (refined - first).

    Args:
      first_yxyx, refined_yxyx: float32 [..., 4], the first-stage and the refinement's box in
        one frame (image_yxyx in both pipelines).
      blend: [0, 1]; 1 = the refinement's box (the paper), 0 = the first-stage box (rescored by
        the refinement only).
    Returns:
      float32 [..., 4]; ``refined_yxyx`` itself for blend 1.
    """
    if blend == 1.0:
        return refined_yxyx
    return first_yxyx + blend * (refined_yxyx - first_yxyx)


def refinement_kept(
    first_yxyx, refined_yxyx, first_eq3, refined_eq3, margin: float, xp=NUMPY, min_area_ratio=0.0
):
    """The refined box [..., 4] where the refinement's Eq. (3) [...] beats the first stage's by
    at least ``margin`` and the refined box keeps at least ``min_area_ratio`` of the first-stage
    box's area, else the first-stage box. The refinement is not trusted where its own masks agree
    less with its box than the first stage's did, nor where it shrank the box onto a part of it
    (a crop about a whole raccoon refined onto its head). margin <= -2 * EQ3_MAX and ratio 0:
    always the refined box (the paper)."""
    keep = None
    if margin > -2 * EQ3_MAX:
        keep = refined_eq3 >= first_eq3 + margin
    if min_area_ratio > 0:
        whole = boxes.area(refined_yxyx, xp) >= min_area_ratio * boxes.area(first_yxyx, xp)
        keep = whole if keep is None else keep & whole
    if keep is None:
        return refined_yxyx
    return xp.where(keep[..., None], refined_yxyx, first_yxyx)


def reported_box(
    first_yxyx, refined_yxyx, first_eq3, refined_eq3, blend, margin, xp=NUMPY, min_area_ratio=0.0
):
    """The box [..., 4] a refined detection reports: ``refined_box`` (the blend), kept where
    ``refinement_kept`` trusts the refinement, else the first-stage box. Both pipelines call
    this; with blend 1, margin -10 and min_area_ratio 0 it is the refinement's box (the paper)."""
    blended = refined_box(first_yxyx, refined_yxyx, blend)
    return refinement_kept(first_yxyx, blended, first_eq3, refined_eq3, margin, xp, min_area_ratio)


def refinement_crop(boxes_yxyx, height, width, enlarge: float, mode: str, xp=NUMPY):
    """The refinement crops [..., 4] image_yxyx of detections ``boxes_yxyx`` [..., 4] image_yxyx
    in images of ``height`` x ``width`` px (scalars or broadcastable to [...]).

    "grow": each box grown by ``enlarge`` about its centre (the paper); a crop past the image's
    edge reads 0 there, which no training crop shows the localizer (they lie inside the image).
    "shift": the grown crop moved along each axis just far enough to lie inside the image, and
    cut to it where it is longer than the image. "clip": the grown crop cut to the image.
    A crop already inside the image is the same in all three.
    """
    grown = boxes.scale_about_center(boxes_yxyx, enlarge, xp)
    if mode == "grow":
        return grown
    if mode == "clip":
        return boxes.clip(grown, height, width, xp)
    if mode != "shift":
        raise ValueError(f"refine_crop must be one of {REFINE_CROPS}, got {mode!r}")
    y0, x0, y1, x1 = (grown[..., i] for i in range(4))
    # start = the crop's start pulled back so that it ends inside, never before 0; the crop keeps
    # its side from there and is cut to the image (a crop longer than the image becomes it).
    sy, sx = y1 - y0, x1 - x0
    ny0 = xp.maximum(xp.minimum(y0, height - sy), 0.0)
    nx0 = xp.maximum(xp.minimum(x0, width - sx), 0.0)
    return boxes.clip(xp.stack([ny0, nx0, ny0 + sy, nx0 + sx], axis=-1), height, width, xp)


def masks_in_use(masks, mask_types: str):
    """The localizer's masks as both stages' merge and box search read them.

    "five": unchanged. "full": the four half masks set to 0, so every halves bracket of Eq. (3)
    is 0 and a box scores S(bb, m_full) - S(ring, m_full) (the box search's planes V = m_top -
    m_bottom and L = m_left - m_right are 0, and so are the outside-half-mask terms).

    Args:
      masks: float32 [..., 5, C] (NumPy array or tensor), mask types on axis -2 in MASK_TYPES
        order.
      mask_types: one of MASK_TYPE_SETS.
    Returns:
      float32 [..., 5, C].
    """
    if mask_types == FIVE_MASKS:
        return masks
    if mask_types != FULL_MASK_ONLY:
        raise ValueError(f"mask_types must be one of {MASK_TYPE_SETS}, got {mask_types!r}")
    full_only = np.zeros([NUM_MASK_TYPES, 1], np.float32)
    full_only[FULL] = 1.0
    return masks * full_only


def part_of(
    boxes_yxyx, scores, classes, valid, containment: float, xp=NUMPY, rank_ratio: float = 1.0
):
    """Which detections are parts of a larger, better detection of their class.

    Detection i is a part when some valid detection j of the same class ranks above it (higher
    score, or an equal score at a lower index; with rank_ratio < 1 also any score_j >= rank_ratio
    * score_i), is larger (area_j > area_i), and contains most of it: area(i ∩ j) >= containment
    * area_i. Ranks are the given scores', so the result does not depend on the order in which
    parts are found; area_j > area_i keeps the relation free of cycles at any rank_ratio.
    Per-class NMS leaves such pairs alone (a head inside a whole animal has a low IoU with it).

    Args:
      boxes_yxyx: float32 [..., K, 4], any frame with equal units on both axes.
      scores: float32 [..., K]; classes: int [..., K]; valid: bool [..., K].
      containment: (0, 1]. rank_ratio: (0, 1], for scores >= 0; 1 = the container must rank
        above the part.
    Returns:
      bool [..., K], True for valid detections that are parts.
    """
    area = boxes.area(boxes_yxyx, xp)  # [..., K]
    inter = boxes.intersection(boxes_yxyx, boxes_yxyx, xp)  # [..., K(i), K(j)]
    index = xp.cumsum(xp.ones_like(scores), axis=-1)  # 1, 2, ..., K: any K, static or not
    si, sj = scores[..., :, None], scores[..., None, :]
    above = (sj > si) | ((sj == si) & (index[..., None, :] < index[..., :, None]))
    if rank_ratio < 1.0:  # a container scoring a little below its part still claims it
        above = above | (sj >= si * np.float32(rank_ratio))
    area_i, area_j = area[..., :, None], area[..., None, :]
    part = (
        valid[..., None, :]
        & (classes[..., :, None] == classes[..., None, :])
        & above
        & (area_j > area_i)
        & (area_i > 0.0)
        & (inter >= containment * area_i)
    )
    return valid & xp.any(part, axis=-1)


def demoted_scores(scores, is_part, factor: float, xp=NUMPY):
    """Scores [..., K] with parts' multiplied by ``factor`` in [0, 1] (1 changes nothing)."""
    return xp.where(is_part, scores * factor, scores)


def check_detector_inputs(class_names: Sequence[str], aspect_ratios: Sequence[float], config):
    """The arguments both pipelines are built from, checked: (class names, aspect ratios).

    Args:
      class_names: C names, in class-id order; C must equal config.model.num_classes.
      aspect_ratios: box-search aspect ratios w / h > 0, at least one.
      config: the run's DetectorConfig (validated here).
    Returns:
      (list of C str, list of float).
    Raises:
      ValueError: naming the mismatch.
    """
    config.validate()
    names = [str(c) for c in class_names]
    if len(names) != config.model.num_classes:
        raise ValueError(
            f"{len(names)} class names given but model.num_classes is {config.model.num_classes}"
        )
    if len(aspect_ratios) < 1 or min(aspect_ratios) <= 0:
        raise ValueError(
            f"aspect_ratios must be a non-empty list of positive w/h values, got {aspect_ratios}"
        )
    return names, [float(a) for a in aspect_ratios]
