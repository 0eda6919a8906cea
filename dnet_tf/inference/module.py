"""Algorithm 1 of the paper as one graph: windows -> localizer -> merge -> box search -> classifier
pruning -> NMS -> refinement -> final NMS, for a batch of images and all classes in one pass.

``DetectorModule.detect`` is pure TensorFlow (no py_function, no Python loops over tensor values;
the loops below run over static config, i.e. the scales, at trace time), so it traces into one
``tf.function`` and exports as one SavedModel (see ``dnet_tf.export``).

Frames: ``image_yxyx`` absolute pixels of the decoded image; ``cell_yxyx`` cells of a per-scale
canvas (one cell = ``cell_px`` image pixels) or of a refinement crop's canvas.

Choices the paper leaves open (documented in the README's architecture section):
  * Canvas resolution: one cell = max(stride_px, longest side / max_canvas_cells) pixels, so the
    paper's 5 px stride is one canvas cell and the search cost is bounded on large images.
  * Detections per image: the paper keeps the top 5 per scale per class (15 per class). We keep
    those per class, then send the best ``max_refine`` of all classes through the classifier and
    the refinement, so the network cost does not grow with the number of classes.
  * Confidence: ``InferenceConfig.score_mode`` (classifier probability, Eq. (3) agreement of the
    masks with the box, or both multiplied), chosen by validation AP.
  * The window gate (``InferenceConfig.window_gate``): a window of a finer scale goes through
    the localizer only where the coarser scales' full masks over it pass the gate, so the
    windows' cost follows the objects (the paper runs every window).
  * Order of the last stages: ``InferenceConfig.classifier_stage`` "candidates" (the paper's:
    classifier, then the refinement of what it keeps, then NMS) or "detections" (refinement of
    every candidate, NMS by Eq. (3) agreement, then the classifier on the survivors only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from dnet_tf import constants
from dnet_tf.config import DetectorConfig
from dnet_tf.core import policy
from dnet_tf.core import search as search_rules
from dnet_tf.core import windows as window_rules
from dnet_tf.core.policy import INVALID_SCORE
from dnet_tf.models import folding
from dnet_tf.ops import box_search, crops, integral, nms, windows
from dnet_tf.ops import boxes as box_ops
from dnet_tf.ops.xp import TENSORFLOW


class DetectorModule(tf.Module):
    """The whole two-stage DetectorNet inference for a batch of images.

    Args:
      localizer: keras.Model [N, S, S, 3] float32 0..255 -> [N, d, d, 5, C] sigmoid masks.
      classifier: keras.Model [N, S, S, 3] float32 0..255 -> [N, C + 1] softmax, 0 = background.
      class_names: C names, in class-id order.
      aspect_ratios: box aspect ratios (w / h) for the box search, e.g. k-means of training boxes.
      config: the run's DetectorConfig; its ``inference`` part fixes every knob of the graph.
      class_head: the head on the localizer's trunk (models.shared_head), features -> [N, C + 1];
        required when ``config.inference.classifier`` is "shared" (then ``classifier`` is not
        run and may be None), unused otherwise.
    """

    def __init__(
        self,
        localizer,
        classifier,
        class_names: Sequence[str],
        aspect_ratios: Sequence[float],
        config: DetectorConfig,
        name: str | None = None,
        class_head=None,
    ):
        super().__init__(name=name)
        self.localizer, self.classifier, self.config = localizer, classifier, config
        # What the graph runs: the same networks with each batch normalisation (and the input's
        # rescaling) folded into its convolution (models.folding: equal to float rounding;
        # convolution, bias and ReLU become one fused kernel). Snapshots of the weights now.
        precision = config.inference.network_precision
        self.served_localizer = folding.for_inference(localizer, precision)
        self.served_classifier = (
            None if classifier is None else folding.for_inference(classifier, precision)
        )
        self.shared = config.inference.classifier == policy.SHARED
        self.class_head = class_head if self.shared else None
        if self.shared:
            if class_head is None:
                raise ValueError(
                    "config field 'classifier': 'shared' needs the class head on the localizer's "
                    "trunk (the run directory's shared_head.keras, trained with "
                    "TrainConfig.shared_head_steps > 0)"
                )
            from dnet_tf.models.shared_head import build_joint_model

            # One trunk call per refinement crop gives both the masks and P(class | crop).
            self.joint = build_joint_model(self.served_localizer, class_head)
        names, self.aspect_ratios = policy.check_detector_inputs(class_names, aspect_ratios, config)
        self.class_names, self.num_classes = names, len(names)
        cfg = config.inference
        self.windows_per_scale = cfg.windows_per_scale
        self.num_windows = int(sum(self.windows_per_scale))
        # Network evaluations per image at most: the windows, then up to max_refine candidates
        # through the classifier and those it keeps through the localizer again. The graph runs
        # only the candidates that exist and survive (``network_evaluations`` output).
        # With the shared head, one joint evaluation per candidate instead.
        # With classifier_stage "detections", every candidate through the localizer and at most
        # min(max_refine, max_detections) final detections through the classifier.
        self.late_classifier = cfg.classifier_stage == policy.DETECTIONS and not self.shared
        if self.shared:
            per_image_crops = cfg.max_refine
        elif self.late_classifier:
            per_image_crops = cfg.max_refine + min(cfg.max_refine, cfg.max_detections)
        else:
            per_image_crops = 2 * cfg.max_refine
        self.max_network_evaluations = self.num_windows + per_image_crops

    # ------------------------------------------------------------------------------------------
    # Public graph entry points.

    def detect(self, images: tf.Tensor, sizes: tf.Tensor, with_masks: bool = False) -> dict:
        """Runs Algorithm 1 on a batch.

        Args:
          images: float32 [B, Hmax, Wmax, 3], RGB 0..255, image b at the top-left, zero-padded.
          sizes: int32 [B, 2], (height, width) of each image.
          with_masks: also return the finest scale's merged masks (for pictures/evaluation).
        Returns:
          dict of tensors, K = max_detections:
            num_detections float32 [B]; detection_boxes float32 [B, K, 4] normalized yxyx;
            detection_scores float32 [B, K]; detection_classes float32 [B, K], 1-based;
            detection_class_names string [B, K] ("" for padding); the same five for the first
            stage under ``first_stage_*``; network_evaluations int32 [B]; and with ``with_masks``
            merged_masks float32 [B, P, P, 5, C] (finest scale, resized to P x P over the image).
        """
        cfg = self.config.inference
        images = tf.convert_to_tensor(images, tf.float32)
        sizes = tf.convert_to_tensor(sizes, tf.int32)
        sizes_f = tf.cast(sizes, tf.float32)

        # Stage 1: every window of every image through the localizer in one batched call, or
        # scale by scale with the window gate.
        unit_windows = tf.constant(windows.unit_windows(cfg.num_scales, cfg.window_overlap)[0])
        hwhw = tf.concat([sizes_f, sizes_f], axis=-1)  # [B, 4] = (h, w, h, w)
        windows_image_yxyx = unit_windows[None, :, :] * hwhw[:, None, :]  # [B, N, 4]
        if cfg.window_gate > 0:
            window_masks, windows_run = self._localize_gated(images, windows_image_yxyx)
        else:
            window_masks = self._localize(images, windows_image_yxyx)  # [B, N, d, d, 5, C]
            windows_run = self.num_windows

        per_image = tf.map_fn(
            lambda args: self._first_stage_one_image(args[0], args[1], with_masks),
            (window_masks, sizes_f),
            fn_output_signature=self._first_stage_signature(with_masks),
        )
        candidates = self._top_candidates(
            per_image["boxes"], per_image["scores"], per_image["valid"]
        )

        if self.shared:
            # Pruning and refinement from one joint forward on each refinement crop.
            class_prob, refined_image_yxyx, refined_eq3 = self._classify_and_refine(
                images, sizes_f, candidates
            )
            kept = candidates.valid & (class_prob >= cfg.classifier_threshold)
        elif self.late_classifier:
            # Every valid candidate is refined; the classifier sees the final detections only.
            class_prob, kept = None, candidates.valid
            refined_image_yxyx, refined_eq3 = self._refine(images, sizes_f, candidates, kept)
        else:
            # Classifier pruning, on the valid first-stage boxes only.
            class_prob = self._classify(images, candidates)  # [B, R]
            kept = candidates.valid & (class_prob >= cfg.classifier_threshold)

            # Refinement: the localizer on each kept detection grown by refine_enlarge (pruned
            # ones never reach the outputs, so they are not refined).
            refined_image_yxyx, refined_eq3 = self._refine(images, sizes_f, candidates, kept)

        refined_image_yxyx = policy.reported_box(
            candidates.boxes_image_yxyx,
            refined_image_yxyx,
            candidates.scores,
            refined_eq3,
            cfg.refine_blend,
            cfg.refine_accept_margin,
            TENSORFLOW,
            min_area_ratio=cfg.refine_min_area_ratio,
        )
        refined_agreement = self._refined_agreement(candidates.scores, refined_eq3)
        # Crops sent through a network after the windows: one per valid candidate (the
        # classifier's, or the refinement's, or the shared head's joint one), then the
        # refinement's of the kept ones, or the classifier's of the final detections.
        crops_run = tf.reduce_sum(tf.cast(candidates.valid, tf.int32), axis=1)
        if self.late_classifier:
            outputs, classified = self._classified_outputs(
                images, candidates, refined_image_yxyx, refined_agreement, sizes_f
            )
            crops_run += classified
            # No classifier probability for the first-stage boxes: ranked by Eq. (3) alone.
            first_scores = policy.confidence(None, candidates.scores, policy.EQ3, TENSORFLOW)
        else:
            refined_scores = self._confidence(class_prob, refined_agreement)
            outputs = self._final_outputs(
                refined_image_yxyx, refined_scores, candidates.classes, kept, sizes_f
            )
            if not self.shared:
                crops_run += tf.reduce_sum(tf.cast(kept, tf.int32), axis=1)
            first_scores = self._confidence(class_prob, candidates.scores)
        first = self._final_outputs(
            candidates.boxes_image_yxyx, first_scores, candidates.classes, kept, sizes_f
        )
        for key, value in first.items():
            outputs["first_stage_" + key.replace("detection_", "")] = value
        outputs["network_evaluations"] = windows_run + crops_run
        if with_masks:
            outputs["merged_masks"] = per_image["preview"]
        return outputs

    # ------------------------------------------------------------------------------------------
    # Stages.

    def _localize(self, images, boxes_image_yxyx):
        """Crops boxes [B, M, 4] of each image and runs the localizer: -> [B, M, d, d, 5, C]."""
        batch, per_image = tf.shape(boxes_image_yxyx)[0], tf.shape(boxes_image_yxyx)[1]
        masks = self._localize_flat(
            images, tf.reshape(boxes_image_yxyx, [-1, 4]), tf.repeat(tf.range(batch), per_image)
        )
        d = self.config.model.mask_size
        return tf.reshape(
            masks, [batch, per_image, d, d, constants.NUM_MASK_TYPES, self.num_classes]
        )

    def _localize_gated(self, images, windows_image_yxyx):
        """The windows through the localizer scale by scale, each window of a finer scale only
        where the coarser scales' full masks over it pass the gate
        (``dnet_tf.core.windows.windows_to_run``).

        Args: windows_image_yxyx: float32 [B, N, 4], every scale's windows.
        Returns: masks float32 [B, N, d, d, 5, C] (zeros for a window not run), and the windows
          run per image int32 [B].
        """
        cfg = self.config.inference
        d, c = self.config.model.mask_size, self.num_classes
        batch = tf.shape(images)[0]
        regions = window_rules.coarser_cells(cfg.num_scales, cfg.window_overlap, d)
        # Each scale's masks [B, n, d, d, 5, C] and the max over classes of their full masks
        # [B, n, d, d] (what the finer scales' gates read).
        per_scale, full_max, run_count, start = [], [], tf.zeros([batch], tf.int32), 0
        for s, n in enumerate(self.windows_per_scale):  # static: the scales
            boxes = windows_image_yxyx[:, start : start + n]  # [B, n, 4]
            start += n
            if s == 0:
                masks = self._localize(images, boxes)
                run_count += n
            else:
                rows, cols = (tf.constant(t) for t in regions[s - 1])
                peaks = window_rules.window_peaks(
                    tf.concat(full_max, axis=1), rows, cols, TENSORFLOW
                )  # [B, n]
                gate = window_rules.windows_to_run(peaks, cfg.window_gate)
                which = tf.cast(tf.where(gate), tf.int32)  # [R, 2] (image, window)
                picked, image_ids = tf.gather_nd(boxes, which), which[:, 0]
                # The localizer takes no empty batch (see _classify).
                run = tf.cond(
                    tf.shape(which)[0] > 0,
                    lambda picked=picked, image_ids=image_ids: self._localize_flat(
                        images, picked, image_ids
                    ),
                    lambda: tf.zeros([0, d, d, constants.NUM_MASK_TYPES, c]),
                )
                masks = tf.scatter_nd(which, run, [batch, n, d, d, constants.NUM_MASK_TYPES, c])
                run_count += tf.reduce_sum(tf.cast(gate, tf.int32), axis=1)
            per_scale.append(masks)
            if s + 1 < len(self.windows_per_scale):  # the finest scale gates nothing
                full_max.append(tf.reduce_max(masks[..., constants.FULL, :], axis=-1))
        return tf.concat(per_scale, axis=1), run_count

    def _localize_flat(self, images, boxes_image_yxyx, box_indices):
        """Boxes [M, 4] of images ``box_indices`` [M] through the localizer: [M, d, d, 5, C]
        (the half masks 0 with ``mask_types`` "full", ``policy.masks_in_use``)."""
        patches = crops.crop_and_resize(
            images, boxes_image_yxyx, box_indices, self.config.model.input_size
        )
        masks = self.served_localizer(patches, training=False)
        return policy.masks_in_use(masks, self.config.inference.mask_types)

    def _canvas_cell_px(self, size_f):
        """Image pixels per canvas cell for an image of size (h, w)."""
        cfg = self.config.inference
        return tf.maximum(
            tf.constant(cfg.stride_px, tf.float32), tf.reduce_max(size_f) / cfg.max_canvas_cells
        )

    def _first_stage_signature(self, with_masks):
        cfg = self.config.inference
        n = cfg.num_scales * cfg.top_k_per_scale
        c = self.num_classes
        sig = {
            "boxes": tf.TensorSpec([c, n, 4], tf.float32),
            "scores": tf.TensorSpec([c, n], tf.float32),
            "valid": tf.TensorSpec([c, n], tf.bool),
        }
        if with_masks:
            p = cfg.mask_preview_size
            sig["preview"] = tf.TensorSpec([p, p, constants.NUM_MASK_TYPES, c], tf.float32)
        return sig

    def _first_stage_one_image(self, window_masks, size_f, with_masks):
        """Merge and search of one image, every scale and class.

        Args:
          window_masks: float32 [N, d, d, 5, C], the localizer's masks of the image's windows.
          size_f: float32 [2], (h, w) of the image.
        Returns:
          dict with boxes [C, scales * top_k, 4] image_yxyx, Eq. (3) scores and valid flags
          [C, scales * top_k]; ``preview`` [P, P, 5, C] with ``with_masks``.
        """
        cfg = self.config.inference
        c = self.num_classes
        d = self.config.model.mask_size
        cell_px = self._canvas_cell_px(size_f)
        extent_cells = size_f / cell_px  # the image's (h, w) in canvas cells
        canvas_hw = tf.maximum(tf.cast(tf.math.ceil(extent_cells - 1e-4), tf.int32), 1)
        unit_windows = tf.constant(windows.unit_windows(cfg.num_scales, cfg.window_overlap)[0])
        windows_cell_yxyx = unit_windows * tf.concat([extent_cells, extent_cells], axis=0)[None, :]
        mean_side = tf.reduce_mean(extent_cells)
        per_scale = cfg.size_fractions_per_scale
        shapes_hw = [box_search.box_shapes(mean_side, f, self.aspect_ratios) for f in per_scale]
        # The canvas cell is at least stride_px (_canvas_cell_px), so the stride is one cell: a
        # number, so the search picks its local-maximum pooling when the graph is built.
        stride_cells = 1.0
        flat_masks = tf.reshape(window_masks, [-1, d, d, constants.NUM_MASK_TYPES * c])

        # One canvas per scale, merged by max over the scale's windows: [scales, Hc, Wc, 5, C].
        canvases, start = [], 0
        for n in self.windows_per_scale:  # static: the scales
            canvases.append(
                crops.paste_max(
                    flat_masks[start : start + n],
                    windows_cell_yxyx[start : start + n],
                    canvas_hw[0],
                    canvas_hw[1],
                )
            )
            start += n
        canvas = tf.reshape(
            tf.stack(canvases),
            [len(canvases), canvas_hw[0], canvas_hw[1], constants.NUM_MASK_TYPES, c],
        )
        if all(list(f) == list(cfg.size_fractions) for f in per_scale):
            # Every scale searches every size: one pass over the shapes for all scales.
            found = self._search_active(canvas, shapes_hw[0], stride_cells)  # [scales, C, M]
        else:
            found = box_search.SearchResult(
                *[
                    None if parts[0] is None else tf.concat(parts, axis=0)
                    for parts in zip(
                        *[
                            self._search_active(canvas[i : i + 1], shapes_hw[i], stride_cells)
                            for i in range(len(per_scale))
                        ]
                    )
                ]
            )
        scores = tf.where(found.valid, self._rescored(canvas, found), INVALID_SCORE)
        if cfg.candidate_containment > 0:  # interior boxes of a better candidate: dropped
            inside = nms.parts_of_better(
                found.boxes_cell_yxyx,
                scores,
                tf.zeros_like(found.valid, tf.int32),
                found.valid,
                cfg.candidate_containment,
            )
            scores = tf.where(inside, INVALID_SCORE, scores)
        keep, num_valid = nms.non_max_suppression(
            found.boxes_cell_yxyx,
            scores,
            cfg.top_k_per_scale,
            cfg.nms_iou,
            score_threshold=INVALID_SCORE / 2,
        )
        slot_ok = tf.range(cfg.top_k_per_scale) < num_valid[..., None]  # [scales, C, k]
        boxes_cell = tf.gather(found.boxes_cell_yxyx, keep, batch_dims=2)
        scale_major = {
            "boxes": box_ops.clip(boxes_cell * cell_px, size_f[0], size_f[1]),
            "scores": tf.where(slot_ok, tf.gather(scores, keep, batch_dims=2), INVALID_SCORE),
            "valid": slot_ok & tf.gather(found.valid, keep, batch_dims=2),
        }
        # [scales, C, k, ...] -> [C, scales * k, ...]
        result = {}
        for key, t in scale_major.items():
            perm = [1, 0, 2] + list(range(3, t.shape.rank))
            result[key] = tf.reshape(
                tf.transpose(t, perm),
                [c, cfg.num_scales * cfg.top_k_per_scale] + t.shape[3:].as_list(),
            )
        if with_masks:
            # The finest scale's canvas over the image's extent, resampled to a fixed P x P.
            p = cfg.mask_preview_size
            flat = tf.reshape(
                canvas[-1], [canvas_hw[0], canvas_hw[1], constants.NUM_MASK_TYPES * c]
            )
            extent_norm = tf.concat(
                [[0.0, 0.0], extent_cells / tf.cast(canvas_hw, tf.float32)], axis=0
            )
            preview = tf.image.crop_and_resize(flat[None], extent_norm[None], [0], [p, p])[0]
            result["preview"] = tf.reshape(preview, [p, p, constants.NUM_MASK_TYPES, c])
        return result

    def _rescored(self, canvas, found):
        """The candidates' ranking score [S, C, M]: Eq. (3), less outside_halves_weight times the
        half masks just outside each box (``box_search.outside_half_terms``) when that is > 0.

        Args: canvas float32 [S, Hc, Wc, 5, C]; found: SearchResult with [S, C, M] fields.
        """
        weight = self.config.inference.outside_halves_weight
        if weight <= 0:
            return found.scores
        # One "class" per (scale, class) canvas: [S, C, Hc+1, Wc+1, 5].
        per_class = integral.integral_image(tf.transpose(canvas, [0, 4, 1, 2, 3]))
        cfg = self.config.inference
        outside = box_search.outside_half_terms(
            per_class, found.boxes_cell_yxyx, cfg.ring_margin, cfg.outside_halves_floor
        )[..., 0]
        return found.scores - weight * outside

    def _search_active(self, canvas, shapes_hw, stride_cells):
        """The box search of every (scale, class) canvas, in one call.

        A box's Eq. (2) coverage is a mean of the full mask, so it can only exceed the threshold
        where the canvas's maximum does: ``search_boxes`` skips the (scale, class) pairs whose
        full mask never does (with a trained localizer, most of them), and their slots come
        back invalid. The scales fold into its class axis: one pass over the shapes.

        Args: canvas float32 [S, Hc, Wc, 5, C]; shapes_hw [K, 2] cells; stride_cells scalar.
        Returns: SearchResult with fields [S, C, M(, 4)] (coverage None).
        """
        cfg = self.config.inference
        found = box_search.search_boxes(
            canvas,
            shapes_hw,
            stride_cells,
            cfg.ring_margin,
            cfg.coverage_threshold,
            cfg.max_candidates,
            local_max=cfg.candidate_selection == "local_max",
        )
        s, c, m = canvas.shape[0], self.num_classes, cfg.max_candidates

        def static(t, tail=()):  # [S, C, M, ...] with the shape known when the graph is built
            return tf.reshape(t, [s, c, m, *tail])

        return box_search.SearchResult(
            boxes_cell_yxyx=static(found.boxes_cell_yxyx, (4,)),
            scores=static(found.scores),
            coverage=None,  # Eq. (2) decided validity; nothing downstream reads it
            valid=static(found.valid),
        )

    def _top_candidates(self, boxes, scores, valid):
        """The best ``max_refine`` first-stage detections of each image over all classes.

        Args: boxes [B, C, n, 4] image_yxyx; scores [B, C, n]; valid bool [B, C, n].
        Returns: _Candidates with [B, R] fields.
        """
        r = self.config.inference.max_refine
        c = self.num_classes
        n = boxes.shape[2]
        batch = tf.shape(boxes)[0]
        if self.config.inference.candidate_nms_iou < 1.0:
            boxes, scores, valid = self._across_scales_nms(boxes, scores, valid)
        containment = self.config.inference.across_scales_containment
        if containment > 0:  # a finer scale's interior boxes of a better candidate: dropped
            valid = valid & ~nms.parts_of_better(
                boxes, scores, tf.zeros_like(valid, tf.int32), valid, containment
            )
        flat_scores = tf.reshape(tf.where(valid, scores, INVALID_SCORE), [batch, c * n])
        k = min(r, c * n)
        top_scores, idx = tf.math.top_k(flat_scores, k=k)

        def pick(t):
            return tf.gather(
                tf.reshape(t, [batch, c * n] + t.shape[3:].as_list()), idx, batch_dims=1
            )

        classes = tf.cast(idx // n, tf.int32)
        cand = _Candidates(
            boxes_image_yxyx=pick(boxes),
            classes=classes,
            scores=top_scores,
            valid=policy.is_candidate(top_scores, self.config.inference.min_candidate_eq3),
        )
        if k < r:  # fewer candidate slots than max_refine: pad with invalid ones
            cand = cand.padded(r)
        return cand

    def _across_scales_nms(self, boxes, scores, valid):
        """Per-class NMS over all scales' first-stage boxes (InferenceConfig.candidate_nms_iou).

        Args and returns: boxes [B, C, n, 4] image_yxyx, scores [B, C, n], valid
        bool [B, C, n]; the kept boxes of each class come first, best first.
        """
        n = boxes.shape[2]
        ranked = tf.where(valid, scores, INVALID_SCORE)
        keep, num = nms.non_max_suppression(
            boxes,
            ranked,
            n,
            self.config.inference.candidate_nms_iou,
            score_threshold=INVALID_SCORE / 2,
        )
        ok = tf.range(n) < num[..., None]

        def pick(t):
            return tf.gather(t, keep, batch_dims=2)

        return pick(boxes), tf.where(ok, pick(ranked), INVALID_SCORE), ok

    def _classify(self, images, cand):
        """P(class of the detection | crop of the first-stage box): float32 [B, R].

        Only the valid candidates are cropped and classified (a batch of dynamic size); the
        other slots get 0.
        """
        slots = tf.cast(tf.where(cand.valid), tf.int32)  # [V, 2] (image, slot)
        classes = tf.gather_nd(cand.classes, slots)  # [V]

        def classify():
            patches = crops.crop_and_resize(
                images,
                tf.gather_nd(cand.boxes_image_yxyx, slots),
                slots[:, 0],
                self.config.model.input_size,
            )
            probs = self.served_classifier(patches, training=False)  # [V, C + 1]
            # Class k (0-based) sits at index k + CLASS_ID_OFFSET: index 0 is background.
            return tf.gather(probs, classes + constants.CLASS_ID_OFFSET, batch_dims=1)  # [V]

        # Networks must not see an empty batch: the CPU's fused convolution + batch norm fails
        # on one (and there is nothing to run).
        own = tf.cond(tf.shape(slots)[0] > 0, classify, lambda: tf.zeros([0]))
        return tf.scatter_nd(slots, own, tf.shape(cand.classes))

    def _refine(self, images, sizes_f, cand, kept):
        """Second localizer pass on each kept detection grown by refine_enlarge; best box inside.

        Args: cand: _Candidates [B, R]; kept: bool [B, R], the slots to refine (the others are
          not run through the localizer).
        Returns:
          refined boxes float32 [B, R, 4] image_yxyx, and their Eq. (3) score [B, R] on the
          refinement crop's masks; zeros and INVALID_SCORE in slots not kept.
        """
        slots = tf.cast(tf.where(kept), tf.int32)  # [V, 2] (image, slot)
        boxes = tf.gather_nd(cand.boxes_image_yxyx, slots)  # [V, 4]
        classes = tf.gather_nd(cand.classes, slots)  # [V]
        hw = tf.gather(sizes_f, slots[:, 0])  # [V, 2]
        # Neither the localizer nor the search below takes an empty batch: skip them.
        refined, eq3 = tf.cond(
            tf.shape(slots)[0] > 0,
            lambda: self._refine_boxes(images, boxes, slots[:, 0], classes, hw),
            lambda: (tf.zeros([0, 4]), tf.zeros([0])),
        )
        return _scatter_refined(slots, refined, eq3, tf.shape(cand.classes))

    def _classify_and_refine(self, images, sizes_f, cand):
        """The shared head's pruning and the refinement of every valid candidate in one joint
        forward on its refinement crop (InferenceConfig.classifier = "shared").

        Args: cand: _Candidates [B, R].
        Returns:
          P(class of the detection | refinement crop) float32 [B, R] (0 in invalid slots), and
          as ``_refine`` the refined boxes [B, R, 4] image_yxyx and Eq. (3) scores [B, R] of the
          slots whose probability reaches classifier_threshold (the only ones searched).
        """
        cfg = self.config.inference
        slots = tf.cast(tf.where(cand.valid), tf.int32)  # [V, 2] (image, slot)
        classes = tf.gather_nd(cand.classes, slots)  # [V]
        hw = tf.gather(sizes_f, slots[:, 0])  # [V, 2]
        crop_image_yxyx = _refinement_crops(tf.gather_nd(cand.boxes_image_yxyx, slots), hw, cfg)

        def run():
            patches = crops.crop_and_resize(
                images, crop_image_yxyx, slots[:, 0], self.config.model.input_size
            )
            out = self.joint(patches, training=False)
            masks = policy.masks_in_use(out["masks"], cfg.mask_types)
            own = tf.gather(
                out["class_probs"], classes + constants.CLASS_ID_OFFSET, batch_dims=1
            )  # [V]
            keep = tf.cast(tf.where(own >= cfg.classifier_threshold)[:, 0], tf.int32)  # [K] of V
            refined, eq3 = tf.cond(
                tf.shape(keep)[0] > 0,
                lambda: self._best_box_in_crops(
                    tf.gather(masks, keep),
                    tf.gather(crop_image_yxyx, keep),
                    tf.gather(classes, keep),
                    tf.gather(hw, keep),
                ),
                lambda: (tf.zeros([0, 4]), tf.zeros([0])),
            )
            return own, keep, refined, eq3

        # The networks and the search take no empty batch (see _classify).
        own, keep, refined, eq3 = tf.cond(
            tf.shape(slots)[0] > 0,
            run,
            lambda: (tf.zeros([0]), tf.zeros([0], tf.int32), tf.zeros([0, 4]), tf.zeros([0])),
        )
        shape = tf.shape(cand.classes)
        class_prob = tf.scatter_nd(slots, own, shape)
        refined, eq3 = _scatter_refined(tf.gather(slots, keep), refined, eq3, shape)
        return class_prob, refined, eq3

    def _refine_boxes(self, images, boxes_image_yxyx, box_indices, classes, hw):
        """The refinement of V detections: boxes [V, 4] image_yxyx of images ``box_indices``
        [V] with 0-based ``classes`` [V] in images of size ``hw`` [V, 2].

        Returns: refined boxes float32 [V, 4] image_yxyx, Eq. (3) scores float32 [V].
        """
        cfg = self.config.inference
        crop_image_yxyx = _refinement_crops(boxes_image_yxyx, hw, cfg)
        masks = self._localize_flat(images, crop_image_yxyx, box_indices)  # [V, d, d, 5, C]
        return self._best_box_in_crops(masks, crop_image_yxyx, classes, hw)

    def _best_box_in_crops(self, masks, crop_image_yxyx, classes, hw):
        """The best box of each refinement crop by its own class's masks.

        Args: masks float32 [V, d, d, 5, C] of crops ``crop_image_yxyx`` [V, 4] image_yxyx;
          0-based ``classes`` [V]; image sizes ``hw`` [V, 2].
        Returns: refined boxes float32 [V, 4] image_yxyx, Eq. (3) scores float32 [V].
        """
        cfg = self.config.inference
        # Only the detection's own class matters: [V, d, d, 5].
        own = tf.gather(tf.transpose(masks, [0, 4, 1, 2, 3]), classes, batch_dims=1)
        rc = cfg.refine_canvas
        # Bilinear with half-pixel centres: cell-centre aligned, as the paste-back of stage 1.
        own = tf.image.resize(own, [rc, rc], method="bilinear")  # [V, rc, rc, 5]
        shapes_hw = box_search.box_shapes(
            tf.constant(float(rc)), list(cfg.refine_size_fractions), list(cfg.refine_aspect_ratios)
        )
        # Each crop becomes a "class" of one search call over [rc, rc, 5, V]; its best boxes
        # are rescored with the ring read past the crop's edge on edge-replicated masks
        # (search_rules.refine_ring_pad says why).
        found = box_search.search_boxes(
            tf.transpose(own, [1, 2, 3, 0]), shapes_hw, *search_rules.refine_search_args(cfg)
        )
        pad = search_rules.refine_ring_pad(cfg.ring_margin, rc)
        padded_integral = integral.edge_padded_integral_image(own, pad)  # [V, rc+2p+1, ., 5]
        crop_boxes = found.boxes_cell_yxyx + float(pad)
        eq3, _ = box_search.eq3_scores(padded_integral, crop_boxes, cfg.ring_margin)
        if cfg.refine_outside_halves_weight > 0:  # a box shrunk onto a part: halves go on past it
            eq3 -= cfg.refine_outside_halves_weight * box_search.outside_half_terms(
                padded_integral, crop_boxes, cfg.ring_margin, cfg.outside_halves_floor
            )
        eq3 = tf.where(found.valid, eq3[..., 0], INVALID_SCORE)  # [V, M]
        best = tf.argmax(eq3, axis=1, output_type=tf.int32)
        best_cell = tf.gather(found.boxes_cell_yxyx, best, batch_dims=1)  # [V, 4]
        refined = box_ops.from_frame(best_cell, crop_image_yxyx, rc, rc)
        hi = tf.concat([hw, hw], axis=-1)
        return tf.clip_by_value(refined, 0.0, hi), tf.gather(eq3, best, batch_dims=1)

    def _refined_agreement(self, first_eq3, refined_eq3):
        """Eq. (3) score [B, R] a refined detection is ranked by (``dnet_tf.core.policy``)."""
        mode = self.config.inference.refine_agreement
        return policy.refined_agreement(first_eq3, refined_eq3, mode, TENSORFLOW)

    def _confidence(self, class_prob, eq3):
        """Confidence [B, R] in [0, 1] from P(class | box) and Eq. (3) scores, both [B, R]."""
        mode = self.config.inference.score_mode
        return policy.confidence(class_prob, eq3, mode, TENSORFLOW)

    def _final_outputs(self, boxes_image_yxyx, scores, classes, kept, sizes_f):
        """Per-class NMS, parts demoted, padding to max_detections; boxes normalized to the
        image."""
        return self._packed(*self._final_nms(boxes_image_yxyx, scores, classes, kept, sizes_f))

    def _classified_outputs(self, images, cand, boxes_image_yxyx, agreement, sizes_f):
        """The final detections of classifier_stage "detections": per-class NMS of the refined
        boxes [B, R, 4] of the valid candidates ``cand``, ranked by their Eq. (3) agreement
        [B, R]; then the classifier on each survivor's first-stage box (the paper's input), its
        pruning and the confidence (score_mode) as on candidates; parts demoted, best first.

        Returns: the outputs of ``_final_outputs`` and the classifier's crops per image int32 [B].
        """
        cfg = self.config.inference
        ranked = policy.confidence(None, agreement, policy.EQ3, TENSORFLOW)
        out_boxes, ranked, out_classes, slot_ok, slot = self._final_nms(
            boxes_image_yxyx, ranked, cand.classes, cand.valid, sizes_f, with_indices=True
        )

        def of_survivors(t):  # [B, R, ...] -> [B, K, ...]
            return tf.gather(t, slot, batch_dims=1)

        # The first-stage box of each survivor: the classifier sees what it sees in the paper.
        survivors = _Candidates(of_survivors(cand.boxes_image_yxyx), out_classes, ranked, slot_ok)
        class_prob = self._classify(images, survivors)  # [B, K]
        scores = self._confidence(class_prob, of_survivors(agreement))
        ok = slot_ok & (class_prob >= cfg.classifier_threshold) & (scores > max(cfg.min_score, 0.0))
        classified = tf.reduce_sum(tf.cast(slot_ok, tf.int32), axis=1)
        return self._packed(out_boxes, scores, out_classes, ok, resort=True), classified

    def _final_nms(self, boxes_image_yxyx, scores, classes, kept, sizes_f, with_indices=False):
        """Per-class NMS of the kept slots [B, R]: boxes [B, K, 4] normalized yxyx, scores
        [B, K], classes int32 [B, K], valid bool [B, K], best first, K = max_detections; with
        ``with_indices`` also each detection's slot in R, int32 [B, K]."""
        cfg = self.config.inference
        hw = sizes_f[:, None, :]
        norm = boxes_image_yxyx / tf.concat([hw, hw], axis=-1)
        norm = tf.clip_by_value(norm, 0.0, 1.0)
        # Pruned and empty slots get a negative score, below the threshold the NMS applies.
        scores = tf.where(kept, scores, -1.0)
        threshold = max(cfg.min_score, 0.0)
        out = nms.class_nms(
            norm, scores, classes, cfg.max_detections, cfg.nms_iou, threshold, with_indices
        )
        slot_ok = tf.range(cfg.max_detections)[None, :] < tf.cast(out[3], tf.int32)[:, None]
        return (*out[:3], slot_ok, *out[4:])

    def _packed(self, out_boxes, out_scores, out_classes, slot_ok, resort=False):
        """Parts demoted, the output dict of ``detect``; ``resort``: the scores changed after the
        NMS, so sort again (valid slots first) even when no part is demoted."""
        cfg = self.config.inference
        num = tf.reduce_sum(tf.cast(slot_ok, tf.int32), axis=1)
        if cfg.part_score_factor < 1.0 or resort:
            out_boxes, out_scores, out_classes, slot_ok = nms.demote_parts(
                out_boxes,
                out_scores,
                out_classes,
                slot_ok,
                cfg.part_containment,
                cfg.part_score_factor,
                cfg.part_container_ratio,
            )
            num = tf.reduce_sum(tf.cast(slot_ok, tf.int32), axis=1)  # parts removed at factor 0
        names = tf.gather(
            tf.constant(self.class_names + [""]),
            tf.where(slot_ok, tf.cast(out_classes, tf.int32), self.num_classes),
        )
        return {
            "num_detections": tf.cast(num, tf.float32),
            "detection_boxes": tf.where(slot_ok[..., None], out_boxes, 0.0),
            "detection_scores": tf.where(slot_ok, out_scores, 0.0),
            "detection_classes": tf.where(
                slot_ok, tf.cast(out_classes, tf.float32) + constants.CLASS_ID_OFFSET, 0.0
            ),
            "detection_class_names": names,
        }


