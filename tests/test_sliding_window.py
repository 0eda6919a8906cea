"""The sliding-window baseline: box grid counted by hand, crops, NMS, a planted object found."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.core.nms import greedy_nms
from dnet_tf.evaluation.sliding_window import (
    SlidingWindowConfig,
    SlidingWindowDetector,
    count_boxes,
    default_aspect_ratios,
    grid_scales,
    sliding_window_boxes,
    sliding_window_detect,
    stride_multiplier_for_budget,
)


def _small_cfg(**kw):
    return SlidingWindowConfig(
        aspect_ratios=(1.0, 2.0), scales=(0.4, 1.0), stride_px=5.0, stride_multiplier=2, **kw
    )


def test_grid_count_worked_by_hand():
    # Image 40 x 60 (H x W): mean side M = 50; stride 5 x 2 = 10 px.
    #  s=0.4, r=1: h = w = 2*0.4*50/2 = 20.    rows ceil(20/10)+1 = 3, cols ceil(40/10)+1 = 5 -> 15
    #  s=0.4, r=2: h = 40/3 = 13.33, w = 26.67. rows ceil(26.67/10)+1 = 4,
    #  cols ceil(33.33/10)+1 = 5 -> 20
    #  s=1.0, r=1: h = w = 50 -> h clipped to 40. rows 1, cols ceil(10/10)+1 = 2 -> 2
    #  s=1.0, r=2: h = 33.33, w = 66.67 -> w clipped to 60. rows ceil(6.67/10)+1 = 2, cols 1 -> 2
    cfg = _small_cfg()
    boxes = sliding_window_boxes(40, 60, cfg)
    assert len(boxes) == 15 + 20 + 2 + 2 == count_boxes(40, 60, cfg)
    # The first shape's 15 boxes: rows 0, 10, 20 x cols 0, 10, 20, 30, 40, 20 px square.
    ys, xs = np.meshgrid([0, 10, 20], [0, 10, 20, 30, 40], indexing="ij")
    np.testing.assert_allclose(
        boxes[:15], np.stack([ys.ravel(), xs.ravel(), ys.ravel() + 20, xs.ravel() + 20], 1)
    )
    # Second shape: 4 rows evenly from 0 to 40 - 13.33 = 26.67 (step 8.89 <= 10), last flush with
    # the edge.
    np.testing.assert_allclose(np.unique(boxes[15:35, 0]), np.linspace(0, 80 / 3, 4), rtol=1e-6)
    np.testing.assert_allclose(boxes[15:35, 2].max(), 40.0, rtol=1e-6)
    # The two clipped shapes span the image's height and width.
    np.testing.assert_allclose(boxes[35:37], [[0, 0, 40, 50], [0, 10, 40, 60]])
    np.testing.assert_allclose(boxes[37:39], [[0, 0, 100 / 3, 60], [20 / 3, 0, 40, 60]], rtol=1e-6)


def test_default_grid_is_eight_ratios_by_ten_scales_and_the_papers_count():
    ratios = default_aspect_ratios()
    assert (
        len(ratios) == 8 and ratios[0] == pytest.approx(1 / 3) and ratios[-1] == pytest.approx(3.0)
    )
    np.testing.assert_allclose(np.array(ratios) * np.array(ratios[::-1]), 1.0)  # w <-> h symmetric
    # A 375 x 500 VOC image at the paper's 5 px stride: ~150,000 boxes, as the paper says.
    n = count_boxes(375, 500, SlidingWindowConfig())
    assert 140_000 < n < 180_000
    # Doubling the stride divides the count by about four.
    assert count_boxes(375, 500, SlidingWindowConfig(stride_multiplier=2)) == pytest.approx(
        n / 4, rel=0.1
    )


def test_nms_suppresses_strictly_above_threshold_as_the_detector():
    # The project's one NMS rule (the detector's TF kernel): b0 best; b1 IoU with b0 = 50/100 = 0.5
    # exactly -> kept (not > 0.5); b2 IoU 40/110 < 0.5 -> kept; b3 IoU with b2 = 1 -> suppressed.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 6, 10, 11], [0, 6, 10, 11]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert list(greedy_nms(boxes, scores, 10, 0.5)) == [0, 1, 2]
    assert list(greedy_nms(boxes, scores, 1, 0.5)) == [0]
    tf_keep = tf.image.non_max_suppression(boxes, scores, 10, iou_threshold=0.5).numpy()
    assert list(tf_keep) == [0, 1, 2]


def _object_pattern(side):
    """The planted object: red rising left to right, green rising top to bottom, no blue; the
    ramps let a crop tell which part of the object it holds."""
    ramp = (np.arange(side) + 0.5) / side * 255.0
    return np.stack(
        [
            np.broadcast_to(ramp[None, :], (side, side)),
            np.broadcast_to(ramp[:, None], (side, side)),
            np.zeros((side, side)),
        ],
        -1,
    )


class _JaccardFromRamps(keras.layers.Layer):
    """Stub classifier head whose P(object) estimates the crop's Jaccard with the planted object
    from the crop alone: object pixels are those without blue (the grey background has B = 128);
    f = object fraction of the crop; g = (red range) x (green range) / 255^2 = fraction of the
    object inside the crop; Jaccard = 1 / (1/f + 1/g - 1). Counts the crops it is given."""

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="float32", name="seen"
        )

    def call(self, x):
        self.seen.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "float32"))
        obj = keras.ops.cast(x[..., 2] < 64.0, "float32")  # [B, S, S]
        f = keras.ops.mean(obj, axis=(1, 2))

        def spread(c):
            hi = keras.ops.max(c * obj, axis=(1, 2))
            lo = keras.ops.min(c + 1e4 * (1.0 - obj), axis=(1, 2))
            return keras.ops.clip(hi - lo, 0.0, 255.0) / 255.0

        g = spread(x[..., 0]) * spread(x[..., 1])
        eps = 1e-6
        p = 1.0 / (1.0 / (f + eps) + 1.0 / (g + eps) - 1.0)
        p = keras.ops.clip(p, 0.0, 1.0)
        return keras.ops.stack([1.0 - p, p], axis=-1)


def _stub_classifier(size=40):
    inp = keras.Input((size, size, 3))
    layer = _JaccardFromRamps()
    return keras.Model(inp, layer(inp)), layer


def _iou(boxes, box):
    ih = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iw = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ih * iw
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def test_planted_object_found_within_a_few_pixels_with_exact_evaluation_count():
    # 80 x 120 grey image (M = 100) with the 40 x 40 object at [20, 40, 60, 80].
    obj = np.array([20.0, 40.0, 60.0, 80.0])
    image = np.full((80, 120, 3), 128, np.uint8)
    image[20:60, 40:80] = np.round(_object_pattern(40)).astype(np.uint8)
    model, layer = _stub_classifier()
    cfg = SlidingWindowConfig()  # the paper's grid: 8 ratios x 10 scales, 5 px stride
    result = sliding_window_detect(model, [image], cfg)[0]
    # Every grid box went through the classifier exactly once, and that is the count reported.
    assert result["network_evaluations"] == count_boxes(80, 120, cfg) == int(layer.seen.numpy())
    top = result["boxes_yxyx"][0]
    # Scale 0.4 gives mean side 40; the ratios nearest 1 (0.855, 1.170) give 43.1 x 36.9 boxes
    # (3.1 px per side off a 40 px square), placed on a grid of steps <= 5 px; the best grid boxes
    # (Jaccard 0.824 and 0.822) are off by at most 4.1 px on a side.
    assert np.abs(top - obj).max() <= 4.5, top
    assert result["classes"][0] == 0
    # Brute force over the grid: the top detection is (nearly) the best-overlapping grid box.
    best = _iou(sliding_window_boxes(80, 120, cfg).astype(np.float64), obj).max()
    assert best == pytest.approx(0.824, abs=1e-3)
    assert _iou(top[None].astype(np.float64), obj)[0] >= best - 0.01
    # NMS: no other kept box overlaps the top one at Jaccard >= 0.5; scores descend.
    assert np.all(_iou(result["boxes_yxyx"][1:].astype(np.float64), top) < 0.5)
    assert np.all(np.diff(result["scores"]) <= 0)


def test_planted_object_on_the_grid_is_found_exactly():
    # One ratio (1), scales 0.3/0.4/0.5 of M = 100 -> 30/40/50 px squares; a 40 px box slides in
    # steps of 40/8 = 5 px (80 - 40 = 40 = 8 strides), so [20, 40, 60, 80] is a grid box.
    image = np.full((80, 120, 3), 128, np.uint8)
    image[20:60, 40:80] = np.round(_object_pattern(40)).astype(np.uint8)
    model, _ = _stub_classifier()
    result = sliding_window_detect(
        model, [image], SlidingWindowConfig(aspect_ratios=(1.0,), scales=(0.3, 0.4, 0.5))
    )
    np.testing.assert_allclose(result[0]["boxes_yxyx"][0], [20, 40, 60, 80], atol=1e-4)
    # The ramps run from 0.5/40 to 39.5/40 of 255: g = (39/40)^2, f = 1 -> Jaccard estimate 0.95.
    assert result[0]["scores"][0] == pytest.approx((39 / 40) ** 2, abs=0.01)


def test_small_image_evaluation_count_and_batches():
    # The 40 x 60 grid above: 39 boxes; batches of 16 -> 16 + 16 + 7 crops, 39 evaluations.
    model, layer = _stub_classifier(size=32)
    det = SlidingWindowDetector(model, _small_cfg(batch_size=16))
    result = det.detect(np.full((40, 60, 3), 128, np.uint8))
    assert result["network_evaluations"] == 39 == int(layer.seen.numpy())
    # On a grey image no crop holds object pixels (B = 128): f = 0, so every score is ~0.
    assert np.all(result["scores"] < 1e-5)


def test_bad_config_and_classifier_are_refused():
    with pytest.raises(ValueError, match="'stride_multiplier': must be >= 1"):
        SlidingWindowConfig(stride_multiplier=0.5).validate()
    inp = keras.Input((8, 16, 3))
    with pytest.raises(ValueError, match="classifier input must be"):
        SlidingWindowDetector(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp)))


def test_smaller_grids_keep_the_range_and_the_budget_sets_the_stride():
    assert grid_scales(10) == SlidingWindowConfig().scales  # the paper's 0.1 ... 1.0
    assert grid_scales(4) == (0.1, 0.4, 0.7, 1.0)
    assert grid_scales(1) == (0.55,)
    with pytest.raises(ValueError, match="integer >= 1"):
        grid_scales(0)
    # One 100 x 100 image, one 50 px square (scale 0.5, ratio 1), 5 px stride x m: a box slides
    # over 50 px in ceil(50 / (5 m)) + 1 steps per axis. 9 boxes = 3 x 3 steps need
    # ceil(10 / m) = 2, i.e. m >= 5; 8 boxes allow only 2 x 2 = 4: ceil(10 / m) = 1, m >= 10.
    cfg = SlidingWindowConfig(aspect_ratios=(1.0,), scales=(0.5,))
    for budget, want, boxes in ((9, 5.0, 9), (8, 10.0, 4), (121, 1.0, 121), (1000, 1.0, 121)):
        m = stride_multiplier_for_budget([(100, 100)], cfg, budget)
        assert m == pytest.approx(want, rel=1e-5)
        assert count_boxes(100, 100, dataclasses.replace(cfg, stride_multiplier=m)) == boxes
    # The mean over images: a 100 x 100 and a 50 x 50 image (its box is 25 px, room 25 px:
    # ceil(5 / m) + 1 steps). m = 5: 9 and 4 boxes, mean 6.5; just below 5: 16 and 9.
    assert stride_multiplier_for_budget([(100, 100), (50, 50)], cfg, 6.5) == pytest.approx(5.0)
    # Below the least count (2 x 2 positions of the one shape) no stride will do.
    with pytest.raises(ValueError, match="below the grid's least count 4"):
        stride_multiplier_for_budget([(100, 100)], cfg, 3)
