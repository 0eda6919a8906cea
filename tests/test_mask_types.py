"""InferenceConfig.mask_types: the paper's five masks against the full mask alone (§5.1).

The paper (§5.1): the full mask alone cannot tell two touching objects from one; the four half
masks can. Hand-made perfect Eq. (1) masks of two touching 10 x 10 objects side by side show it:
the five-mask Eq. (3) prefers each object's own box, the full mask alone (the half masks set to 0)
prefers the box around both. Every score below is worked by hand from the paper's definitions.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from fakes import coloured_object_image, fake_classifier, fake_localizer

from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
from dnet_tf.constants import BOTTOM, FULL, LEFT, RIGHT, TOP
from dnet_tf.core import policy
from dnet_tf.inference.module import DetectorModule, uint8_batch
from dnet_tf.ops import box_search, integral

MARGIN = 0.2  # ring_margin: a 10-cell side gets a 2-cell ring, a 20-cell side a 4-cell one

# A 20 x 30 canvas, cell_yxyx: object A rows 5..15, columns 5..15; B the same at columns 15..25.
A = (5, 5, 15, 15)
B = (5, 15, 15, 25)
BOTH = (5, 5, 15, 25)  # the wrong box: the two touching objects as one


def touching_masks():
    """Perfect Eq. (1) masks [20, 30, 5, 1] of A and B (each half mask = its half of a box)."""
    m = np.zeros([20, 30, 5], np.float32)
    for y0, x0, y1, x1 in (A, B):
        ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
        m[y0:y1, x0:x1, FULL] = 1
        m[y0:ym, x0:x1, TOP] = 1
        m[ym:y1, x0:x1, BOTTOM] = 1
        m[y0:y1, x0:xm, LEFT] = 1
        m[y0:y1, xm:x1, RIGHT] = 1
    return m[..., None]


# Worked by hand (S(b, m) = mean of m over b; the ring = bb grown by its ring widths, minus bb):
# A: S(A, full) = 1. Ring widths 2 and 2: outer box rows 3..17, columns 3..17, 14 x 14 = 196
#   cells, ring 196 - 100 = 96 cells, of which B's columns 15..17 x rows 5..15 = 20 carry the
#   full mask: S(ring, full) = 20 / 96. Each half mask covers exactly its half of A and none of
#   the opposite half: each halves bracket is 1 - 0 = 1.
A_FULL_ONLY = 1.0 - 20.0 / 96.0  # = S(A, M) - S(ring, M) = 0.7917
A_FIVE = A_FULL_ONLY + 4.0  # = 4.7917
# BOTH: S(BOTH, full) = 1; ring widths 2 (height 10) and 4 (width 20): outer rows 3..17,
#   columns 1..29, ring 14 x 28 - 200 = 192 cells, none on the full mask: S(ring) = 0.
#   Top half rows 5..10: the top mask is 1 there (both objects' tops), 0 on the bottom half:
#   bracket 1; bottom likewise 1. Left half columns 5..15 = all of A: the left mask covers A's
#   left half (columns 5..10), 1/2 of it; right half = B: B's left half, again 1/2: bracket
#   1/2 - 1/2 = 0; the right mask likewise 0.
BOTH_FULL_ONLY = 1.0
BOTH_FIVE = BOTH_FULL_ONLY + 1.0 + 1.0 + 0.0 + 0.0  # = 3


def eq3_of(masks, boxes):
    """box_search.eq3_scores of explicit boxes [N, 4] on masks [H, W, 5, 1]: [N]."""
    flat = tf.reshape(tf.constant(masks), [1, 20, 30, 5])
    eq3, _ = box_search.eq3_scores(
        integral.integral_image(flat), tf.constant([boxes], tf.float32), MARGIN
    )
    return eq3.numpy()[0, :, 0]


def test_five_masks_prefer_each_object_the_full_mask_the_box_around_both():
    five = policy.masks_in_use(touching_masks(), "five")
    full = policy.masks_in_use(touching_masks(), "full")
    np.testing.assert_allclose(eq3_of(five, [A, B, BOTH]), [A_FIVE, A_FIVE, BOTH_FIVE], atol=1e-5)
    np.testing.assert_allclose(
        eq3_of(full, [A, B, BOTH]), [A_FULL_ONLY, A_FULL_ONLY, BOTH_FULL_ONLY], atol=1e-5
    )


@pytest.mark.parametrize(
    "mask_types, best_boxes, best_score",
    [("five", {A, B}, A_FIVE), ("full", {BOTH}, BOTH_FULL_ONLY)],
)
def test_the_dense_search_finds_the_same_best_box(mask_types, best_boxes, best_score):
    # The search works on the planes M = full, V = top - bottom, L = left - right: with the half
    # masks 0, V = L = 0 and it ranks by S(bb, M) - S(ring, M), like the reference above. Every
    # position of both shapes (10 x 10, 10 x 20) at stride 1 is searched.
    masks = policy.masks_in_use(touching_masks(), mask_types)
    found = box_search.search_boxes(
        tf.constant(masks), [[10.0, 10.0], [10.0, 20.0]], 1.0, MARGIN, 0.5, 4
    )
    scores = found.scores.numpy()[0]
    boxes = [tuple(int(v) for v in b) for b in found.boxes_cell_yxyx.numpy()[0]]
    assert scores[0] == pytest.approx(best_score, abs=1e-5)
    assert set(b for b, s in zip(boxes, scores) if s > best_score - 1e-5) == best_boxes


def test_full_keeps_the_full_mask_and_zeroes_the_halves():
    masks = np.random.default_rng(0).uniform(size=[3, 4, 4, 5, 2]).astype(np.float32)
    assert policy.masks_in_use(masks, "five") is masks
    out = policy.masks_in_use(tf.constant(masks), "full").numpy()
    np.testing.assert_array_equal(out[..., FULL, :], masks[..., FULL, :])
    assert not out[..., [TOP, BOTTOM, LEFT, RIGHT], :].any()
    with pytest.raises(ValueError, match="mask_types"):
        policy.masks_in_use(masks, "halves")


def test_config_field_is_validated():
    assert InferenceConfig().mask_types == "five"  # the paper
    InferenceConfig(mask_types="full").validate()
    with pytest.raises(ValueError, match="'mask_types'.*'top'"):
        InferenceConfig(mask_types="top").validate()
    cfg = DetectorConfig(inference=InferenceConfig(mask_types="full"))
    assert DetectorConfig.from_json(cfg.to_json()).inference.mask_types == "full"


def test_the_graph_merges_only_the_full_mask():
    # The fake localizer's masks are the true coverage of the coloured object (tests/fakes.py):
    # with "full" the merged masks (the same canvases the search reads) keep the full mask as
    # with five and carry no half mask.
    image = coloured_object_image(200, 240, [[40, 60, 160, 200]])
    merged = {}
    for mask_types in ("five", "full"):
        cfg = DetectorConfig(
            model=ModelConfig(num_classes=1),
            inference=dataclasses.replace(InferenceConfig(), max_refine=3, mask_types=mask_types),
        )
        module = DetectorModule(fake_localizer(), fake_classifier(), ["cat"], [1.0], cfg)
        out = module.detect(*uint8_batch(image[None]), with_masks=True)
        merged[mask_types] = out["merged_masks"].numpy()[0]
        assert int(out["num_detections"][0]) >= 1  # the object is still found
    halves = [TOP, BOTTOM, LEFT, RIGHT]
    assert merged["five"][..., halves, :].max() > 0.9  # not vacuous
    assert not merged["full"][..., halves, :].any()
    np.testing.assert_allclose(merged["full"][..., FULL, :], merged["five"][..., FULL, :])
