"""Multi-scale windows: hand-worked layouts, overlap and coverage properties, tracing."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.config import InferenceConfig
from dnet_tf.core.windows import windows_per_axis
from dnet_tf.ops import windows


def test_paper_layout_has_35_windows():
    boxes, ids = windows.scale_windows(375.0, 500.0, 3, 0.2)
    assert boxes.shape == (35, 4)
    np.testing.assert_array_equal(np.bincount(ids.numpy()), [1, 9, 25])
    assert len(ids.numpy()) == sum(InferenceConfig().windows_per_scale)


def test_two_scales_hand_worked():
    # 100 x 200 image: scale 0 is the image; scale 1 windows are 50 x 100 at y in linspace(0, 50, 3)
    # = {0, 25, 50} and x in linspace(0, 100, 3) = {0, 50, 100}, row-major.
    boxes, ids = windows.scale_windows(100.0, 200.0, 2, 0.2)
    expected = [[0, 0, 100, 200]] + [
        [y, x, y + 50, x + 100] for y in (0, 25, 50) for x in (0, 50, 100)
    ]
    np.testing.assert_allclose(boxes.numpy(), expected)
    np.testing.assert_array_equal(ids.numpy(), [0] + [1] * 9)


@pytest.mark.parametrize("overlap", [0.0, 0.2, 0.5])
def test_neighbours_overlap_enough_and_windows_tile_the_image(overlap):
    h, w = 375.0, 500.0
    boxes, ids = windows.scale_windows(h, w, 4, overlap)
    boxes, ids = boxes.numpy(), ids.numpy()
    for s in range(4):
        b = boxes[ids == s]
        n = windows_per_axis(s, overlap)
        assert len(b) == n * n
        np.testing.assert_allclose(b[:, 2] - b[:, 0], h / 2**s, rtol=1e-6)
        np.testing.assert_allclose(b[:, 3] - b[:, 1], w / 2**s, rtol=1e-6)
        ys = np.unique(np.round(b[:, 0], 3))
        # First at 0, last ends at the edge; neighbours share >= overlap of the side.
        assert ys[0] == 0 and abs(ys[-1] + h / 2**s - h) < 1e-3
        if n > 1:
            step = np.diff(ys)
            assert np.all(h / 2**s - step >= overlap * h / 2**s - 1e-3)
        # Every pixel centre is inside some window of the scale.
        cy = np.arange(h) + 0.5
        covered = np.zeros(len(cy), bool)
        for y0 in ys:
            covered |= (cy >= y0) & (cy <= y0 + h / 2**s)
        assert covered.all()


def test_traced_with_tensor_size():
    fn = tf.function(
        lambda hw: windows.scale_windows(hw[0], hw[1], 3, 0.2)[0],
        input_signature=[tf.TensorSpec([2], tf.float32)],
    )
    got = fn(tf.constant([40.0, 80.0])).numpy()
    expected = windows.scale_windows(40.0, 80.0, 3, 0.2)[0].numpy()
    np.testing.assert_allclose(got, expected)
    # Scale 2, last window: 10 x 20 ending at the corner.
    np.testing.assert_allclose(got[-1], [30, 60, 40, 80], atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_scales"):
        windows.scale_windows(10.0, 10.0, 0, 0.2)
    with pytest.raises(ValueError, match="overlap"):
        windows.scale_windows(10.0, 10.0, 2, 1.0)
