"""Integral images and exact box sums: hand-worked cases, a NumPy area-overlap oracle, tracing."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.ops import integral


def np_box_sum(mask, box):
    """Sum of a piecewise-constant mask [H, W] over a continuous box, cell by cell (outside = 0)."""
    h, w = mask.shape
    y0, x0, y1, x1 = [float(v) for v in box]
    total = 0.0
    for r in range(h):
        oy = max(0.0, min(r + 1.0, y1) - max(float(r), y0))
        for c in range(w):
            ox = max(0.0, min(c + 1.0, x1) - max(float(c), x0))
            total += oy * ox * float(mask[r, c])
    return total


def test_integral_image_hand_worked():
    # m = [[1, 2], [3, 4]]: I[1,1] = 1, I[1,2] = 1+2 = 3, I[2,1] = 1+3 = 4, I[2,2] = 10.
    masks = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[..., None]
    got = integral.integral_image(masks).numpy()[..., 0]
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 1, 3], [0, 4, 10]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integral_image_matches_cumsum_with_batch_dims(seed):
    rng = np.random.default_rng(seed)
    masks = rng.uniform(0, 1, size=(2, 3, 5, 4, 3)).astype(
        np.float32
    )  # [2, 3 batch, H=5, W=4, K=3]
    got = integral.integral_image(masks).numpy()
    expected = np.zeros((2, 3, 6, 5, 3))
    expected[..., 1:, 1:, :] = masks.astype(np.float64).cumsum(-3).cumsum(-2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_edge_padded_integral_hand_worked():
    # m = [[1, 2], [3, 4]] padded by one edge copy: rows 1 1 2 / 1 1 2 / 3 3 4 / 3 3 4 after the
    # column copies -> [[1,1,2,2],[1,1,2,2],[3,3,4,4],[3,3,4,4]]; its integral's last row is the
    # column sums accumulated: 8, 16, 28, 40; the whole sum 4 x (1 + 2 + 3 + 4) = 40.
    masks = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, ..., None]
    got = integral.edge_padded_integral_image(masks, 1).numpy()[0, ..., 0]
    assert got.shape == (5, 5)
    np.testing.assert_allclose(got[-1], [0, 8, 16, 28, 40])
    np.testing.assert_allclose(got[:, -1], [0, 6, 12, 26, 40])
    np.testing.assert_allclose(got[1, 1], 1.0)


@pytest.mark.parametrize("pad", [0, 1, 5])
def test_edge_padded_integral_matches_np_pad_edge_then_cumsum(pad):
    rng = np.random.default_rng(pad)
    masks = rng.uniform(0, 1, size=(3, 7, 5, 2)).astype(np.float32)
    got = integral.edge_padded_integral_image(masks, pad).numpy()
    padded = np.pad(masks.astype(np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)], "edge")
    expected = np.zeros((3, 7 + 2 * pad + 1, 5 + 2 * pad + 1, 2))
    expected[:, 1:, 1:] = padded.cumsum(1).cumsum(2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_edge_padded_integral_rejects_unknown_sizes_and_negative_pad():
    with pytest.raises(ValueError, match="H and W known"):
        integral.edge_padded_integral_image(np.zeros((2, 3, 1), np.float32), 1)
    with pytest.raises(ValueError, match="pad must be >= 0"):
        integral.edge_padded_integral_image(np.zeros((1, 2, 3, 1), np.float32), -1)


def test_box_sums_fractional_box_hand_worked():
    # m = [[1, 2], [3, 4]], box [0.5, 0.5, 1.5, 2.0]: rows 0 and 1 half covered, column 0 half,
    # column 1 fully: 0.5*0.5*1 + 0.5*1*2 + 0.5*0.5*3 + 0.5*1*4 = 0.25 + 1 + 0.75 + 2 = 4.
    masks = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[..., None]
    got = integral.box_sums(integral.integral_image(masks), [[0.5, 0.5, 1.5, 2.0]]).numpy()
    np.testing.assert_allclose(got, [[4.0]], rtol=1e-6)


def test_box_sums_clip_to_grid_and_degenerate_boxes_are_zero():
    masks = np.ones((3, 4, 1), np.float32)
    boxes = [
        [-1.0, -2.0, 1.5, 1.0],  # clipped to [0, 0, 1.5, 1]: 1.5
        [2.0, 3.0, 9.0, 9.0],  # clipped to [2, 3, 3, 4]: 1 (touches the far corner)
        [1.0, 1.0, 1.0, 3.0],  # zero height: 0
        [2.0, 3.0, 1.0, 1.0],  # inverted: 0
        [5.0, 5.0, 7.0, 7.0],  # wholly outside: 0
        [0.0, 0.0, 3.0, 4.0],  # the whole grid: 12
    ]
    got = integral.box_sums(integral.integral_image(masks), boxes).numpy()[:, 0]
    np.testing.assert_allclose(got, [1.5, 1.0, 0.0, 0.0, 0.0, 12.0], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_box_sums_match_area_overlap_oracle(seed):
    rng = np.random.default_rng(seed)
    h, w, k = 7, 9, 2
    masks = rng.uniform(0, 1, size=(h, w, k)).astype(np.float32)
    corners = rng.uniform(-2, 11, size=(40, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=-1)  # [ymin, xmin, ymax, xmax]
    boxes = boxes.astype(np.float32)
    got = integral.box_sums(integral.integral_image(masks), boxes).numpy()
    expected = np.array([[np_box_sum(masks[..., c], b) for c in range(k)] for b in boxes])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_box_sums_batched_rows_use_their_own_integral():
    rng = np.random.default_rng(5)
    masks = rng.uniform(0, 1, size=(3, 4, 5, 2)).astype(np.float32)  # 3 canvases
    boxes = np.array(
        [[[0.5, 1.0, 3.0, 4.5]], [[1.0, 0.0, 2.0, 5.0]], [[0.0, 0.0, 4.0, 5.0]]], np.float32
    )
    got = integral.box_sums(integral.integral_image(masks), boxes).numpy()
    for b in range(3):
        for c in range(2):
            assert got[b, 0, c] == pytest.approx(
                np_box_sum(masks[b, ..., c], boxes[b, 0]), rel=1e-5
            )


def test_box_coverage_divides_by_the_box_own_area():
    # A 2 x 2 box half outside the grid over ones: sum 2 (the inside half) / area 4 = 0.5.
    # An empty box has coverage 0, not NaN.
    masks = np.ones((4, 4, 1), np.float32)
    got = integral.box_coverage(
        integral.integral_image(masks), [[-1.0, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
    )
    np.testing.assert_allclose(got.numpy()[:, 0], [0.5, 0.0])


def test_traced_with_unknown_sizes():
    fn = tf.function(
        lambda m, b: integral.box_coverage(integral.integral_image(m), b),
        input_signature=[
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
        ],
    )
    rng = np.random.default_rng(3)
    for h, w in [(3, 5), (6, 2)]:
        masks = rng.uniform(0, 1, size=(h, w, 2)).astype(np.float32)
        boxes = np.array([[0.25, 0.5, 2.5, 1.75]], np.float32)
        expected = [np_box_sum(masks[..., c], boxes[0]) / (2.25 * 1.25) for c in range(2)]
        np.testing.assert_allclose(fn(masks, boxes).numpy()[0], expected, rtol=1e-5)


def test_rejects_boxes_without_matching_batch_dims():
    with pytest.raises(ValueError, match="batch dimensions"):
        integral.box_sums(tf.zeros([2, 4, 4, 1]), tf.zeros([3, 4]))
