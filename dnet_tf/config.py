"""Typed configuration with the paper's numbers as defaults.

Every field carries its unit and valid range in a comment. Each dataclass has ``validate()``,
which raises ``ValueError`` naming the offending field. ``DetectorConfig`` groups them and
round-trips through JSON (``to_dict``/``from_dict``) so a run directory records what it used.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from dnet_tf.core import policy, windows


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"config field '{name}': {msg}")


@dataclasses.dataclass
class ModelConfig:
    """The localizer and classifier networks (paper §4)."""

    num_classes: int = 6  # object classes C (background excluded); >= 1
    input_size: int = 225  # px, side of the square network input (receptive field); 32..1024
    mask_size: int = 24  # d, cells per side of each output mask; 1..input_size
    backbone: str = "paper"  # "paper" (5 conv + 2 FC) or another one, see models.backbones
    # "dense" (the paper's regression layer, no convolutional structure) or "conv" (1x1 convs on the
    # feature map resized to d x d: far fewer parameters; the default, chosen by measured mask IoU
    # and speed in a 10-minute CPU run, see README "Results")
    head: str = "conv"
    dropout: float = 0.3  # fraction dropped before the FC layers during training; [0, 1)
    # channel multiplier of the backbone (1.0 = the paper's 96/256/384/384/256 channels and 4096 FC
    # units); 0.25 by default so that training and inference fit a 2-core CPU; (0, 4]
    width: float = 0.25

    def validate(self) -> ModelConfig:
        _check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        _check(
            32 <= self.input_size <= 1024,
            "input_size",
            f"must be in [32, 1024], got {self.input_size}",
        )
        _check(
            1 <= self.mask_size <= self.input_size,
            "mask_size",
            f"must be in [1, input_size], got {self.mask_size}",
        )
        _check(isinstance(self.backbone, str) and bool(self.backbone), "backbone", "must be a name")
        _check(
            self.head in ("dense", "conv"), "head", f"must be 'dense' or 'conv', got {self.head!r}"
        )
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(0.0 < self.width <= 4.0, "width", f"must be in (0, 4], got {self.width}")
        return self


@dataclasses.dataclass
class LossConfig:
    """The weighted mask loss sum_i (m_i + lambda) (y_i - m_i)^2 (paper §4)."""

    # lambda: weight added to every output; small lambda weighs errors on target-0 cells far less
    # than on target-1 cells (weight lambda vs 1 + lambda). Unitless, > 0. The paper gives no value.
    mask_lambda: float = 0.2

    def validate(self) -> LossConfig:
        _check(self.mask_lambda > 0.0, "mask_lambda", f"must be > 0, got {self.mask_lambda}")
        return self


@dataclasses.dataclass
class SamplerConfig:
    """Training-sample generation (paper §6)."""

    min_crop_fraction: float = 0.1  # minimum crop width as a fraction of image width; (0, 1]
    localizer_positive_fraction: float = 0.4  # share of positive localizer crops; [0, 1]
    positive_coverage: float = (
        0.8  # a positive crop covers >= this fraction of some box's area; (0, 1]
    )
    classifier_positive_fraction: float = 0.4  # share of positive classifier crops; [0, 1]
    classifier_negative_iou: float = 0.2  # negative if Jaccard < this with every box; (0, 1)
    classifier_positive_iou: float = 0.6  # positive if Jaccard >= this with some box; (0, 1]
    max_attempts: int = 64  # rejection-sampling tries per crop before falling back; >= 1
    hflip: bool = True  # random horizontal flip (swaps left/right masks)
    # Eq. (1) halves: "original" = halves of the whole object box, intersected with the crop's
    # cells (the paper, §5.1); "clipped" = halves of the box clipped to the crop. Validation AP
    # (README, Ablations) chose "clipped" in one A/B run each; ops.mask_targets.
    mask_halves: str = "clipped"
    # random brightness / contrast / saturation per crop (data.sampler.photometric_jitter);
    # strength in [0, 1], 0 = off
    photometric: float = 0.0
    num_aspect_ratios: int = 10  # k-means clusters over training-box aspect ratios (w/h); >= 1

    def validate(self) -> SamplerConfig:
        _check(
            0.0 < self.min_crop_fraction <= 1.0,
            "min_crop_fraction",
            f"must be in (0, 1], got {self.min_crop_fraction}",
        )
        for name in ("localizer_positive_fraction", "classifier_positive_fraction"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        _check(
            0.0 < self.positive_coverage <= 1.0,
            "positive_coverage",
            f"must be in (0, 1], got {self.positive_coverage}",
        )
        _check(
            0.0 < self.classifier_negative_iou < 1.0,
            "classifier_negative_iou",
            f"must be in (0, 1), got {self.classifier_negative_iou}",
        )
        _check(
            self.classifier_negative_iou <= self.classifier_positive_iou <= 1.0,
            "classifier_positive_iou",
            "must be in [classifier_negative_iou, 1]",
        )
        _check(self.max_attempts >= 1, "max_attempts", "must be >= 1")
        _check(
            self.mask_halves in ("original", "clipped"),
            "mask_halves",
            f"must be original or clipped; got {self.mask_halves!r}",
        )
        _check(
            0.0 <= self.photometric <= 1.0,
            "photometric",
            f"must be in [0, 1], got {self.photometric}",
        )
        _check(self.num_aspect_ratios >= 1, "num_aspect_ratios", "must be >= 1")
        return self


@dataclasses.dataclass
class InferenceConfig:
    """Algorithm 1 (paper §5): windows, merge, box search, filtering, refinement."""

    num_scales: int = 3  # scales: full image, then windows half the previous size; 1..5
    window_overlap: float = (
        0.2  # minimum overlap of neighbouring windows, fraction of side; [0, 0.9]
    )
    # The window gate (core.windows.windows_to_run): a window of scale s >= 1 goes through the
    # localizer only when the full mask of some class, in the coarser scales' windows already
    # run, exceeds this somewhere over it; a window skipped reads as all-zero masks in the merge.
    # Where the whole image and the half-size windows see nothing, the quarter-size ones are not
    # looked at: the windows' network cost follows the objects. 0 = every window (the paper).
    # 0.1 by validation (README, Ablations: the window gate): synthetic val500 mAP 0.830 -> 0.827
    # (-0.003 [-0.008, +0.002]), network evaluations per image 69.5 -> 57.0 (test: 67.4 -> 53.9,
    # s / image 0.27 -> 0.24); 0.05: -0.002 at 58.7; 0.2 / 0.3: -0.007 / -0.010 at 55.5 / 54.7;
    # raccoon val 0.845 at every gate. [0, 1).
    window_gate: float = 0.1
    # mean box side (w + h) / 2 as a fraction of the mean image side (h + w) / 2; each in (0, 1]
    size_fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    # which of size_fractions each scale's canvas is searched for: f where lo <= f / window side
    # <= hi (core.windows.size_fractions_at_scale); (0, 100) = every size at every scale (the
    # paper). (0.2, 1) (a box no larger than the scale's windows and at least a fifth of one; 15
    # of the 27 (scale, size) pairs) raised validation mAP 0.821 -> 0.839 and touching recall
    # 0.868 -> 0.909, but a single object then also comes out as demoted part boxes found at the
    # finer scales, and it costs 8% more time (more candidates); README, Ablations.
    scale_size_bounds: Sequence[float] = (0.0, 100.0)
    stride_px: float = 5.0  # px in the original image between neighbouring candidate boxes; > 0
    # Eq. (2) full-mask coverage a candidate must exceed to be kept; [0, 1]
    coverage_threshold: float = 0.5
    # the full mask's "opposite" region in Eq. (3): bb grown by this fraction of its height
    # (width) on the top and bottom (left and right), minus bb; (0, 1]
    ring_margin: float = 0.2
    # the localizer's masks both stages' merge and box search read: "five" (the paper's Eq. (3))
    # or "full" (the half masks set to 0: a box scores S(bb, m_full) - S(ring, m_full); the
    # ablation of §5.1's claim that the full mask alone cannot separate touching objects;
    # README, "The paper's claims")
    mask_types: str = "five"
    # detections kept per class per scale after NMS; >= 1. The paper: 5. 8 with the candidate NMS
    # at 0.7 below, by validation (README, Ablations): mAP 0.813 either way, recall of objects
    # touching one of their class 0.826 -> 0.860, small-object mAP 0.661 -> 0.679, network
    # evaluations per image 72.3 -> 69.8. 10 with the 1.8x refinement crop moves validation mAP
    # by less than the noise (synthetic / raccoon 0.810 / 0.893 -> 0.814 / 0.892; README,
    # Ablations): not adopted.
    top_k_per_scale: int = 8
    # which boxes of a (scale, class) canvas become the max_candidates fed to NMS: "top_k" = the
    # best by Eq. (3) (one object's shifted near-copies fill the list and a weaker second object
    # of the class is crowded out), "local_max" = only boxes scoring at least as high as their 8
    # neighbours of the same shape one stride away. Chosen by validation AP (README, Ablations).
    candidate_selection: str = "local_max"
    # Eq. (3) minus this times the half masks found just outside the box (the strip above the box
    # on the top mask, below it on the bottom mask, ...; ops.box_search.outside_half_terms, in
    # [0, 4]): a box inside an object scores ~4 of 5 by Eq. (3), and this is the evidence that
    # the object goes on past it. 0 = the paper's Eq. (3). This weight: the first-stage ranking;
    # refine_outside_halves_weight: the refinement's choice of box in its crop (a refined box
    # that shrinks onto a part of the object). Chosen by validation AP (README, Ablations); [0, 2].
    outside_halves_weight: float = 0.0
    refine_outside_halves_weight: float = 0.0
    # strip mean of a half mask below which that side counts nothing (the mask's blur past an
    # object's edge is no evidence of more object); [0, 1)
    outside_halves_floor: float = 0.0
    # A candidate lying at least this fraction inside a larger, better-ranked candidate of its
    # (scale, class) canvas is dropped before the first-stage NMS (ops.nms.parts_of_better), so
    # the interior boxes of one object do not take the top_k_per_scale slots of a second object.
    # 0 = off (the paper). Chosen by validation AP (README, Ablations); [0, 1].
    candidate_containment: float = 0.9
    max_candidates: int = 100  # best Eq. (3) candidates per class per scale fed to NMS; >= top_k
    nms_iou: float = 0.5  # Jaccard above which a lower-scored box is suppressed; (0, 1]
    # classifier pruning: keep a detection when P(class | crop) >= this; [0, 1]. 0 disables.
    classifier_threshold: float = 0.1
    # which network gives P(class | crop): "separate" = the paper's classifier (own backbone) on
    # the first-stage box, then the localizer on the kept ones' refinement crops (two network
    # evaluations per candidate); "shared" = a class head on the localizer's trunk, run with the
    # masks on the refinement crop in one forward (one evaluation per candidate; needs the run's
    # shared_head.keras, TrainConfig.shared_head_steps). README "Results" compares them.
    classifier: str = "separate"
    # what the separate classifier sees (core.policy.CLASSIFIER_STAGES): "candidates" = each
    # valid first-stage box, and only those it keeps are refined (the paper, Algorithm 1);
    # "detections" = every candidate is refined, the final NMS ranks by Eq. (3) agreement, and
    # only its survivors are classified, each on its first-stage box (pruning and the
    # confidence as before), so the first-stage outputs are ranked by Eq. (3) alone. Applies to
    # classifier "separate" (the shared head classifies each candidate in its refinement
    # forward anyway).
    # "candidates" by validation (README, Speed): mAP within 0.003 either way (synthetic 0.810
    # / 0.809, raccoon 0.893 / 0.890), but the network evaluations per image follow what the
    # classifier prunes: synthetic 70.1 -> 61.8 with "detections" (it prunes almost nothing
    # there, the NMS half), raccoon 51.1 -> 55.2 (it prunes half), and the raccoon recall of
    # isolated objects falls 0.968 -> 0.935 (a box the classifier prunes may first have
    # suppressed a right one in the NMS).
    classifier_stage: str = "candidates"
    # refinement crop = detection grown by this factor about its centre; >= 1. The paper: 1.2.
    # 1.6 by validation mAP (README, Ablations), synthetic / raccoon: 0.765 / 0.599 at 1.2,
    # 0.786 / 0.731 at 1.4, 0.813 / 0.734 at 1.6, 0.806 / 0.789 at 2.0: the crop shows enough
    # around a part to tell it from the whole, and with refine_size_fractions >= 0.5 of the crop
    # the refined box keeps at least 0.8 of the first-stage box's side (it cannot shrink onto a
    # part).
    refine_enlarge: float = 1.6
    # where the grown crop lies when it reaches past the image: "grow" (the paper: as it is, the
    # part outside the image read as 0, which no training crop shows the localizer), "shift"
    # (moved back inside, cut to the image where longer than it) or "clip" (cut to the image);
    # core.policy.refinement_crop. "clip" raised raccoon validation AP 0.776 -> 0.893 (first
    # stage 0.836: the refinement now gains on the photographs) and synthetic validation mAP
    # 0.807 -> 0.810; "shift" 0.890 / 0.808 (README, Ablations).
    refine_crop: str = "clip"
    max_refine: int = 30  # detections per image refined (best first, all classes); >= 1
    # of those, only candidates whose Eq. (3) score reaches this go on (one classifier and one
    # refinement evaluation each); -10 (below any Eq. (3) score) = all of them. Network cost that
    # follows the objects, chosen by validation AP (README, Speed); [-10, 5].
    min_candidate_eq3: float = -10.0
    # An object is found at several scales: before the best max_refine candidates are taken, a
    # class's first-stage boxes overlapping a better one of any scale by more than this Jaccard
    # can be dropped, so the classifier and the refinement see each object about once. (0, 1];
    # 1 turns it off (the paper: each scale's top 5 go on). 0.7 with top_k_per_scale 8 by
    # validation (README, Ablations; crop 1.6): mAP 0.813 (top 5, off), 0.812 (top 5, 0.7),
    # 0.813 (top 8, off; 76.4 evaluations per image), 0.813 (top 8, 0.7; 69.8), 0.812 (top 8,
    # 0.6); 0.5 lost 0.011 to 0.014 with top 5 at crops 1.2 and 1.4.
    candidate_nms_iou: float = 0.7
    # After that NMS, a class's first-stage box lying at least this fraction inside a larger,
    # better-ranked box of its class from any scale is dropped before the best max_refine are
    # taken (core.policy.part_of): an object's interior boxes found at a finer scale would each
    # cost a classifier and a refinement evaluation. candidate_containment does the same within
    # one scale's canvas. 0 = off (the paper). README, Ablations; [0, 1].
    across_scales_containment: float = 0.0
    refine_canvas: int = 48  # cells per side of the refinement crop's search canvas; >= mask_size/2
    refine_stride: float = 1.0  # canvas cells between candidate boxes inside a refinement crop; > 0
    # Box shapes searched inside a refinement crop's square canvas. The crop is the detection grown
    # by refine_enlarge, so a right first-stage box fills 1 / 1.6 = 0.63 of it and looks square:
    # finer steps around there than the image-wide search needs. Mean side as a fraction of the
    # crop's, each in (0, 1]; aspect ratios w/h in the canvas, each > 0 (geometric 0.5 .. 2).
    refine_size_fractions: Sequence[float] = (
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.95,
        1.0,
    )
    refine_aspect_ratios: Sequence[float] = (
        0.5,
        0.552,
        0.61,
        0.673,
        0.743,
        0.82,
        0.906,
        1.0,
        1.104,
        1.219,
        1.346,
        1.486,
        1.641,
        1.811,
        2.0,
    )
    # canvas resolution: one cell is max(stride_px, longest image side / max_canvas_cells) px, so
    # the 5 px stride is one cell and huge images do not blow up the search; >= 8
    max_canvas_cells: int = 128
    # confidence of a detection (the paper defines none): "classifier" = P(class | first-stage box),
    # "eq3" = the box's Eq. (3) score / 5 clipped to [0, 1] (5 = every mask agrees perfectly),
    # "product" = both multiplied
    score_mode: str = "product"
    # the Eq. (3) score a refined detection is ranked by: "refined" = its best box's in the
    # refinement crop (the paper), "mean" = the mean of that and the first-stage box's, "min" = the
    # lower of the two. The crop sees only 1.2x the box, so a first-stage box on part of an object
    # can look whole there; the first-stage score saw the mask go on past it. "mean" by validation
    # AP (README, Results).
    refine_agreement: str = "mean"
    # where a refined detection lies: first-stage box + refine_blend x (refined - first-stage);
    # 1 = the refinement's box (the paper), 0 = the first-stage box ranked with the refinement's
    # agreement. A refinement that drifts onto a part (a raccoon's head) moves only part of the
    # way. Chosen by validation AP (README, Ablations); [0, 1].
    refine_blend: float = 1.0
    # the refined box is kept only where its Eq. (3) on the refinement crop reaches the first-stage
    # box's Eq. (3) plus this margin, else the first-stage box is reported; -10 = always (the
    # paper). Chosen by validation AP (README, Ablations); [-10, 10].
    refine_accept_margin: float = -10.0
    # the refined box is kept only where its area is at least this fraction of the first-stage
    # box's, else the first-stage box is reported: a refinement may not shrink a detection onto
    # a part of it. 0 = always (the paper); [0, 1]. Off by validation AP (README, "Real
    # photographs": -0.006 raccoon, -0.018 synthetic at 0.5).
    refine_min_area_ratio: float = 0.0
    # A final detection lying at least part_containment inside a larger detection of its class
    # that scores at least part_container_ratio of its confidence is taken for a part of that
    # object (a head beside the whole animal; per-class NMS keeps both, their IoU is low) and
    # its confidence is multiplied by part_score_factor.
    # Validation AP chose 0.7 / 0.5 (README, Results); factor 1 turns it off, factor 0 removes
    # the parts from the outputs (validation AP 0.821 -> 0.806: some are true objects inside a
    # larger box of their class). (0, 1] and [0, 1].
    part_containment: float = 0.7
    part_score_factor: float = 0.5
    # the larger detection need only score this fraction of the part's confidence to claim it
    # (1: it must rank above). On 500 synthetic validation images 60 of the 112 part false
    # positives at the top-N operating point outscored the box of the whole object around them.
    # 0.9 by validation (README, Ablations): synthetic val500 / raccoon val mAP 0.826 / 0.840 at
    # 1, 0.829 / - at 0.95, 0.830 / 0.845 at 0.9, 0.827 / 0.845 at 0.8; part false positives
    # per image 0.22 -> 0.16 (synthetic), 0.06 -> 0.03 (raccoon). (0, 1].
    part_container_ratio: float = 0.9
    mask_preview_size: int = (
        96  # cells per side of the merged-mask output of the masks signature; >= 1
    )
    # the arithmetic of the networks' trunks in the graph (models.folding): "float32", or
    # "bfloat16" (the folded trunk computes in bfloat16 with float32 weights; the heads stay
    # float32) for CPUs with AVX512_BF16 or AMX and for GPUs. There the localizer takes about
    # 0.65-0.7 of its float32 time and the masks move by ~1e-3; a CPU without bfloat16 units
    # gains nothing. The paper backbone only; the SavedModel's graph only (the TFLite networks
    # have their own conversions, tflite/). README "Speed" gives the validation mAP beside.
    network_precision: str = "float32"
    max_detections: int = 100  # padded length of the exported outputs; >= 1
    min_score: float = 0.0  # final detections below this confidence are dropped; [0, 1]
    max_image_pixels: int = 40_000_000  # decoded images larger than this are rejected; >= 1
    # The request budget (dnet_tf.inference.budget; README "Reliability"). Each image is brought
    # to at most max_image_side px on its longer side before batching: past input_size x
    # 2^(num_scales - 1) px (900 by default) no first-stage window gains resolution; >= 32.
    max_image_side: int = 1024
    max_images_per_request: int = 16  # images in one request; >= 1
    # padded pixels of one request, images x largest height x largest width after resizing:
    # 8 full-size images (>= TF Serving's max_batch_size in serving/); >= max_image_side^2
    max_request_pixels: int = 8 * 1024 * 1024

    def validate(self) -> InferenceConfig:
        _check(1 <= self.num_scales <= 5, "num_scales", f"must be in [1, 5], got {self.num_scales}")
        _check(
            0.0 <= self.window_overlap <= 0.9,
            "window_overlap",
            f"must be in [0, 0.9], got {self.window_overlap}",
        )
        _check(
            len(self.size_fractions) >= 1 and all(0.0 < f <= 1.0 for f in self.size_fractions),
            "size_fractions",
            "must be a non-empty list of values in (0, 1]",
        )
        _check(
            len(self.scale_size_bounds) == 2
            and 0.0 <= self.scale_size_bounds[0] <= self.scale_size_bounds[1],
            "scale_size_bounds",
            f"must be (lo, hi) with 0 <= lo <= hi, got {list(self.scale_size_bounds)}",
        )
        _check(
            0.0 <= self.window_gate < 1.0,
            "window_gate",
            f"must be in [0, 1), got {self.window_gate}",
        )
        _check(self.stride_px > 0, "stride_px", f"must be > 0, got {self.stride_px}")
        _check(0.0 <= self.coverage_threshold <= 1.0, "coverage_threshold", "must be in [0, 1]")
        _check(0.0 < self.ring_margin <= 1.0, "ring_margin", "must be in (0, 1]")
        _check(
            self.mask_types in policy.MASK_TYPE_SETS,
            "mask_types",
            f"must be one of {list(policy.MASK_TYPE_SETS)}; got {self.mask_types!r}",
        )
        _check(self.top_k_per_scale >= 1, "top_k_per_scale", "must be >= 1")
        _check(
            self.max_candidates >= self.top_k_per_scale,
            "max_candidates",
            "must be >= top_k_per_scale",
        )
        _check(
            self.candidate_selection in ("top_k", "local_max"),
            "candidate_selection",
            f"must be top_k or local_max; got {self.candidate_selection!r}",
        )
        _check(
            0.0 <= self.outside_halves_weight <= 2.0,
            "outside_halves_weight",
            f"must be in [0, 2], got {self.outside_halves_weight}",
        )
        _check(
            0.0 <= self.refine_outside_halves_weight <= 2.0,
            "refine_outside_halves_weight",
            f"must be in [0, 2], got {self.refine_outside_halves_weight}",
        )
        _check(
            0.0 <= self.outside_halves_floor < 1.0,
            "outside_halves_floor",
            f"must be in [0, 1), got {self.outside_halves_floor}",
        )
        _check(
            0.0 <= self.candidate_containment <= 1.0,
            "candidate_containment",
            f"must be in [0, 1], got {self.candidate_containment}",
        )
        _check(
            0.0 <= self.across_scales_containment <= 1.0,
            "across_scales_containment",
            f"must be in [0, 1], got {self.across_scales_containment}",
        )
        _check(0.0 < self.nms_iou <= 1.0, "nms_iou", "must be in (0, 1]")
        _check(0.0 <= self.classifier_threshold <= 1.0, "classifier_threshold", "must be in [0, 1]")
        _check(
            self.classifier in policy.CLASSIFIERS,
            "classifier",
            f"must be one of {list(policy.CLASSIFIERS)}; got {self.classifier!r}",
        )
        _check(
            self.classifier_stage in policy.CLASSIFIER_STAGES,
            "classifier_stage",
            f"must be one of {list(policy.CLASSIFIER_STAGES)}; got {self.classifier_stage!r}",
        )
        _check(self.refine_enlarge >= 1.0, "refine_enlarge", "must be >= 1")
        _check(
            -10.0 <= self.refine_accept_margin <= 10.0,
            "refine_accept_margin",
            f"must be in [-10, 10], got {self.refine_accept_margin}",
        )
        _check(
            0.0 <= self.refine_min_area_ratio <= 1.0,
            "refine_min_area_ratio",
            f"must be in [0, 1], got {self.refine_min_area_ratio}",
        )
        _check(
            0.0 <= self.refine_blend <= 1.0,
            "refine_blend",
            f"must be in [0, 1], got {self.refine_blend}",
        )
        _check(self.max_refine >= 1, "max_refine", "must be >= 1")
        _check(
            -10.0 <= self.min_candidate_eq3 <= 5.0,
            "min_candidate_eq3",
            f"must be in [-10, 5], got {self.min_candidate_eq3}",
        )
        _check(0.0 < self.candidate_nms_iou <= 1.0, "candidate_nms_iou", "must be in (0, 1]")
        _check(self.refine_canvas >= 2, "refine_canvas", "must be >= 2")
        _check(self.refine_stride > 0, "refine_stride", "must be > 0")
        _check(
            len(self.refine_size_fractions) >= 1
            and all(0.0 < f <= 1.0 for f in self.refine_size_fractions),
            "refine_size_fractions",
            "must be a non-empty list of values in (0, 1]",
        )
        _check(
            len(self.refine_aspect_ratios) >= 1 and all(a > 0 for a in self.refine_aspect_ratios),
            "refine_aspect_ratios",
            "must be a non-empty list of values > 0",
        )
        _check(self.max_canvas_cells >= 8, "max_canvas_cells", "must be >= 8")
        _check(
            self.score_mode in policy.SCORE_MODES,
            "score_mode",
            f"must be classifier, eq3 or product; got {self.score_mode!r}",
        )
        _check(
            self.network_precision in policy.NETWORK_PRECISIONS,
            "network_precision",
            f"must be one of {list(policy.NETWORK_PRECISIONS)}; got {self.network_precision!r}",
        )
        _check(
            self.refine_crop in policy.REFINE_CROPS,
            "refine_crop",
            f"must be one of {list(policy.REFINE_CROPS)}; got {self.refine_crop!r}",
        )
        _check(
            self.refine_agreement in policy.REFINE_AGREEMENTS,
            "refine_agreement",
            f"must be one of {list(policy.REFINE_AGREEMENTS)}; got {self.refine_agreement!r}",
        )
        _check(
            0.0 < self.part_containment <= 1.0,
            "part_containment",
            f"must be in (0, 1], got {self.part_containment}",
        )
        _check(
            0.0 <= self.part_score_factor <= 1.0,
            "part_score_factor",
            f"must be in [0, 1], got {self.part_score_factor}",
        )
        _check(
            0.0 < self.part_container_ratio <= 1.0,
            "part_container_ratio",
            f"must be in (0, 1], got {self.part_container_ratio}",
        )
        _check(self.mask_preview_size >= 1, "mask_preview_size", "must be >= 1")
        _check(self.max_detections >= 1, "max_detections", "must be >= 1")
        _check(0.0 <= self.min_score <= 1.0, "min_score", "must be in [0, 1]")
        _check(self.max_image_pixels >= 1, "max_image_pixels", "must be >= 1")
        _check(
            self.max_image_side >= 32, "max_image_side", f"must be >= 32, got {self.max_image_side}"
        )
        _check(
            self.max_images_per_request >= 1,
            "max_images_per_request",
            f"must be >= 1, got {self.max_images_per_request}",
        )
        _check(
            self.max_request_pixels >= self.max_image_side**2,
            "max_request_pixels",
            f"must be >= max_image_side^2 = {self.max_image_side**2} (one image of the largest "
            f"size), got {self.max_request_pixels}",
        )
        return self

    @property
    def windows_per_scale(self) -> tuple:
        """Static window count per scale: n_s^2 with n_s windows per axis at scale s."""
        return windows.windows_per_scale(self.num_scales, self.window_overlap)

    @property
    def size_fractions_per_scale(self) -> tuple:
        """The size fractions searched on each scale's canvas (scale_size_bounds): a tuple of
        num_scales lists."""
        return tuple(
            windows.size_fractions_at_scale(list(self.size_fractions), s, self.scale_size_bounds)
            for s in range(self.num_scales)
        )


@dataclasses.dataclass
class TrainConfig:
    """The paper's recipe: classifier first, then the localizer fine-tuned from it (§6)."""

    seed: int = 0  # random seed for sampling, initialisation and shuffling; >= 0
    batch_size: int = 32  # samples per step (global, across replicas); >= 1
    classifier_steps: int = 600  # optimisation steps for the classifier stage; >= 0
    # optimisation steps for the localizer stage; >= 0. 6,000 by validation mAP (README,
    # Ablations): 0.738 / 0.750 / 0.758 / 0.765 after 1,500 / 3,000 / 4,500 / 6,000 steps.
    localizer_steps: int = 6000
    # optional third stage: steps of the class head on the localizer's frozen trunk
    # (InferenceConfig.classifier = "shared"); 0 = none (the paper's two networks only); >= 0
    shared_head_steps: int = 0
    # what the shared head's training samples show of each labelled box (core.policy
    # CLASSIFIER_VIEWS): "box" = the box (the classifier's samples), "refinement" = its
    # refinement crop (InferenceConfig.refine_enlarge, refine_crop), what the head sees at
    # inference
    shared_head_view: str = "box"
    optimizer: str = "adagrad"  # "adagrad" (the paper's), "adam" or "sgd"
    learning_rate: float = (
        0.01  # initial learning rate (AdaGrad's, measured on the synthetic set); > 0
    )
    steps_per_checkpoint: int = 100  # steps between checkpoints; >= 1
    steps_per_log: int = 20  # steps between TensorBoard scalars; >= 1

    def validate(self) -> TrainConfig:
        _check(self.seed >= 0, "seed", "must be >= 0")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.classifier_steps >= 0, "classifier_steps", "must be >= 0")
        _check(self.localizer_steps >= 0, "localizer_steps", "must be >= 0")
        _check(self.shared_head_steps >= 0, "shared_head_steps", "must be >= 0")
        _check(
            self.shared_head_view in policy.CLASSIFIER_VIEWS,
            "shared_head_view",
            f"must be one of {list(policy.CLASSIFIER_VIEWS)}; got {self.shared_head_view!r}",
        )
        _check(
            self.optimizer in ("adagrad", "adam", "sgd"),
            "optimizer",
            f"must be one of adagrad, adam, sgd; got {self.optimizer!r}",
        )
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")
        _check(self.steps_per_checkpoint >= 1, "steps_per_checkpoint", "must be >= 1")
        _check(self.steps_per_log >= 1, "steps_per_log", "must be >= 1")
        return self


