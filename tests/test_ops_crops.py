"""Crops and the paste-back of window masks, against a NumPy bilinear oracle and tf.image.resize."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.ops import crops


def np_bilinear(img, yi, xi):
    """img [H, W, C] at index coordinates (pixel centres at integers), clamped to the grid."""
    h, w = img.shape[:2]
    yi, xi = min(max(yi, 0.0), h - 1.0), min(max(xi, 0.0), w - 1.0)
    y0, x0 = int(np.floor(yi)), int(np.floor(xi))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ty, tx = yi - y0, xi - x0
    top = img[y0, x0] * (1 - tx) + img[y0, x1] * tx
    bottom = img[y1, x0] * (1 - tx) + img[y1, x1] * tx
    return top * (1 - ty) + bottom * ty


def np_crop(img, box, size, extrapolation):
    h, w = img.shape[:2]
    y0, x0, y1, x1 = box
    out = np.zeros((size, size, img.shape[2]))
    for i in range(size):
        y = y0 + (i + 0.5) * (y1 - y0) / size
        for j in range(size):
            x = x0 + (j + 0.5) * (x1 - x0) / size
            if y < 0 or y > h or x < 0 or x > w:
                out[i, j] = extrapolation
            else:
                out[i, j] = np_bilinear(img, y - 0.5, x - 0.5)
    return out


def test_crop_hand_worked_single_sample_is_the_centre():
    # The 2 x 2 image [[0, 10], [20, 30]] squeezed to one sample: the centre (1, 1), index
    # (0.5, 0.5), the mean 15. The top-left quarter box [0, 0, 1, 1] samples (0.5, 0.5) -> 0.
    img = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)[None, :, :, None]
    got = crops.crop_and_resize(img, [[0, 0, 2, 2], [0, 0, 1, 1]], [0, 0], 1).numpy()
    np.testing.assert_allclose(got[:, 0, 0, 0], [15.0, 0.0], atol=1e-4)


@pytest.mark.parametrize("size", [3, 16, 40])
def test_whole_image_box_equals_tf_image_resize(size):
    rng = np.random.default_rng(size)
    img = rng.uniform(0, 255, size=(1, 11, 17, 3)).astype(np.float32)
    got = crops.crop_and_resize(img, [[0, 0, 11, 17]], [0], size).numpy()
    expected = tf.image.resize(img, [size, size], method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)  # 0..255 values, float32 coordinates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crops_match_numpy_oracle_including_outside_parts(seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(2, 9, 13, 3)).astype(np.float32)
    corners = rng.uniform(-6, 18, size=(6, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1) + 1.0], axis=-1).astype(np.float32)
    indices = np.array([0, 1, 0, 1, 1, 0], np.int32)
    got = crops.crop_and_resize(images, boxes, indices, 7, extrapolation_value=-3.0).numpy()
    for n in range(6):
        np.testing.assert_allclose(
            got[n], np_crop(images[indices[n]], boxes[n], 7, -3.0), atol=2e-3
        )


def test_samples_outside_the_image_get_the_extrapolation_value():
    # Box [-2, -2, 2, 2] on a 4 x 4 image of ones, 4 samples per axis at -1.5, -0.5, 0.5, 1.5:
    # rows/columns 0 and 1 are outside (value 9), the inner 2 x 2 reads the image (1).
    img = np.ones((1, 4, 4, 1), np.float32)
    got = crops.crop_and_resize(img, [[-2, -2, 2, 2]], [0], 4, extrapolation_value=9.0).numpy()[
        0, ..., 0
    ]
    expected = np.full((4, 4), 9.0)
    expected[2:, 2:] = 1.0
    np.testing.assert_allclose(got, expected)


def test_crop_traced_with_unknown_image_size():
    fn = tf.function(
        lambda im, b: crops.crop_and_resize(im, b, tf.zeros([tf.shape(b)[0]], tf.int32), 5),
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
        ],
    )
    rng = np.random.default_rng(4)
    for h, w in [(6, 8), (10, 3)]:
        img = rng.uniform(0, 1, size=(1, h, w, 3)).astype(np.float32)
        box = np.array([[0.5, -1.0, h - 1.0, w + 0.5]], np.float32)
        np.testing.assert_allclose(
            fn(img, box).numpy()[0], np_crop(img[0], box[0], 5, 0.0), atol=1e-5
        )


def np_paste_max(masks, windows, hc, wc):
    n, d, _, k = masks.shape
    canvas = np.zeros((hc, wc, k))
    for r in range(hc):
        for c in range(wc):
            for i in range(n):
                wy0, wx0, wy1, wx1 = windows[i]
                cy, cx = r + 0.5, c + 0.5
                if wy0 <= cy < wy1 and wx0 <= cx < wx1:
                    u = (cy - wy0) * d / (wy1 - wy0) - 0.5
                    v = (cx - wx0) * d / (wx1 - wx0) - 0.5
                    canvas[r, c] = np.maximum(canvas[r, c], np_bilinear(masks[i], u, v))
    return canvas


def test_paste_single_window_over_the_canvas_is_a_bilinear_resize():
    # A window covering the whole 12 x 8 canvas: the canvas is tf.image.resize of its 4 x 4 masks
    # (half-pixel centres, clamped at the edges); a 4 x 4 canvas gets the masks unchanged.
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, size=(1, 4, 4, 3)).astype(np.float32)
    got = crops.paste_max(masks, [[0, 0, 12, 8]], 12, 8).numpy()
    expected = tf.image.resize(masks, [12, 8], method="bilinear", antialias=False).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(
        crops.paste_max(masks, [[0, 0, 4, 4]], 4, 4).numpy(), masks[0], atol=1e-5
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_paste_max_matches_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    masks = rng.uniform(0, 1, size=(5, 4, 4, 2)).astype(np.float32)
    # Overlapping windows with fractional extents, one touching the far corner, one poking out.
    windows = np.array(
        [
            [0, 0, 10, 14],
            [0, 0, 5, 7],
            [2.5, 3.5, 7.5, 10.5],
            [5, 7, 10, 14],
            [-1.5, 9.0, 4.0, 16.0],
        ],
        np.float32,
    )
    got = crops.paste_max(masks, windows, 10, 14).numpy()
    np.testing.assert_allclose(got, np_paste_max(masks, windows, 10, 14), atol=1e-5)


def test_paste_uncovered_cells_are_zero_and_canvas_size_is_dynamic():
    fn = tf.function(
        lambda m, w, h, wd: crops.paste_max(m, w, h, wd),
        input_signature=[
            tf.TensorSpec([None, 3, 3, None], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    masks = np.full((1, 3, 3, 1), 0.7, np.float32)
    got = fn(masks, np.array([[1, 2, 4, 5]], np.float32), 6, 7).numpy()[..., 0]
    expected = np.zeros((6, 7))
    expected[1:4, 2:5] = 0.7
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 4), (3, 1, 7, 2)])
def test_replicate_border_equals_symmetric_pad_of_one(shape):
    x = tf.random.stateless_uniform(shape, seed=[1, 2])
    want = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    np.testing.assert_array_equal(crops.replicate_border(x).numpy(), want.numpy())
    # Hand-worked corner: the padded corner is the image's corner value.
    assert crops.replicate_border(x)[0, 0, 0, 0] == x[0, 0, 0, 0]