def _refinement_crops(boxes_image_yxyx, hw, cfg):
    """Refinement crops float32 [V, 4] image_yxyx of boxes [V, 4] image_yxyx in images of size
    ``hw`` [V, 2] (``policy.refinement_crop``, InferenceConfig.refine_crop)."""
    return policy.refinement_crop(
        boxes_image_yxyx, hw[:, 0], hw[:, 1], cfg.refine_enlarge, cfg.refine_crop, TENSORFLOW
    )


def _scatter_refined(slots, refined, eq3, shape):
    """Refined boxes [K, 4] and Eq. (3) scores [K] of ``slots`` [K, 2] (image, slot) into the
    [B, R] candidate slots ``shape``: zeros and INVALID_SCORE elsewhere."""
    refined = tf.scatter_nd(slots, refined, tf.concat([shape, [4]], axis=0))
    eq3 = tf.tensor_scatter_nd_update(tf.fill(shape, INVALID_SCORE), slots, eq3)
    return refined, eq3


@dataclasses.dataclass(frozen=True)
class _Candidates:
    """The per-image detections sent to the classifier and the refinement, fixed size R."""

    boxes_image_yxyx: tf.Tensor  # float32 [B, R, 4]
    classes: tf.Tensor  # int32 [B, R], 0-based
    scores: tf.Tensor  # float32 [B, R], Eq. (3)
    valid: tf.Tensor  # bool [B, R]

    def padded(self, r: int) -> _Candidates:
        k = self.classes.shape[1]

        def pad(t, v):
            return tf.pad(
                t, [[0, 0], [0, r - k]] + [[0, 0]] * (t.shape.rank - 2), constant_values=v
            )

        return _Candidates(
            pad(self.boxes_image_yxyx, 0.0),
            pad(self.classes, 0),
            pad(self.scores, INVALID_SCORE),
            pad(self.valid, False),
        )


def uint8_batch(images_uint8: tf.Tensor):
    """[B, H, W, 3] uint8 -> (float32 images, int32 sizes [B, 2]) for ``DetectorModule.detect``."""
    images_uint8 = tf.convert_to_tensor(images_uint8, tf.uint8)
    shape = tf.shape(images_uint8)
    sizes = tf.tile(shape[1:3][None, :], [shape[0], 1])
    return tf.cast(images_uint8, tf.float32), sizes
