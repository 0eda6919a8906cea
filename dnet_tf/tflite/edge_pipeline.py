"""The detector around two networks, in NumPy: the reference for a mobile port.

Edge teams convert only the networks (``dnet_tf.tflite.convert``); everything else of
Algorithm 1 runs on the device around the interpreter. ``EdgePipeline.detect`` is that part,
step for step the SavedModel's graph (``dnet_tf.inference.module.DetectorModule.detect``) for one
image, with NumPy in place of TensorFlow (``dnet_tf.tflite.edge_ops``):

  1. windows     the full image, then windows half the size of the previous scale's, neighbours
                 overlapping by ``window_overlap`` of the side (1 + 9 + 25 = 35 for 3 scales).
  2. localizer   each window cropped and resized to S x S, one batched network call; with the
                 window gate (``window_gate`` > 0) scale by scale, a finer window only where
                 the coarser scales' full masks over it pass the gate (the rest read as 0).
  3. merge       per scale, each window's masks resized onto its extent of a canvas (one cell =
                 max(stride_px, longest side / max_canvas_cells) pixels) and merged by max.
  4. search      Eq. (3) box search on each scale's canvas, every class; candidates need Eq. (2)
                 full-mask coverage > coverage_threshold; per-class NMS keeps top_k_per_scale.
  5. candidates  the best max_refine first-stage boxes of all classes and scales.
  6. classifier  P(class | crop of the box); kept when >= classifier_threshold (classifier_stage
                 "detections": after step 8's NMS instead, on its survivors' first-stage boxes).
  7. refinement  each kept box grown by refine_enlarge, cropped, through the localizer once; its own
                 class's masks resized to refine_canvas x refine_canvas; the best 16 Eq. (3)
                 boxes rescored with the ring read past the crop's edge; the best one kept.
  8. output      confidence (score_mode: classifier probability, Eq. (3) / 5, or both
                 multiplied), per-class NMS, boxes normalized to the image; the first-stage
                 boxes with their own confidence alongside.

The networks are "network functions": float32 [N, S, S, 3] RGB pixel values 0..255 -> float32
NumPy outputs (localizer [N, d, d, 5, C] masks, classifier [N, C + 1] probabilities). Use
``convert.keras_network(model)`` for Keras models and ``convert.TFLiteNetwork(path)`` for .tflite
files; any callable with that contract works (a device's own interpreter binding, a fake).

As in the graph, only the candidates that exist go through the classifier (fewer valid
first-stage boxes than max_refine leave padding slots) and only those it keeps through the
refinement; ``network_evaluations`` counts what was actually run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from dnet_tf import constants
from dnet_tf.config import DetectorConfig
from dnet_tf.core import policy, windows
from dnet_tf.core import search as search_rules
from dnet_tf.core.detections import Detections
from dnet_tf.core.policy import INVALID_SCORE
from dnet_tf.tflite import edge_ops

NetworkFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class FirstStage:
    """Stage-1 detections of one image, all classes; n = num_scales * top_k_per_scale per class.

    boxes_image_yxyx float32 [C, n, 4]; scores float64 [C, n] Eq. (3) (INVALID_SCORE for empty
    slots); valid bool [C, n].
    """

    boxes_image_yxyx: np.ndarray
    scores: np.ndarray
    valid: np.ndarray


@dataclasses.dataclass
class Candidates:
    """The R = max_refine best first-stage detections over all classes (fixed length, padded)."""

    boxes_image_yxyx: np.ndarray  # float32 [R, 4]
    classes: np.ndarray  # int64 [R], 0-based
    scores: np.ndarray  # float64 [R], Eq. (3)
    valid: np.ndarray  # bool [R]


class EdgePipeline:
    """Algorithm 1 for one image around two network functions.

    Args:
      localizer: network function [N, S, S, 3] -> [N, d, d, 5, C].
      classifier: network function [N, S, S, 3] -> [N, C + 1] (0 = background).
      class_names: C names in class-id order.
      aspect_ratios: box-search aspect ratios (w / h) of the run (dataset_stats.json).
      config: the run's DetectorConfig (model sizes and every inference knob).
    Raises:
      ValueError: InferenceConfig.classifier is "shared" (not supported here).
    """

    def __init__(
        self,
        localizer: NetworkFn,
        classifier: NetworkFn,
        class_names: Sequence[str],
        aspect_ratios: Sequence[float],
        config: DetectorConfig,
    ):
        if config.inference.classifier == policy.SHARED:
            raise ValueError(
                "config field 'classifier': the edge pipeline runs the separate classifier only "
                "(set InferenceConfig.classifier = 'separate'); the shared head runs in the "
                "SavedModel graph"
            )
        self.class_names, self.aspect_ratios = policy.check_detector_inputs(
            class_names, aspect_ratios, config
        )
        self.num_classes = len(self.class_names)
        self.localizer = localizer
        self.classifier = classifier
        self.config = config
        self.windows_per_scale = config.inference.windows_per_scale

    # ------------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> dict:
        """Detections of one image, in the SavedModel's output layout without the batch axis.

        Args:
          image: [H, W, 3] RGB, uint8 or float pixel values 0..255.
        Returns:
          dict, K = max_detections: num_detections float; detection_boxes float32 [K, 4]
          normalized yxyx; detection_scores float32 [K]; detection_classes float32 [K] (1-based,
          0 for padding); detection_class_names list of K str ("" for padding); the same five under
          first_stage_* (before refinement); network_evaluations int (network calls actually run).
        """
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
        cfg = self.config.inference
        size = np.array(image.shape[:2], np.float32)  # (h, w)
        evaluations = 0

        # 1-2. Windows through the localizer (with the window gate: scale by scale, a finer
        # window only where the coarser scales' full masks over it pass the gate).
        unit_windows, _ = windows.unit_windows(cfg.num_scales, cfg.window_overlap)
        windows_image_yxyx = unit_windows * np.concatenate([size, size])[None, :]
        if cfg.window_gate > 0:
            window_masks, run = self._localize_gated(image, windows_image_yxyx)
            evaluations += run
        else:
            window_masks = self._localize(image, windows_image_yxyx)  # [N, d, d, 5, C]
            evaluations += len(windows_image_yxyx)

        # 3-4. Merge and search per scale.
        first = self.first_stage(window_masks, size)
        cand = self.top_candidates(first)

        # 6. Classifier pruning, on the valid candidates only (classifier_stage "candidates";
        # with "detections" every valid candidate is refined and the classifier comes last).
        late = cfg.classifier_stage == policy.DETECTIONS
        class_prob = np.zeros(len(cand.valid), np.float32)
        run = np.flatnonzero(cand.valid)
        if run.size and not late:
            class_prob[run] = self._classify(image, cand.boxes_image_yxyx[run], cand.classes[run])
            evaluations += run.size
        kept = cand.valid if late else cand.valid & (class_prob >= cfg.classifier_threshold)
        # 7. Refinement, of the kept candidates only (pruned ones never reach the outputs).
        run = np.flatnonzero(kept)
        refined_image_yxyx = np.zeros_like(cand.boxes_image_yxyx)
        refined_eq3 = np.full(len(cand.valid), INVALID_SCORE)
        if run.size:
            refined_image_yxyx[run], refined_eq3[run] = self._refine(
                image, size, cand.boxes_image_yxyx[run], cand.classes[run]
            )
            evaluations += run.size

        # 8. Outputs.
        refined_image_yxyx = policy.reported_box(
            cand.boxes_image_yxyx,
            refined_image_yxyx,
            cand.scores,
            refined_eq3,
            cfg.refine_blend,
            cfg.refine_accept_margin,
            min_area_ratio=cfg.refine_min_area_ratio,
        )
        agreement = self._refined_agreement(cand.scores, refined_eq3)
        if late:
            out, classified = self._classified_outputs(
                image, cand, refined_image_yxyx, agreement, size
            )
            evaluations += classified
            # No classifier probability for the first-stage boxes: ranked by Eq. (3) alone.
            first_scores = policy.confidence(None, np.float32(cand.scores), policy.EQ3)
        else:
            refined_scores = self._confidence(class_prob, agreement)
            out = self._final_outputs(refined_image_yxyx, refined_scores, cand.classes, kept, size)
            first_scores = self._confidence(class_prob, cand.scores)
        first_out = self._final_outputs(
            cand.boxes_image_yxyx, first_scores, cand.classes, kept, size
        )
        for key, value in first_out.items():
            out["first_stage_" + key.replace("detection_", "")] = value
        out["network_evaluations"] = evaluations
        return out

    # ------------------------------------------------------------------------------------------
    # Stages.

    def _localize(self, image: np.ndarray, boxes_image_yxyx: np.ndarray) -> np.ndarray:
        """Crops [M, 4] image_yxyx boxes of the image and runs the localizer: [M, d, d, 5, C]
        (the half masks 0 with ``mask_types`` "full", ``policy.masks_in_use``)."""
        s, d = self.config.model.input_size, self.config.model.mask_size
        patches = edge_ops.crop_and_resize(image, boxes_image_yxyx, s)
        masks = np.asarray(self.localizer(patches), np.float32)
        want = (len(boxes_image_yxyx), d, d, constants.NUM_MASK_TYPES, self.num_classes)
        if masks.shape != want:
            raise ValueError(f"localizer returned shape {masks.shape}, expected {want}")
        return policy.masks_in_use(masks, self.config.inference.mask_types)

    def _localize_gated(self, image: np.ndarray, windows_image_yxyx: np.ndarray):
        """The windows [N, 4] image_yxyx through the localizer scale by scale under the window
        gate (``windows.windows_to_run``): (masks float32 [N, d, d, 5, C], zeros for a window
        not run; the number of windows run)."""
        cfg = self.config.inference
        d = self.config.model.mask_size
        regions = windows.coarser_cells(cfg.num_scales, cfg.window_overlap, d)
        masks = np.zeros(
            (len(windows_image_yxyx), d, d, constants.NUM_MASK_TYPES, self.num_classes), np.float32
        )
        start, run = 0, 0
        for s, n in enumerate(self.windows_per_scale):
            if s == 0:
                which = np.arange(n)
            else:
                coarser = masks[:start, :, :, constants.FULL].max(axis=-1)  # [n_<s, d, d]
                peaks = windows.window_peaks(coarser, *regions[s - 1])
                which = np.flatnonzero(windows.windows_to_run(peaks, cfg.window_gate))
            if which.size:
                masks[start + which] = self._localize(image, windows_image_yxyx[start + which])
            run += which.size
            start += n
        return masks, run

    def canvas_cell_px(self, size: np.ndarray) -> np.float32:
        """Image pixels per canvas cell for an image of size (h, w): max(stride, longest /
        cells)."""
        cfg = self.config.inference
        return max(
            np.float32(cfg.stride_px), np.float32(size.max()) / np.float32(cfg.max_canvas_cells)
        )

    def first_stage(self, window_masks: np.ndarray, size: np.ndarray) -> FirstStage:
        """Merge and search of one image, every scale and class.

        Args:
          window_masks: float32 [N, d, d, 5, C], the localizer's masks of the image's windows.
          size: float32 [2], (h, w) of the image.
        """
        cfg = self.config.inference
        c, d = self.num_classes, self.config.model.mask_size
        cell_px = self.canvas_cell_px(size)
        extent_cells = (size / cell_px).astype(np.float32)  # the image's (h, w) in canvas cells
        canvas_hw = np.maximum(np.ceil(extent_cells - np.float32(1e-4)).astype(np.int64), 1)
        unit_windows, _ = windows.unit_windows(cfg.num_scales, cfg.window_overlap)
        windows_cell_yxyx = unit_windows * np.concatenate([extent_cells, extent_cells])[None, :]
        mean_side = np.float32((extent_cells[0] + extent_cells[1]) / np.float32(2))
        shapes_per_scale = [
            edge_ops.box_shapes(mean_side, f, self.aspect_ratios)
            for f in cfg.size_fractions_per_scale
        ]
        stride_cells = np.float32(cfg.stride_px) / cell_px
        flat_masks = window_masks.reshape(-1, d, d, constants.NUM_MASK_TYPES * c)

        parts = {"boxes": [], "scores": [], "valid": []}
        start = 0
        for n, shapes_hw in zip(self.windows_per_scale, shapes_per_scale):
            canvas = edge_ops.paste_max(
                flat_masks[start : start + n],
                windows_cell_yxyx[start : start + n],
                int(canvas_hw[0]),
                int(canvas_hw[1]),
            )
            start += n
            canvas = canvas.reshape(canvas_hw[0], canvas_hw[1], constants.NUM_MASK_TYPES, c)
            found = self._search_active(canvas, shapes_hw, stride_cells)
            scores = np.where(found.valid, self._rescored(canvas, found), INVALID_SCORE)
            if cfg.candidate_containment > 0:  # interior boxes of a better candidate: dropped
                inside = edge_ops.parts_of_better(
                    found.boxes_cell_yxyx,
                    scores,
                    np.zeros(scores.shape, np.int64),
                    found.valid,
                    cfg.candidate_containment,
                )
                scores = np.where(inside, INVALID_SCORE, scores)
            keep, num_valid = edge_ops.non_max_suppression(
                found.boxes_cell_yxyx,
                scores,
                cfg.top_k_per_scale,
                cfg.nms_iou,
                score_threshold=INVALID_SCORE / 2,
            )
            slot_ok = np.arange(cfg.top_k_per_scale)[None, :] < num_valid[:, None]  # [C, k]
            boxes_cell = np.take_along_axis(found.boxes_cell_yxyx, keep[..., None], axis=1)
            parts["boxes"].append(edge_ops.clip_boxes(boxes_cell * cell_px, size[0], size[1]))
            parts["scores"].append(
                np.where(slot_ok, np.take_along_axis(scores, keep, axis=1), INVALID_SCORE)
            )
            parts["valid"].append(slot_ok & np.take_along_axis(found.valid, keep, axis=1))
        merged = {key: np.concatenate(v, axis=1) for key, v in parts.items()}
        return FirstStage(merged["boxes"], merged["scores"], merged["valid"])

    def _rescored(self, canvas: np.ndarray, found: edge_ops.SearchResult) -> np.ndarray:
        """Ranking score [C, M]: Eq. (3) less outside_halves_weight times each box's half masks
        just outside it (``edge_ops.outside_half_terms``), as the graph's ``_rescored``."""
        cfg = self.config.inference
        if cfg.outside_halves_weight <= 0:
            return found.scores
        outside = np.stack(
            [
                edge_ops.outside_half_terms(
                    canvas[..., j : j + 1],
                    found.boxes_cell_yxyx[j],
                    cfg.ring_margin,
                    cfg.outside_halves_floor,
                )[:, 0]
                for j in range(canvas.shape[3])
            ]
        )
        return found.scores - cfg.outside_halves_weight * outside

    def _search_active(
        self, canvas: np.ndarray, shapes_hw: np.ndarray, stride_cells
    ) -> edge_ops.SearchResult:
        """The box search of the classes whose full mask can hold a candidate; [C, M] results.

        A box's Eq. (2) coverage is a mean of the full mask, so it can only exceed the threshold
        where the canvas's maximum does; other classes (most, with a trained localizer) come back
        invalid without a search, as in the graph.
        """
        cfg = self.config.inference
        c, m = canvas.shape[3], cfg.max_candidates
        result = edge_ops.SearchResult(
            np.zeros((c, m, 4), np.float32),
            np.full((c, m), -np.inf),
            np.zeros((c, m)),
            np.zeros((c, m), bool),
        )
        active = np.flatnonzero(
            canvas[:, :, constants.FULL, :].max(axis=(0, 1)) > cfg.coverage_threshold
        )
        if active.size:
            found = edge_ops.search_boxes(
                canvas[..., active],
                shapes_hw,
                stride_cells,
                cfg.ring_margin,
                cfg.coverage_threshold,
                m,
                local_max=cfg.candidate_selection == "local_max",
            )
            for full, part in zip(result, found):
                full[active] = part
        return result

    def top_candidates(self, first: FirstStage) -> Candidates:
        """The best max_refine first-stage detections over all classes (ties: class, then slot)."""
        r = self.config.inference.max_refine
        c, n = first.scores.shape
        if self.config.inference.candidate_nms_iou < 1.0:
            first = self._across_scales_nms(first)
        containment = self.config.inference.across_scales_containment
        if containment > 0:  # a finer scale's interior boxes of a better candidate: dropped
            inside = edge_ops.parts_of_better(
                first.boxes_image_yxyx,
                first.scores,
                np.zeros(first.scores.shape, np.int64),
                first.valid,
                containment,
            )
            first = FirstStage(first.boxes_image_yxyx, first.scores, first.valid & ~inside)
        flat = np.where(first.valid, first.scores, INVALID_SCORE).reshape(-1)
        k = min(r, c * n)
        idx = edge_ops.top_k(flat, k)
        top_scores = flat[idx]
        cand = Candidates(
            boxes_image_yxyx=first.boxes_image_yxyx.reshape(-1, 4)[idx],
            classes=(idx // n).astype(np.int64),
            scores=top_scores,
            valid=policy.is_candidate(top_scores, self.config.inference.min_candidate_eq3),
        )
        if k < r:  # fewer slots than max_refine: pad with invalid ones
            pad = r - k
            cand = Candidates(
                np.concatenate([cand.boxes_image_yxyx, np.zeros((pad, 4), np.float32)]),
                np.concatenate([cand.classes, np.zeros(pad, np.int64)]),
                np.concatenate([cand.scores, np.full(pad, INVALID_SCORE)]),
                np.concatenate([cand.valid, np.zeros(pad, bool)]),
            )
        return cand

    def _across_scales_nms(self, first: FirstStage) -> FirstStage:
        """Per-class NMS over all scales' boxes (candidate_nms_iou), as the graph."""
        n = first.scores.shape[1]
        ranked = np.where(first.valid, first.scores, INVALID_SCORE)
        keep, num = edge_ops.non_max_suppression(
            first.boxes_image_yxyx,
            ranked,
            n,
            self.config.inference.candidate_nms_iou,
            score_threshold=INVALID_SCORE / 2,
        )
        ok = np.arange(n)[None, :] < num[:, None]
        boxes = np.take_along_axis(first.boxes_image_yxyx, keep[..., None], axis=1)
        scores = np.where(ok, np.take_along_axis(ranked, keep, axis=1), INVALID_SCORE)
        return FirstStage(boxes, scores, ok)

    def _classify(self, image, boxes_image_yxyx, classes) -> np.ndarray:
        """P(class of each box | its crop): float32 [R']."""
        s = self.config.model.input_size
        probs = np.asarray(
            self.classifier(edge_ops.crop_and_resize(image, boxes_image_yxyx, s)), np.float32
        )
        if probs.shape != (len(boxes_image_yxyx), self.num_classes + 1):
            raise ValueError(
                f"classifier returned shape {probs.shape}, expected "
                f"{(len(boxes_image_yxyx), self.num_classes + 1)}"
            )
        return probs[np.arange(len(classes)), classes + constants.CLASS_ID_OFFSET]

    def _refine(self, image, size, boxes_image_yxyx, classes):
        """Best box inside each detection grown by refine_enlarge.

        Returns: (boxes float32 [R', 4] image_yxyx, their Eq. (3) scores float64 [R'] on the
        refinement crop's masks).
        """
        cfg = self.config.inference
        crop_image_yxyx = policy.refinement_crop(
            np.asarray(boxes_image_yxyx, np.float32),
            size[0],
            size[1],
            np.float32(cfg.refine_enlarge),
            cfg.refine_crop,
        ).astype(np.float32)
        masks = self._localize(image, crop_image_yxyx)  # [R', d, d, 5, C]
        own = masks[np.arange(len(classes)), ..., classes]  # [R', d, d, 5], the detection's class
        rc = cfg.refine_canvas
        own = edge_ops.resize_bilinear(own, rc, rc)  # [R', rc, rc, 5], cell-centre aligned
        shapes_hw = edge_ops.box_shapes(
            np.float32(rc), cfg.refine_size_fractions, cfg.refine_aspect_ratios
        )
        # Each crop is one channel of the search; its best boxes are rescored with the ring read
        # past the crop's edge on edge-replicated masks (search_rules.refine_ring_pad says why).
        found = edge_ops.search_boxes(
            np.transpose(own, (1, 2, 3, 0)), shapes_hw, *search_rules.refine_search_args(cfg)
        )
        pad = search_rules.refine_ring_pad(cfg.ring_margin, rc)
        padded = np.pad(own, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        best_cell = np.zeros((len(classes), 4), np.float32)
        best_eq3 = np.zeros(len(classes), np.float64)
        for i in range(len(classes)):
            crop_boxes = found.boxes_cell_yxyx[i] + np.float32(pad)
            eq3, _ = edge_ops.eq3_scores(padded[i][..., None], crop_boxes, cfg.ring_margin)
            if cfg.refine_outside_halves_weight > 0:  # a box shrunk onto a part
                eq3 = eq3 - cfg.refine_outside_halves_weight * edge_ops.outside_half_terms(
                    padded[i][..., None], crop_boxes, cfg.ring_margin, cfg.outside_halves_floor
                )
            eq3 = np.where(found.valid[i], eq3[:, 0], INVALID_SCORE)
            best = int(np.argmax(eq3))  # the first of equal maxima, as tf.argmax
            best_cell[i], best_eq3[i] = found.boxes_cell_yxyx[i, best], eq3[best]
        refined = edge_ops.from_frame(best_cell, crop_image_yxyx, rc, rc)
        return edge_ops.clip_boxes(refined, size[0], size[1]), best_eq3

    def _refined_agreement(self, first_eq3, refined_eq3):
        """Eq. (3) score [R] float32 a refined detection is ranked by (``policy``)."""
        mode = self.config.inference.refine_agreement
        return policy.refined_agreement(np.float32(first_eq3), np.float32(refined_eq3), mode)

    def _confidence(self, class_prob, eq3):
        """Confidence [R] float32 from P(class | box) [R] and Eq. (3) scores [R] (``policy``)."""
        mode = self.config.inference.score_mode
        return policy.confidence(np.float32(class_prob), np.float32(eq3), mode)

    def _final_outputs(self, boxes_image_yxyx, scores, classes, kept, size) -> dict:
        """Per-class NMS, parts demoted, padding to max_detections; boxes normalized to the
        image."""
        return self._packed(*self._final_nms(boxes_image_yxyx, scores, classes, kept, size))

    def _classified_outputs(self, image, cand, boxes_image_yxyx, agreement, size):
        """The final detections of classifier_stage "detections" (the graph's
        ``_classified_outputs``): per-class NMS of the refined boxes [R, 4] of the valid
        candidates ``cand`` ranked by their Eq. (3) agreement [R], the classifier on each
        survivor's first-stage box, its pruning and the confidence; parts demoted.

        Returns: the outputs of ``_final_outputs`` and the classifier's crops (int).
        """
        cfg = self.config.inference
        ranked = policy.confidence(None, agreement, policy.EQ3)
        out_boxes, ranked, out_classes, num, slot = self._final_nms(
            boxes_image_yxyx, ranked, cand.classes, cand.valid, size, with_indices=True
        )
        class_prob = np.zeros(len(ranked), np.float32)
        if num:
            first_boxes = cand.boxes_image_yxyx[slot[:num]]
            class_prob[:num] = self._classify(image, first_boxes, out_classes[:num])
        scores = self._confidence(class_prob, agreement[slot])
        ok = (np.arange(len(scores)) < num) & (class_prob >= cfg.classifier_threshold)
        ok &= scores > max(cfg.min_score, 0.0)
        # Kept slots first, best first (stable), as the graph's sort after the classifier.
        order = np.argsort(-np.where(ok, scores, -np.inf), kind="stable")
        packed = self._packed(
            out_boxes[order], scores[order], out_classes[order], int(ok.sum()), resort=True
        )
        return packed, int(num)

    def _final_nms(self, boxes_image_yxyx, scores, classes, kept, size, with_indices=False):
        """Per-class NMS of the kept slots [R]: boxes [K, 4] normalized yxyx, scores [K],
        classes [K], the number of detections (the first slots), K = max_detections; with
        ``with_indices`` also each detection's slot in R [K]."""
        cfg = self.config.inference
        hw = np.concatenate([size, size])
        norm = np.clip(boxes_image_yxyx / hw, 0.0, 1.0).astype(np.float32)
        scores = np.where(kept, scores, -1.0)
        threshold = max(cfg.min_score, 0.0)
        return edge_ops.class_nms(
            norm, scores, classes, cfg.max_detections, cfg.nms_iou, threshold, with_indices
        )

    def _packed(self, out_boxes, out_scores, out_classes, num, resort=False) -> dict:
        """Parts demoted, the output dict of ``detect``; ``resort``: the scores changed after the
        NMS (the first ``num`` slots are already sorted), as the graph's ``_packed``."""
        cfg = self.config.inference
        k = cfg.max_detections
        if cfg.part_score_factor < 1.0 or resort:
            out_boxes, out_scores, out_classes, num = edge_ops.demote_parts(
                out_boxes,
                out_scores,
                out_classes,
                num,
                cfg.part_containment,
                cfg.part_score_factor,
                cfg.part_container_ratio,
            )
        slot_ok = np.arange(k) < num
        names = [self.class_names[int(c)] if ok else "" for c, ok in zip(out_classes, slot_ok)]
        return {
            "num_detections": float(num),
            "detection_boxes": np.where(slot_ok[:, None], out_boxes, 0.0).astype(np.float32),
            "detection_scores": np.where(slot_ok, out_scores, 0.0).astype(np.float32),
            "detection_classes": np.where(
                slot_ok, out_classes.astype(np.float32) + constants.CLASS_ID_OFFSET, 0.0
            ).astype(np.float32),
            "detection_class_names": names,
        }


def detections_of(
    out: dict, height: int, width: int, class_names, prefix: str = "detection_"
) -> Detections:
    """One image's ``EdgePipeline.detect`` outputs as ``Detections`` (boxes also in pixels);
    ``prefix`` "first_stage_" picks the first-stage ones."""
    return Detections.from_outputs(out, height, width, class_names, prefix=prefix)
