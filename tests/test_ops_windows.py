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


# --- The window gate's regions and rule (dnet_tf.core.windows) ---------------------------------


def test_coarser_cells_hand_worked():
    from dnet_tf.core.windows import coarser_cells

    # 2 scales, overlap 0.2, d = 4: the whole image's cells are quarters [k/4, (k+1)/4); scale 1's
    # windows (side 0.5) start at 0, 0.25 and 0.5 on each axis, row-major.
    ((rows, cols),) = coarser_cells(2, 0.2, 4)
    assert rows.shape == cols.shape == (9, 1, 4)
    by_start = {0: [1, 1, 0, 0], 1: [0, 1, 1, 0], 2: [0, 0, 1, 1]}  # cells [0, .5), ...
    for i in range(9):
        np.testing.assert_array_equal(rows[i, 0], by_start[i // 3])
        np.testing.assert_array_equal(cols[i, 0], by_start[i % 3])
    # 3 scales: scale 2's windows (side 0.25, starts 0, 0.1875, ..., 0.75) against the whole
    # image and scale 1's 9 windows, d = 2 (cells of 0.5 and 0.25). The first window [0, 0.25)
    # lies over cell 0 of the whole image, over cell 0 of the windows starting at 0, over
    # none of those starting at 0.25 (touching only) or 0.5.
    regions = coarser_cells(3, 0.2, 2)
    rows2, cols2 = regions[1]
    assert rows2.shape == (25, 10, 2)
    np.testing.assert_array_equal(rows2[0, 0], [1, 0])
    np.testing.assert_array_equal(rows2[0, 1], [1, 0])  # scale-1 window at row start 0
    np.testing.assert_array_equal(rows2[0, 4], [0, 0])  # scale-1 window at row start 0.25
    # the window at 0.1875 ([0.1875, 0.4375)): the 0.25-start window's cell 0 is [0.25, 0.5)
    np.testing.assert_array_equal(rows2[5, 4], [1, 0])
    np.testing.assert_array_equal(rows2[5, 1], [1, 1])  # [0, .25) and [.25, .5) of [0, .5)


def test_window_peaks_and_gate_from_the_definition():
    from dnet_tf.core.windows import coarser_cells, window_peaks, windows_to_run
    from dnet_tf.ops.xp import TENSORFLOW

    rng = np.random.default_rng(0)
    d = 6
    rows, cols = coarser_cells(3, 0.2, d)[1]
    full = rng.uniform(0, 1, (2, 10, d, d)).astype(np.float32) ** 4
    # Oracle: for every window, the max of the coarser cells whose rows and columns both lie
    # over it, by explicit loops.
    want = np.zeros((2, 25), np.float32)
    for b in range(2):
        for i in range(25):
            for v in range(10):
                for r in range(d):
                    for c in range(d):
                        if rows[i, v, r] and cols[i, v, c]:
                            want[b, i] = max(want[b, i], full[b, v, r, c])
    np.testing.assert_allclose(window_peaks(full, rows, cols), want, rtol=0, atol=0)
    got_tf = window_peaks(tf.constant(full), tf.constant(rows), tf.constant(cols), TENSORFLOW)
    np.testing.assert_allclose(got_tf.numpy(), want, rtol=0, atol=0)
    # The gate: strictly above it; 0 runs every window, even one over nothing at all.
    peaks = np.array([0.0, 0.2, 0.2001, 0.9], np.float32)
    np.testing.assert_array_equal(windows_to_run(peaks, 0.2), [False, False, True, True])
    np.testing.assert_array_equal(windows_to_run(peaks, 0.0), [True] * 4)
