"""Box utilities: hand-worked cases, a NumPy oracle, and graph tracing with unknown shapes."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.ops import boxes


def np_iou(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            ua = (
                max(0.0, p[2] - p[0]) * max(0.0, p[3] - p[1])
                + max(0.0, q[2] - q[0]) * max(0.0, q[3] - q[1])
                - inter
            )
            out[i, j] = inter / ua if ua > 0 else 0.0
    return out


def test_area_hand_worked_and_inverted_is_zero():
    # 2 x 3 box -> 6; inverted (ymax < ymin) -> 0; zero width -> 0.
    got = boxes.area(
        tf.constant([[1.0, 1.0, 3.0, 4.0], [3.0, 0.0, 1.0, 2.0], [0.0, 5.0, 4.0, 5.0]])
    )
    np.testing.assert_allclose(got.numpy(), [6.0, 0.0, 0.0])


def test_iou_hand_worked():
    # [0,0,2,2] and [1,1,3,3]: intersection 1x1 = 1, union 4 + 4 - 1 = 7 -> 1/7.
    # Touching boxes [0,0,2,2] and [0,2,2,4]: intersection 0.
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[1.0, 1.0, 3.0, 3.0], [0.0, 2.0, 2.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(boxes.iou(a, b).numpy(), [[1.0 / 7.0, 0.0, 1.0]], rtol=1e-6)


def test_iou_degenerate_boxes_give_zero_not_nan():
    a = tf.constant([[1.0, 1.0, 1.0, 1.0]])  # zero area
    got = boxes.iou(a, a).numpy()
    assert got[0, 0] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matches_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 20, size=(7, 4)).astype(np.float32)
    b = rng.uniform(0, 20, size=(5, 4)).astype(np.float32)
    # Make some valid ordered boxes and keep a few inverted ones on purpose.
    a[:5] = np.concatenate([np.minimum(a[:5, :2], a[:5, 2:]), np.maximum(a[:5, :2], a[:5, 2:])], 1)
    np.testing.assert_allclose(boxes.iou(a, b).numpy(), np_iou(a, b), rtol=1e-5, atol=1e-6)


def test_clip_to_image_border():
    got = boxes.clip(tf.constant([[-5.0, -1.0, 10.0, 30.0]]), 8, 20).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.0, 8.0, 20.0]])


def test_clip_numpy_one_frame_per_box():
    # Box 0 in a 8 x 20 frame: y -5 -> 0, x 30 -> 20. Box 1 in a 4 x 4 frame lies wholly below
    # it, so both its y's become 4 (an empty box), its x's are inside and stay.
    from dnet_tf.core import boxes as core_boxes

    b = np.array([[-5.0, -1.0, 10.0, 30.0], [6.0, 1.0, 9.0, 3.0]], np.float32)
    got = core_boxes.clip(b, np.array([8.0, 4.0], np.float32), np.array([20.0, 4.0], np.float32))
    np.testing.assert_array_equal(got, [[0.0, 0.0, 8.0, 20.0], [4.0, 1.0, 4.0, 3.0]])
    assert got.dtype == np.float32


def test_scale_about_center():
    # Centre (5, 10), height 4 -> 4.8, width 10 -> 12 under factor 1.2.
    got = boxes.scale_about_center(tf.constant([[3.0, 5.0, 7.0, 15.0]]), 1.2).numpy()
    np.testing.assert_allclose(got, [[2.6, 4.0, 7.4, 16.0]], rtol=1e-6)


def test_voc_conversion_whole_image_and_round_trip():
    # VOC (1, 1, 500, 375) on a 500 x 375 image covers it all: continuous [0, 0, 375, 500].
    got = boxes.voc_to_yxyx(tf.constant([[1.0, 1.0, 500.0, 375.0]])).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.0, 375.0, 500.0]])
    # A single VOC pixel (x=3, y=7) -> [6, 2, 7, 3], area 1.
    one = boxes.voc_to_yxyx(tf.constant([3.0, 7.0, 3.0, 7.0]))
    np.testing.assert_allclose(one.numpy(), [6.0, 2.0, 7.0, 3.0])
    assert float(boxes.area(one)) == 1.0
    voc = np.array([[48.5, 240.0, 195.0, 371.0]], np.float32)  # float coords as in VOC2012
    np.testing.assert_allclose(boxes.yxyx_to_voc(boxes.voc_to_yxyx(voc)).numpy(), voc)


def test_frames_round_trip_and_hand_worked():
    # Window [100, 200, 200, 400] resized to a 24 x 24 grid: image point (150, 300) ->
    # cell (12, 12).
    window = tf.constant([100.0, 200.0, 200.0, 400.0])
    b = tf.constant([[150.0, 300.0, 200.0, 400.0]])
    cell = boxes.to_frame(b, window, 24, 24)
    np.testing.assert_allclose(cell.numpy(), [[12.0, 12.0, 24.0, 24.0]], rtol=1e-6)
    np.testing.assert_allclose(boxes.from_frame(cell, window, 24, 24).numpy(), b.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        boxes.normalize(b, 300, 500).numpy(), [[0.5, 0.6, 2 / 3, 0.8]], rtol=1e-6
    )
    np.testing.assert_allclose(
        boxes.denormalize(boxes.normalize(b, 300, 500), 300, 500).numpy(), b.numpy()
    )


def test_traced_with_unknown_sizes():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def f(b, h, w):
        return boxes.iou(boxes.clip(b, h, w), b)

    got = f(tf.constant([[-1.0, -1.0, 3.0, 3.0]]), tf.constant(2), tf.constant(2)).numpy()
    # Clipped [0,0,2,2] (area 4) inside the original (area 16): IoU 4/16.
    np.testing.assert_allclose(got, [[0.25]])
