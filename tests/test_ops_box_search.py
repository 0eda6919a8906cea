"""Eq. (3) scores and the exhaustive box search against a slow NumPy brute force.

The oracle below is written from the paper's formulas, cell by cell: S(b, m) = sum over cells of
m * area(b & cell) / area(b), the ring = bb grown by round_half_up(margin * side) (>= 1) cells,
clipped to the grid, minus bb. Masks use multiples of 1/4 so that every sum is exact in float32
and threshold cases (coverage exactly 0.5) are decided exactly.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.ops import box_search, integral

MARGIN = 0.2


def overlap_weights(box, h, w):
    """[h, w] area of each cell inside the box (clipped to the grid)."""
    y0, x0, y1, x1 = box
    oy = np.clip(np.minimum(np.arange(1, h + 1), y1) - np.maximum(np.arange(h), y0), 0, None)
    ox = np.clip(np.minimum(np.arange(1, w + 1), x1) - np.maximum(np.arange(w), x0), 0, None)
    return np.outer(oy, ox)


def mean_over(mask, box):
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    return 0.0 if area <= 0 else float((overlap_weights(box, *mask.shape) * mask).sum() / area)


def np_eq3(masks, box, margin=MARGIN):
    """Eq. (3) and Eq. (2) of one box on masks [H, W, 5] (full, top, bottom, left, right)."""
    h, w, _ = masks.shape
    y0, x0, y1, x1 = [float(v) for v in box]
    ym, xm = (y0 + y1) / 2, (x0 + x1) / 2
    top, bottom = (y0, x0, ym, x1), (ym, x0, y1, x1)
    left, right = (y0, x0, y1, xm), (y0, xm, y1, x1)
    full = masks[..., 0]
    coverage = mean_over(full, (y0, x0, y1, x1))
    gy = max(math.floor(margin * max(y1 - y0, 0) + 0.5), 1)
    gx = max(math.floor(margin * max(x1 - x0, 0) + 0.5), 1)
    outer = (y0 - gy, x0 - gx, y1 + gy, x1 + gx)
    w_outer, w_box = overlap_weights(outer, h, w), overlap_weights((y0, x0, y1, x1), h, w)
    ring_area = w_outer.sum() - w_box.sum()
    ring = float(((w_outer - w_box) * full).sum() / ring_area) if ring_area > 0 else 0.0
    score = (
        coverage
        - ring
        + mean_over(masks[..., 1], top)
        - mean_over(masks[..., 1], bottom)
        + mean_over(masks[..., 2], bottom)
        - mean_over(masks[..., 2], top)
        + mean_over(masks[..., 3], left)
        - mean_over(masks[..., 3], right)
        + mean_over(masks[..., 4], right)
        - mean_over(masks[..., 4], left)
    )
    return score, coverage


def np_search(masks, shapes_hw, stride, threshold):
    """All boxes of a brute-force search on masks [H, W, 5] -> list of (score, box, coverage)."""
    h, w, _ = masks.shape
    found = []
    for sh, sw in shapes_hw:
        bh = min(max(math.floor(sh + 0.5), 1), h)
        bw = min(max(math.floor(sw + 0.5), 1), w)
        for y in range(0, h - bh + 1, stride):
            for x in range(0, w - bw + 1, stride):
                box = (y, x, y + bh, x + bw)
                score, cov = np_eq3(masks, box)
                if cov > threshold:
                    found.append((score, box, cov))
    return found


def quarter_masks(rng, h, w, c):
    return (rng.integers(0, 5, size=(h, w, 5, c)) / 4.0).astype(np.float32)


def eq1_masks(h, w, box):
    """Eq. (1) masks [h, w, 5] of one box in cell coordinates: cell fraction covered by each
    half."""
    y0, x0, y1, x1 = box
    ym, xm = (y0 + y1) / 2, (x0 + x1) / 2
    parts = [
        (y0, x0, y1, x1),
        (y0, x0, ym, x1),
        (ym, x0, y1, x1),
        (y0, x0, y1, xm),
        (y0, xm, y1, x1),
    ]
    return np.stack([overlap_weights(p, h, w) for p in parts], axis=-1).astype(np.float32)


def assert_valid_top(result, masks, shapes, stride, threshold, m):
    """The result of one class is a correct top-m: scores equal the brute force's best m values,
    and each returned box has the brute-force score and coverage it claims."""
    found = np_search(masks, shapes, stride, threshold)
    best = sorted((f[0] for f in found), reverse=True)[:m]
    n_valid = int(result["valid"].sum())
    assert n_valid == min(m, len(found))
    np.testing.assert_allclose(result["scores"][:n_valid], best, atol=1e-5)
    boxes = [tuple(b) for b in result["boxes"][:n_valid]]
    assert len(set(boxes)) == n_valid
    for box, score, cov in zip(boxes, result["scores"], result["coverage"]):
        s, c = np_eq3(masks, box)
        assert (
            s == pytest.approx(score, abs=1e-5)
            and c == pytest.approx(cov, abs=1e-6)
            and c > threshold
        )
    assert np.all(np.isneginf(result["scores"][n_valid:])) and not result["valid"][n_valid:].any()


def per_class(res, c):
    return {
        "scores": res.scores.numpy()[c],
        "boxes": res.boxes_cell_yxyx.numpy()[c],
        "coverage": res.coverage.numpy()[c],
        "valid": res.valid.numpy()[c],
    }


def test_box_shapes_hand_worked_fraction_major():
    # mean side 100: f = 0.5, a = 2 -> h = 2 * 0.5 * 100 / 3 = 33.33, w = 66.67; a = 1 -> 50 x 50.
    got = box_search.box_shapes(100.0, [0.5, 0.2], [1.0, 2.0]).numpy()
    np.testing.assert_allclose(
        got, [[50, 50], [100 / 3, 200 / 3], [20, 20], [40 / 3, 80 / 3]], rtol=1e-6
    )
    # Each shape's mean side is f * 100.
    np.testing.assert_allclose(got.mean(axis=1), [50, 50, 20, 20], rtol=1e-6)


def test_ring_width_rounds_half_up_with_one_cell_minimum():
    # 0.2 * 12 = 2.4 -> 2; 0.2 * 13 = 2.6 -> 3; 0.2 * 12.5 = 2.5 -> 3 (half up); 0.2 * 2 -> 1.
    got = box_search.ring_width(tf.constant([12.0, 13.0, 12.5, 2.0, 0.0]), 0.2).numpy()
    np.testing.assert_array_equal(got, [2, 3, 3, 1, 1])
    np.testing.assert_array_equal(box_search.ring_width(tf.constant([7.0]), 0.0).numpy(), [0])


def test_eq3_hand_worked_on_a_planted_box():
    # Masks of the box [2, 2, 6, 6] on an 8 x 8 grid (Eq. (1), whole cells).
    masks = eq1_masks(8, 8, (2, 2, 6, 6))[..., None]  # [8, 8, 5, C=1]
    integ = integral.integral_image(masks.reshape(8, 8, 5))
    # The box itself: every bracket is 1 - 0; the ring (1 cell: round(0.8 + 0.5) = 1) is empty: 5.
    # Shifted one row down, [3, 2, 7, 6]: coverage 12/16 = 0.75; ring: outer [2, 1, 8, 7], area 36
    # - 16 = 20, holding the 4 object cells of row 2 -> 0.2; top mask (rows 2-3): top half (rows
    # 3-4) 4/8, bottom half 0 -> 0.5; bottom mask (rows 4-5): 4/8 in each half -> 0; left mask
    # (rows 2-5, cols 2-3): left half 6/8, right half 0 -> 0.75; right mask likewise 0.75.
    # 0.75 - 0.2 + 0.5 + 0 + 0.75 + 0.75 = 2.55.
    eq3, cov = box_search.eq3_scores(integ, [[2.0, 2.0, 6.0, 6.0], [3.0, 2.0, 7.0, 6.0]], MARGIN)
    np.testing.assert_allclose(eq3.numpy()[:, 0], [5.0, 2.55], atol=1e-6)
    np.testing.assert_allclose(cov.numpy()[:, 0], [1.0, 0.75], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eq3_scores_match_oracle_with_fractional_and_outside_boxes(seed):
    rng = np.random.default_rng(seed)
    h, w, c = 9, 7, 2
    masks = rng.uniform(0, 1, size=(h, w, 5, c)).astype(np.float32)
    corners = rng.uniform(-2, 10, size=(12, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=-1).astype(np.float32)
    boxes[0] = [0, 0, h, w]  # the whole grid: the ring has no area
    boxes[1] = [2, 3, 2, 6]  # zero height
    eq3, cov = box_search.eq3_scores(
        integral.integral_image(masks.reshape(h, w, 5 * c)), boxes, MARGIN
    )
    for i, box in enumerate(boxes):
        for k in range(c):
            s, v = np_eq3(masks[..., k], box)
            assert eq3.numpy()[i, k] == pytest.approx(
                s, abs=1e-4
            )  # float32 integrals of uniform values
            assert cov.numpy()[i, k] == pytest.approx(v, abs=3e-5)


SHAPES = np.array([[3, 4], [5, 5.4], [7, 3], [4.5, 6.5], [25, 2], [6, 30]], np.float32)


@pytest.mark.parametrize("seed,stride", [(0, 1.0), (1, 1.0), (2, 2.0)])
def test_search_matches_brute_force(seed, stride):
    rng = np.random.default_rng(seed)
    masks = quarter_masks(rng, 20, 16, 2)
    m = 12
    res = box_search.search_boxes(masks, SHAPES, stride, MARGIN, 0.5, m)
    for c in range(2):
        assert_valid_top(per_class(res, c), masks[..., c], SHAPES, int(stride), 0.5, m)


def test_search_coverage_exactly_at_threshold_is_rejected():
    # Full mask 1 on columns 0..7, 0 on 8..15. A 4 x 8 box at column x covers (8 - x) / 8 of it:
    # x = 4 gives exactly 0.5 (rejected: the rule is '>'), x <= 3 passes. 17 rows x 4 columns
    # = 68 candidates; with a threshold of 0.49, x = 4 passes too: 85.
    masks = np.zeros((20, 16, 5, 1), np.float32)
    masks[:, :8, 0] = 1.0
    shapes = np.array([[4.0, 8.0]], np.float32)
    res = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, 200)
    valid = res.valid.numpy()[0]
    assert valid.sum() == 68
    assert res.boxes_cell_yxyx.numpy()[0][valid][:, 1].max() == 3
    assert box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.49, 200).valid.numpy().sum() == 85
    # Everything at exactly 0.5: nothing passes, whatever the box.
    half = np.full((6, 5, 5, 1), 0.5, np.float32)
    assert not box_search.search_boxes(half, shapes, 1.0, MARGIN, 0.5, 4).valid.numpy().any()


def test_shapes_larger_than_twice_the_masks_total_find_nothing_and_the_rest_all():
    # One 6 x 6 object (full mask total 36) in a 30 x 30 grid, two classes (the second weaker,
    # total 9). A box passes coverage 0.5 only if its area is below 2 x 36 = 72: the 7 x 10
    # shape (70) has candidates (the box around the object: 36 / 70 = 0.514), the 8 x 9 shape
    # (72) has exactly 0.5 at best (rejected), the 20 x 20 and 30 x 30 shapes none. The search
    # skips the shapes no canvas's total can fill; the results must be the brute force's.
    h = w = 30
    masks = np.zeros((h, w, 5, 2), np.float32)
    masks[..., 0] = eq1_masks(h, w, (4.0, 5.0, 10.0, 11.0))
    masks[..., 1] = 0.25 * eq1_masks(h, w, (20.0, 20.0, 26.0, 26.0))
    shapes = np.array([[6, 6], [7, 10], [8, 9], [20, 20], [30, 30], [3, 3]], np.float32)
    m = 40
    res = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, m)
    for c in range(2):
        assert_valid_top(per_class(res, c), masks[..., c], shapes, 1, 0.5, m)
    boxes = res.boxes_cell_yxyx.numpy()[0][res.valid.numpy()[0]]
    sizes = {(int(b[2] - b[0]), int(b[3] - b[1])) for b in boxes}
    assert (7, 10) in sizes and (6, 6) in sizes
    assert not sizes & {(8, 9), (20, 20), (30, 30)}


def sparse_row_masks(h, w):
    """Masks [h, w, 5, 2] whose full masks are nonzero in a few rows only: class 0 a 6 x 6 block
    of 1 at rows 10..15 (columns 3..8) and a 4 x 4 block of 1 touching the grid's last row;
    class 1 a 4 x 5 block of 0.75 touching the first row. The half masks are quarter values
    over the same rows, so that they change the scores but not the coverage."""
    rng = np.random.default_rng(5)
    masks = np.zeros((h, w, 5, 2), np.float32)
    masks[10:16, 3:9, 0, 0] = 1.0
    masks[h - 4 :, w - 6 : w - 2, 0, 0] = 1.0
    masks[0:4, 12:17, 0, 1] = 0.75
    for c, rows in ((0, [*range(10, 16), *range(h - 4, h)]), (1, range(4))):
        for r in rows:
            masks[r, :, 1:, c] = rng.integers(0, 5, size=(w, 4)) / 4.0
    return masks


@pytest.mark.parametrize("stride", [1.0, 2.0])
def test_search_of_masks_in_a_few_rows_matches_brute_force(stride):
    # The search only goes through the corner rows whose band of h rows, across the whole grid,
    # holds more than threshold |bb| of the full mask (a box's sum is at most its band's). Here
    # most corner rows hold nothing. Hand-worked: the 6 x 11 shape (area 66) passes 0.5 only at
    # corner row 10 (36 / 66; 30 / 66 at rows 9 and 11), at columns 0..3 (the 6 x 12 shape, 36 /
    # 72 = 0.5 at best, nowhere); at the last rows the 4 x 6 shape passes (16 / 24) and the
    # 4 x 8 does not (16 / 32 = 0.5 at best); class 1's boxes reach the first row.
    h, w = 36, 24
    masks = sparse_row_masks(h, w)
    shapes = np.array(
        [[6, 12], [6, 11], [6, 6], [4, 8], [4, 6], [3, 5], [8, 3], [20, 4]], np.float32
    )
    m = 400
    res = box_search.search_boxes(masks, shapes, stride, MARGIN, 0.5, m)
    for c in range(2):
        assert_valid_top(per_class(res, c), masks[..., c], shapes, int(stride), 0.5, m)
    boxes = res.boxes_cell_yxyx.numpy()[0][res.valid.numpy()[0]]
    sizes = boxes[:, 2:] - boxes[:, :2]
    wide = boxes[(sizes[:, 0] == 6) & (sizes[:, 1] == 11)]
    assert set(wide[:, 0]) == {10.0} and set(wide[:, 1]) == set(np.arange(0.0, 4.0, stride))
    assert not ((sizes[:, 0] == 6) & (sizes[:, 1] == 12)).any()
    at_bottom = {tuple(sz) for sz, b in zip(sizes.astype(int), boxes) if b[2] == h}
    assert (4, 6) in at_bottom and (4, 8) not in at_bottom
    top = res.boxes_cell_yxyx.numpy()[1][res.valid.numpy()[1]]
    assert len(top) > 0 and top[:, 0].min() == 0.0
    # Local maxima read the neighbours of rows next to the searched ones as off the map.
    res = box_search.search_boxes(masks, shapes, stride, MARGIN, 0.5, m, local_max=True)
    for c in range(2):
        got = per_class(res, c)
        found = np_local_max_search(masks[..., c], shapes, int(stride), 0.5)
        n_valid = int(got["valid"].sum())
        assert n_valid == min(m, len(found)) > 0
        best = sorted((f[0] for f in found), reverse=True)[:m]
        np.testing.assert_allclose(got["scores"][:n_valid], best, atol=1e-5)


def test_search_finds_a_planted_box_per_class_and_skips_empty_classes():
    h, w = 20, 16
    planted = {0: (3.4, 5.2, 13.6, 12.8), 2: (9.0, 1.0, 17.0, 7.0)}
    masks = np.zeros((h, w, 5, 3), np.float32)  # class 1 stays empty
    for c, box in planted.items():
        masks[..., c] = eq1_masks(h, w, box)
    shapes = np.array([[10.2, 7.6], [8, 6], [5, 4], [14, 12], [10, 12], [20, 3]], np.float32)
    res = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, 5)
    boxes, valid = res.boxes_cell_yxyx.numpy(), res.valid.numpy()
    for c, box in planted.items():
        assert valid[c, 0]
        # Within the stride (1 cell) plus the shape rounding (half a cell) of every corner.
        np.testing.assert_allclose(boxes[c, 0], box, atol=1.0)
    assert not valid[1].any() and np.all(np.isneginf(res.scores.numpy()[1]))
    # The exact box of class 2 scores the maximum, 5.
    assert res.scores.numpy()[2, 0] == pytest.approx(5.0, abs=1e-5)


def test_search_batch_dimensions_are_independent():
    rng = np.random.default_rng(7)
    masks = quarter_masks(rng, 12, 10, 3)
    batch = np.stack([masks, masks[::-1, ::-1]])  # [2, H, W, 5, C]
    shapes = SHAPES[:4]
    together = box_search.search_boxes(batch, shapes, 1.0, MARGIN, 0.4, 6)
    assert together.scores.shape == (2, 3, 6) and together.boxes_cell_yxyx.shape == (2, 3, 6, 4)
    for b in range(2):
        alone = box_search.search_boxes(batch[b], shapes, 1.0, MARGIN, 0.4, 6)
        np.testing.assert_allclose(together.scores.numpy()[b], alone.scores.numpy(), atol=1e-6)
        np.testing.assert_array_equal(together.valid.numpy()[b], alone.valid.numpy())


def test_search_many_classes_single_phase_layout():
    # 2 x 7 = 14 searched classes pad to 16, a multiple of 16: the one-phase buffer layout.
    rng = np.random.default_rng(13)
    masks = (rng.integers(0, 5, size=(2, 10, 8, 5, 7)) / 4.0).astype(np.float32)
    shapes = np.array([[3, 4], [5, 2.6], [7, 7]], np.float32)
    res = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, 4)
    for b in range(2):
        for c in range(7):
            got = {
                "scores": res.scores.numpy()[b, c],
                "boxes": res.boxes_cell_yxyx.numpy()[b, c],
                "coverage": res.coverage.numpy()[b, c],
                "valid": res.valid.numpy()[b, c],
            }
            assert_valid_top(got, masks[b, ..., c], shapes, 1, 0.5, 4)


def test_search_shapes_larger_than_the_grid_are_clipped():
    # On a 3 x 2 grid a 5 x 5 shape becomes the whole grid: one box [0, 0, 3, 2].
    masks = np.ones((3, 2, 5, 1), np.float32)
    res = box_search.search_boxes(masks, np.array([[5.0, 5.0]], np.float32), 1.0, MARGIN, 0.5, 3)
    assert res.valid.numpy()[0].tolist() == [True, False, False]
    np.testing.assert_array_equal(res.boxes_cell_yxyx.numpy()[0, 0], [0, 0, 3, 2])
    assert res.coverage.numpy()[0, 0] == 1.0


def test_search_traced_with_unknown_canvas_and_dynamic_shapes():
    fn = tf.function(
        lambda m, mean_side: box_search.search_boxes(
            m, box_search.box_shapes(mean_side, [0.3, 0.5], [0.5, 1.0]), 1.0, MARGIN, 0.5, 8
        ),
        input_signature=[
            tf.TensorSpec([None, None, 5, None], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    rng = np.random.default_rng(11)
    for h, w in [(14, 11), (9, 17)]:
        masks = quarter_masks(rng, h, w, 2)
        shapes = box_search.box_shapes((h + w) / 2, [0.3, 0.5], [0.5, 1.0]).numpy()
        res = fn(masks, tf.constant((h + w) / 2, tf.float32))
        for c in range(2):
            assert_valid_top(per_class(res, c), masks[..., c], shapes, 1, 0.5, 8)


def test_search_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 5, C\]"):
        box_search.search_boxes(np.zeros((4, 4, 3, 1), np.float32), SHAPES, 1.0, MARGIN, 0.5, 2)


# --- Candidate selection: local maxima of each shape's score map -----------------------------


def np_local_max_search(masks, shapes_hw, stride, threshold):
    """The brute force's boxes that score at least as high as each of their 8 same-shape
    neighbours one stride away (neighbours off the grid or below the threshold do not count)."""
    found = np_search(masks, shapes_hw, stride, threshold)
    score_at = {}
    for score, box, _ in found:
        score_at[(box[2] - box[0], box[3] - box[1], box[0], box[1])] = score
    kept = []
    for score, box, cov in found:
        h, w, y, x = box[2] - box[0], box[3] - box[1], box[0], box[1]
        neighbours = [
            score_at.get((h, w, y + dy * stride, x + dx * stride), -np.inf)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        if score >= max(neighbours) - 1e-9:  # float64 rounding of equal values
            kept.append((score, box, cov))
    return kept


@pytest.mark.parametrize("as_tensor", [False, True], ids=["stride number", "stride tensor"])
@pytest.mark.parametrize("seed,stride", [(0, 1.0), (3, 1.0), (4, 2.0)])
def test_local_max_search_matches_brute_force(seed, stride, as_tensor):
    rng = np.random.default_rng(seed)
    masks = quarter_masks(rng, 20, 16, 2)
    m = 10
    # A number picks the neighbourhood when the graph is built, a tensor when it runs.
    given = tf.constant(stride) if as_tensor else stride
    res = box_search.search_boxes(masks, SHAPES, given, MARGIN, 0.5, m, local_max=True)
    for c in range(2):
        got = per_class(res, c)
        found = np_local_max_search(masks[..., c], SHAPES, int(stride), 0.5)
        best = sorted((f[0] for f in found), reverse=True)[:m]
        n_valid = int(got["valid"].sum())
        assert n_valid == min(m, len(found))
        np.testing.assert_allclose(got["scores"][:n_valid], best, atol=1e-5)
        kept_boxes = {tuple(f[1]) for f in found}
        assert {tuple(b) for b in got["boxes"][:n_valid].astype(int)} <= kept_boxes


def two_objects_of_unequal_strength(h=60, w=60):
    """Perfect Eq. (1) masks of two touching objects of one class: A at 1.0, B at 0.85."""
    box_a, box_b = (5.0, 5.0, 35.0, 35.0), (30.0, 30.0, 55.0, 55.0)
    masks = np.maximum(eq1_masks(h, w, box_a), 0.85 * eq1_masks(h, w, box_b))
    return masks[..., None], box_a, box_b


def iou(a, b):
    iy = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ix = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iy * ix
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def detected_after_nms(masks, local_max, outside_weight=0.0, m=100, top_k=5):
    """Boxes [top_k, 4] left by the first stage's rule: search (m candidates), rescoring with
    the outside half masks, NMS at 0.5."""
    from dnet_tf.ops import nms

    h, w = masks.shape[:2]
    shapes = box_search.box_shapes(
        (h + w) / 2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0.5, 0.75, 1.0, 1.33, 2.0]
    )
    found = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, m, local_max=local_max)
    outside = box_search.outside_half_terms(
        integral.integral_image(masks.reshape(h, w, -1)), found.boxes_cell_yxyx[0], MARGIN
    )
    scores = found.scores - outside_weight * tf.transpose(outside)
    scores = tf.where(found.valid, scores, -1e9)
    keep, num = nms.non_max_suppression(found.boxes_cell_yxyx, scores, top_k, 0.5, -5e8)
    boxes = tf.gather(found.boxes_cell_yxyx, keep, batch_dims=1).numpy()[0]
    return boxes[: int(num.numpy()[0])], found


def test_local_max_and_outside_halves_let_the_weaker_of_two_objects_be_detected():
    masks, box_a, box_b = two_objects_of_unequal_strength()
    # Oracle: B's own box scores 0.85 x 5 less the ring's share of A (3.835). With the best 100
    # Eq. (3) boxes only, A's shifted near-copies and interior boxes fill the list (the 100th
    # still beats B's own box), so NMS never sees B, whatever the rescoring.
    b_score, _ = np_eq3(masks[..., 0], box_b)
    assert b_score == pytest.approx(3.835, abs=1e-3)
    for weight in (0.0, 1.0):
        boxes, found = detected_after_nms(masks, local_max=False, outside_weight=weight)
        assert found.scores.numpy()[0, -1] > b_score
        assert max(iou(b, box_b) for b in boxes) < 0.5
    # Local maxima alone: B reaches NMS, but A's parts (boxes inside A, ~4 by Eq. (3), IoU < 0.5
    # with A) take the 5 slots before it.
    boxes, _ = detected_after_nms(masks, local_max=True, outside_weight=0.0)
    assert max(iou(b, box_b) for b in boxes) < 0.5
    # Both: the parts lose ~4 to the half masks going on past them, and B is detected.
    boxes, _ = detected_after_nms(masks, local_max=True, outside_weight=1.0)
    assert max(iou(b, box_a) for b in boxes) > 0.95
    assert max(iou(b, box_b) for b in boxes) > 0.9


# --- Evidence against a box from the half masks just outside it -------------------------------


def test_outside_half_terms_hand_worked_whole_box_and_part():
    # Masks of the object [4, 4, 12, 12] on a 16 x 16 grid. The whole box: each half mask ends at
    # its side, nothing outside -> 0. The centred part [6, 6, 10, 10] (side 4: strips of
    # round(0.8 + 0.5) = 1 cell): the row above it, rows 5..6 x cols 6..10, lies in the object's
    # top half (rows 4..8): top mask 1; likewise below (bottom mask), left, right -> 4.
    # The part [4, 4, 8, 12] (the object's top half, 4 x 8; strips 1 and 2 cells): nothing above
    # the object; below it, rows 8..9, the bottom mask is 1 -> 1; left and right strips outside
    # the object -> 0. Total 1.
    masks = eq1_masks(16, 16, (4, 4, 12, 12))[..., None]
    integ = integral.integral_image(masks.reshape(16, 16, 5))
    boxes = [[4.0, 4.0, 12.0, 12.0], [6.0, 6.0, 10.0, 10.0], [4.0, 4.0, 8.0, 12.0]]
    got = box_search.outside_half_terms(integ, boxes, MARGIN).numpy()[:, 0]
    np.testing.assert_allclose(got, [0.0, 4.0, 1.0], atol=1e-6)
    # Strips outside the grid are empty (0), not a division by zero.
    whole = box_search.outside_half_terms(integ, [[0.0, 0.0, 16.0, 16.0]], MARGIN).numpy()
    np.testing.assert_allclose(whole, [[0.0]], atol=1e-6)


def test_outside_half_terms_floor_ignores_a_blur_past_the_edge():
    # The object [4, 4, 12, 12] with its top mask leaking 0.3 into row 3, just above it. The whole
    # box's top strip (row 3, ring round(1.6 + 0.5) = 2 cells: rows 2-3) has mean 0.15 -> 0.15
    # without a floor, 0 with floor 0.5. The centred part keeps its 4: each side's strip mean is
    # 1, and (1 - 0.5) / (1 - 0.5) = 1.
    masks = eq1_masks(16, 16, (4, 4, 12, 12))
    masks[3, 4:12, 1] = 0.3
    integ = integral.integral_image(masks)
    boxes = [[4.0, 4.0, 12.0, 12.0], [6.0, 6.0, 10.0, 10.0]]
    plain = box_search.outside_half_terms(integ, boxes, MARGIN).numpy()[:, 0]
    floored = box_search.outside_half_terms(integ, boxes, MARGIN, floor=0.5).numpy()[:, 0]
    np.testing.assert_allclose(plain, [0.15, 4.0], atol=1e-6)
    np.testing.assert_allclose(floored, [0.0, 4.0], atol=1e-6)
    with pytest.raises(ValueError, match="floor"):
        box_search.outside_half_terms(integ, boxes, MARGIN, floor=1.0)


def test_local_max_and_containment_let_the_weaker_of_two_objects_be_detected():
    # The defaults (local maxima, candidates >= 90% inside a better one dropped before NMS) on
    # the same two objects: A's interior boxes leave NMS's 5 slots, B gets one. Containment alone
    # does not help: B's box is not among the best 100 Eq. (3) boxes to begin with.
    from dnet_tf.ops import nms

    masks, box_a, box_b = two_objects_of_unequal_strength()
    h, w = masks.shape[:2]
    shapes = box_search.box_shapes(
        (h + w) / 2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0.5, 0.75, 1.0, 1.33, 2.0]
    )
    for local_max, b_found in ((False, False), (True, True)):
        found = box_search.search_boxes(masks, shapes, 1.0, MARGIN, 0.5, 100, local_max=local_max)
        scores = tf.where(found.valid, found.scores, -1e9)
        no_class = tf.zeros_like(found.valid, tf.int32)
        inside = nms.parts_of_better(found.boxes_cell_yxyx, scores, no_class, found.valid, 0.9)
        scores = tf.where(inside, -1e9, scores)
        keep, num = nms.non_max_suppression(found.boxes_cell_yxyx, scores, 5, 0.5, -5e8)
        boxes = tf.gather(found.boxes_cell_yxyx, keep, batch_dims=1).numpy()[0][: int(num[0])]
        assert max(iou(b, box_a) for b in boxes) > 0.95
        assert (max(iou(b, box_b) for b in boxes) > 0.9) == b_found