_SEQUENCE_FIELDS = (
    "size_fractions",
    "scale_size_bounds",
    "refine_size_fractions",
    "refine_aspect_ratios",
)


@dataclasses.dataclass
class DetectorConfig:
    """Everything a run needs; stored as ``config.json`` in the run directory."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def validate(self) -> DetectorConfig:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in _SEQUENCE_FIELDS:
            d["inference"][key] = list(getattr(self.inference, key))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        parts: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            sub_cls = {
                "model": ModelConfig,
                "loss": LossConfig,
                "sampler": SamplerConfig,
                "inference": InferenceConfig,
                "train": TrainConfig,
            }[f.name]
            raw = dict(d.get(f.name, {}))
            known = {g.name for g in dataclasses.fields(sub_cls)}
            unknown = set(raw) - known
            if unknown:
                raise ValueError(f"config section '{f.name}': unknown field(s) {sorted(unknown)}")
            for key in _SEQUENCE_FIELDS:
                if key in raw:
                    raw[key] = tuple(raw[key])
            parts[f.name] = sub_cls(**raw)
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str) -> DetectorConfig:
        return cls.from_dict(json.loads(text))


NAMED_CONFIGS = {
    # The paper's numbers; the default.
    "paper": lambda: DetectorConfig(),
    # MobileNetV3-Small (keras.applications) with the conv head. Not smaller or faster here: on
    # the 2-core CPU it takes twice the default's time (TF and TFLite, BENCHMARKS.md) and its
    # localizer is 4.4 MB against 1 MB; kept as the standard mobile architecture, for devices
    # whose delegates are built for it.
    "mobilenet_v3_small": lambda: DetectorConfig(
        model=ModelConfig(backbone="mobilenet_v3_small", head="conv", width=1.0)
    ),
    # The compact configuration: the default with a coarser refinement search, for a run
    # trained with the default ("paper"): each refinement crop searched on a 32-cell canvas every
    # 2 cells (256 positions per shape) instead of 48 cells every cell (2,304). Inference-time
    # knobs only (the networks are the default's). The fastest setting measured within 0.03
    # validation mAP of the default (0.798 against 0.813, README "Speed"); 2 scales lost 0.032
    # (33 network evaluations per image instead of 72), the class head on the localizer's trunk
    # (classifier="shared") 0.040, both together with the coarse search 0.059.
    "paper_coarse_refinement": lambda: DetectorConfig(
        inference=dataclasses.replace(InferenceConfig(), refine_canvas=32, refine_stride=2.0)
    ),
    # The compact configuration of the second round, chosen on 500 synthetic and 32 raccoon
    # validation images (README "Speed"): the default with the first stage's boxes every 10 px
    # instead of the paper's 5, for a run trained with the default. Validation mAP -0.000
    # synthetic (0.826 both), +0.043 raccoon; p50 x0.83-0.85 of the default on the test JPEGs.
    # The fastest setting within 0.03 of the default on both sets: the refinement canvas of
    # paper_coarse_refinement is slower (x0.86-0.89), both together lose 0.048 on raccoon.
    "paper_stride10": lambda: DetectorConfig(
        inference=dataclasses.replace(InferenceConfig(), stride_px=10.0)
    ),
    # The default with the networks' trunks computing in bfloat16 (InferenceConfig.
    # network_precision), for a run trained with the default, on CPUs with AVX512_BF16 or AMX
    # and GPUs: validation mAP 0.827 against 0.827 (500 synthetic images), raccoon 0.842 against
    # 0.845; p50 x0.85 of the default on the 2-core AVX512_BF16 CPU (README "Speed").
    "paper_bfloat16": lambda: DetectorConfig(
        inference=dataclasses.replace(InferenceConfig(), network_precision="bfloat16")
    ),
    # The compact configuration of the third round: paper_stride10 with bfloat16 trunks (the
    # CPUs of paper_bfloat16), for a run trained with the default. Validation mAP 0.827 against
    # 0.827 (500 synthetic images), raccoon 0.855 against 0.845; p50 x0.78-0.83 of the default
    # on the test JPEGs (README "Speed"): the fastest setting measured within 0.03 of it.
    "paper_stride10_bfloat16": lambda: DetectorConfig(
        inference=dataclasses.replace(
            InferenceConfig(), stride_px=10.0, network_precision="bfloat16"
        )
    ),
    # The compact configuration of the fourth round: paper_stride10_bfloat16 with the best 25
    # Eq. (3) boxes per (scale, class) canvas fed to the candidate NMS instead of 100, for a run
    # trained with the default. Validation mAP 0.812 against 0.827 (500 synthetic images; -0.015
    # [-0.031, -0.000]), raccoon 0.850 against 0.845; p50 x0.83 of paper_stride10_bfloat16 on
    # the test JPEGs (README "Speed"): the fastest setting measured within 0.03 of the default.
    # 25 candidates alone cost the float32 default 0.017 (touching recall 0.851 -> 0.824), so
    # the default keeps 100.
    "paper_stride10_bfloat16_candidates25": lambda: DetectorConfig(
        inference=dataclasses.replace(
            InferenceConfig(), stride_px=10.0, network_precision="bfloat16", max_candidates=25
        )
    ),
    # The paper's network at full width with its dense regression head (for accelerators).
    "paper_full": lambda: DetectorConfig(model=ModelConfig(width=1.0, head="dense")),
}


def named_config(name: str) -> DetectorConfig:
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown config name {name!r}; known: {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]().validate()


def from_flags(cls, flags, **overrides):
    """An instance of the dataclass ``cls`` whose fields are read from ``flags`` (an argparse
    Namespace or absl FlagValues) where it has an attribute of the field's name; ``overrides``
    win; fields it lacks keep their defaults."""
    values = {
        f.name: getattr(flags, f.name) for f in dataclasses.fields(cls) if hasattr(flags, f.name)
    }
    return cls(**(values | overrides))
