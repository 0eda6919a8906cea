"""§6 sampler: positive/negative shares and definitions checked by NumPy, crops, flips, targets."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.config import DetectorConfig, ModelConfig, SamplerConfig
from dnet_tf.constants import FULL, LEFT, RIGHT, TOP
from dnet_tf.data import pipeline, sampler
from dnet_tf.ops.mask_targets import mask_targets

# A 300 x 400 (H x W) image with four objects of three classes, two of them touching.
IMAGE_HW = (300, 400)
BOXES = np.array(
    [
        [20.0, 30.0, 120.0, 110.0],
        [20.0, 110.0, 100.0, 180.0],
        [200.0, 250.0, 230.0, 290.0],
        [150.0, 60.0, 290.0, 150.0],
    ],
    np.float32,
)
CLASS_IDS = np.array([0, 0, 2, 1], np.int32)


def np_inter(crop, boxes):
    h = np.maximum(np.minimum(crop[2], boxes[:, 2]) - np.maximum(crop[0], boxes[:, 0]), 0.0)
    w = np.maximum(np.minimum(crop[3], boxes[:, 3]) - np.maximum(crop[1], boxes[:, 1]), 0.0)
    return h * w


def np_area(b):
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def test_localizer_share_and_definitions_over_10k_samples():
    cfg = SamplerConfig()
    out = sampler.sample_localizer_crops(
        IMAGE_HW, BOXES, 10_000, cfg, tf.constant([1, 2], tf.int64)
    )
    crops = out["crops_image_yxyx"].numpy().astype(np.float64)
    pos, valid = out["is_positive"].numpy(), out["valid"].numpy()
    assert valid.mean() > 0.99
    share = pos[valid].mean()
    assert abs(share - 0.4) <= 0.02, share
    boxes = BOXES.astype(np.float64)
    for crop, p, v in zip(crops, pos, valid):
        # Every crop lies in the image, width in [0.1 W, W].
        assert (
            crop[0] >= -1e-4
            and crop[1] >= -1e-4
            and crop[2] <= 300 + 1e-3
            and crop[3] <= 400 + 1e-3
        )
        assert 0.1 * 400 - 1e-3 <= crop[3] - crop[1] <= 400 + 1e-3
        if not v:
            continue
        coverage = np_inter(crop, boxes) / np_area(boxes)
        if p:
            assert coverage.max() >= 0.8 - 1e-5
        else:
            assert coverage.max() == 0.0
    # Widths are drawn uniformly in [0.1 W, W] before acceptance: accepted crops reach both ends
    # (small negatives between objects, whole-width positives).
    widths = crops[valid, 3] - crops[valid, 1]
    assert widths[~pos[valid]].min() < 0.15 * 400 and widths[pos[valid]].max() > 0.9 * 400


def test_localizer_image_without_objects_gives_valid_negatives():
    out = sampler.sample_localizer_crops(
        (100, 80), np.zeros((0, 4), np.float32), 500, SamplerConfig(), tf.constant([3, 4], tf.int64)
    )
    assert out["valid"].numpy().all()
    assert not out["is_positive"].numpy().any()


def test_localizer_impossible_negative_is_marked_invalid():
    # One box covering the whole image: no crop can avoid it.
    out = sampler.sample_localizer_crops(
        (50, 50),
        np.array([[0.0, 0.0, 50.0, 50.0]], np.float32),
        400,
        SamplerConfig(),
        tf.constant([5, 6], tf.int64),
    )
    pos, valid = out["is_positive"].numpy(), out["valid"].numpy()
    np.testing.assert_array_equal(valid, pos)
    assert 0.3 < pos.mean() < 0.5


def np_iou(crop, boxes):
    inter = np_inter(crop, boxes)
    return inter / (np_area(crop) + np_area(boxes) - inter)


def test_classifier_share_labels_and_definitions_over_10k_samples():
    cfg = SamplerConfig()
    out = sampler.sample_classifier_crops(
        IMAGE_HW, BOXES, CLASS_IDS, 10_000, cfg, tf.constant([7, 8], tf.int64)
    )
    crops = out["crops_image_yxyx"].numpy().astype(np.float64)
    labels, valid = out["labels"].numpy(), out["valid"].numpy()
    assert valid.mean() > 0.99
    share = (labels[valid] > 0).mean()
    assert abs(share - 0.4) <= 0.02, share
    seen = set()
    for crop, label, v in zip(crops, labels, valid):
        if not v:
            continue
        iou = np_iou(crop, BOXES.astype(np.float64))
        if label > 0:
            assert iou.max() >= 0.6 - 1e-5
            assert label == CLASS_IDS[np.argmax(iou)] + 1
            seen.add(int(label))
        else:
            assert iou.max() < 0.2 + 1e-5
    assert seen == {1, 2, 3}


def test_flip_swaps_left_and_right_masks_hand_worked():
    # d = 4, a box on the top-left quadrant [0, 0, 0.5, 0.5]: full mask = rows 0-1, cols 0-1;
    # left half x in [0, 0.25) = col 0; right half x in [0.25, 0.5) = col 1.
    m = mask_targets(tf.constant([[0.0, 0.0, 0.5, 0.5]]), tf.constant([0]), 1, 4)
    f = sampler.hflip_masks(m).numpy()[..., 0]
    # Mirrored, the box is [0, 0.5, 0.5, 1]: full = cols 2-3; its left half x in [0.5, 0.75) is
    # col 2 (it was the right half, col 1); its right half is col 3 (was the left half, col 0).
    expected_full = np.zeros((4, 4))
    expected_full[0:2, 2:4] = 1
    expected_left = np.zeros((4, 4))
    expected_left[0:2, 2] = 1
    expected_right = np.zeros((4, 4))
    expected_right[0:2, 3] = 1
    expected_top = np.zeros((4, 4))
    expected_top[0, 2:4] = 1
    np.testing.assert_allclose(f[:, :, FULL], expected_full)
    np.testing.assert_allclose(f[:, :, LEFT], expected_left)
    np.testing.assert_allclose(f[:, :, RIGHT], expected_right)
    np.testing.assert_allclose(f[:, :, TOP], expected_top)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipping_masks_equals_targets_of_mirrored_boxes(seed):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-0.2, 0.8, (5, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.05, 0.6, (5, 2))], 1).astype(np.float32)
    ids = rng.integers(0, 3, 5).astype(np.int32)
    flipped_targets = sampler.hflip_masks(mask_targets(boxes, ids, 3, 6))
    targets_of_flipped = mask_targets(sampler.hflip_boxes_norm(tf.constant(boxes)), ids, 3, 6)
    np.testing.assert_allclose(flipped_targets.numpy(), targets_of_flipped.numpy(), atol=1e-6)


def _ramp_image(h, w):
    return (
        np.arange(h)[:, None, None] * 7 + np.arange(w)[None, :, None] * 3 + np.arange(3) * 50
    ) % 256


CROP_FNS = [
    sampler.crop_and_resize,
    sampler.crop_and_resize_local,
]  # the team op (when present) and ours


@pytest.mark.parametrize("crop_fn", CROP_FNS)
def test_crop_and_resize_pixel_aligned_cases(crop_fn):
    image = _ramp_image(10, 12).astype(np.uint8)
    # A 10 x 10 crop touching three borders, at its own size: exactly those pixels.
    square = crop_fn(image, tf.constant([[0.0, 2.0, 10.0, 12.0]]), 10).numpy()[0]
    np.testing.assert_allclose(square, image[:, 2:12].astype(np.float32), atol=1e-3)
    # A 4 x 4 crop at rows 2..5, cols 3..6, at scale 1: exactly those pixels.
    crop = crop_fn(image, tf.constant([[2.0, 3.0, 6.0, 7.0]]), 4).numpy()[0]
    np.testing.assert_allclose(crop, image[2:6, 3:7].astype(np.float32), atol=1e-3)
    # An 8 x 8 crop to 4 x 4: each output sample sits between 2 x 2 pixels -> their mean.
    crop = crop_fn(image.astype(np.float32), tf.constant([[2.0, 2.0, 10.0, 10.0]]), 4).numpy()[0]
    block = image[2:10, 2:10].astype(np.float32).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(crop, block, atol=1e-3)


@pytest.mark.parametrize("crop_fn", CROP_FNS)
def test_crop_and_resize_upsampling_at_the_border_repeats_edge_pixels(crop_fn):
    # A 2 x 2 crop in the image corner upsampled to 8 x 8: the outer samples lie within half a
    # pixel of the border and must read the border pixels, never a black extrapolation value.
    image = np.full((6, 6, 3), 100, np.uint8)
    image[0, 0] = 200
    out = crop_fn(image, tf.constant([[0.0, 0.0, 2.0, 2.0]]), 8).numpy()[0]
    assert out.min() >= 100.0 - 1e-3
    # Samples at continuous (0.125, 0.125) -> index (-0.375, -0.375): clamped to pixel (0, 0).
    np.testing.assert_allclose(out[0, 0], [200, 200, 200], atol=1e-3)
    # Sample (i=1) at continuous 0.375 -> index -0.125 -> still pixel row 0; column likewise.
    np.testing.assert_allclose(out[1, 1], [200, 200, 200], atol=1e-3)
    # Sample (i=2) at continuous 0.625 -> index 0.125: 0.875 * 200 + 0.125 * 100 along each axis.
    v = 0.875 * (0.875 * 200 + 0.125 * 100) + 0.125 * 100
    np.testing.assert_allclose(out[2, 2], [v, v, v], atol=1e-3)


def _tiny_cfg():
    return DetectorConfig(model=ModelConfig(num_classes=3, input_size=32, mask_size=4))


@pytest.mark.parametrize("halves", ["clipped", "original"])
def test_localizer_samples_wiring_against_numpy(halves):
    """Crops, flips and targets of the per-image map agree with independent computations."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3)).astype(np.uint8)
    example = {
        "image": tf.constant(image),
        "boxes_image_yxyx": tf.constant(BOXES),
        "class_ids": tf.constant(CLASS_IDS),
    }
    cfg = _tiny_cfg()
    cfg = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, mask_halves=halves))
    out = pipeline.localizer_samples(example, cfg, 16, tf.constant([11, 12], tf.int64), hflip=True)
    crops = out["crops_image_yxyx"].numpy()
    flipped = out["flipped"].numpy()
    assert 0 < flipped.sum() < 16
    unflipped_pixels = sampler.crop_and_resize(image, crops, 32).numpy()
    for k in range(16):
        c = crops[k].astype(np.float64)
        # Boxes in the crop's normalized frame, mirrored when the crop was flipped.
        norm = (BOXES - [c[0], c[1], c[0], c[1]]) / [
            c[2] - c[0],
            c[3] - c[1],
            c[2] - c[0],
            c[3] - c[1],
        ]
        if flipped[k]:
            norm = np.stack([norm[:, 0], 1 - norm[:, 3], norm[:, 2], 1 - norm[:, 1]], 1)
            expected_pixels = unflipped_pixels[k][:, ::-1]
        else:
            expected_pixels = unflipped_pixels[k]
        if halves == "clipped":  # the visible part of each box, then halved
            norm = np.clip(norm, 0.0, 1.0)
        expected = mask_targets(norm.astype(np.float32), CLASS_IDS, 3, 4).numpy()
        np.testing.assert_allclose(out["masks"].numpy()[k], expected, atol=1e-5)
        np.testing.assert_allclose(out["image"].numpy()[k], expected_pixels, atol=1e-3)


def test_classifier_samples_labels_match_numpy_iou():
    image = np.zeros((300, 400, 3), np.uint8)
    example = {
        "image": tf.constant(image),
        "boxes_image_yxyx": tf.constant(BOXES),
        "class_ids": tf.constant(CLASS_IDS),
    }
    out = pipeline.classifier_samples(example, _tiny_cfg(), 64, tf.constant([1, 1], tf.int64))
    for crop, label, v in zip(
        out["crops_image_yxyx"].numpy(), out["labels"].numpy(), out["valid"].numpy()
    ):
        if v:
            iou = np_iou(crop.astype(np.float64), BOXES.astype(np.float64))
            assert label == (CLASS_IDS[iou.argmax()] + 1 if iou.max() >= 0.6 else 0)


def test_photometric_jitter_hand_worked_and_deterministic():
    seed = tf.constant([3, 4], tf.int64)
    grey = tf.fill([6, 4, 4, 3], 100.0)
    # Strength 0: untouched.
    np.testing.assert_array_equal(sampler.photometric_jitter(grey, 0.0, seed).numpy(), grey.numpy())
    # A flat grey crop: saturation (about each pixel's grey) and contrast (about the crop's mean)
    # change nothing, so each crop is 100 + its brightness offset, within +-32 at strength 1,
    # the same everywhere in the crop, different between crops, and the same for the same seed.
    out = sampler.photometric_jitter(grey, 1.0, seed).numpy()
    offsets = out[:, 0, 0, 0] - 100.0
    assert np.all(np.abs(offsets) <= 32.0) and len(np.unique(offsets)) == 6
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1, :1], out.shape), atol=1e-4)
    np.testing.assert_array_equal(sampler.photometric_jitter(grey, 1.0, seed).numpy(), out)
    # Half strength halves the offsets (same draws scaled): +-16.
    half = sampler.photometric_jitter(grey, 0.5, seed).numpy()[:, 0, 0, 0] - 100.0
    np.testing.assert_allclose(half, offsets / 2, atol=1e-3)
    # Values stay in 0..255.
    white = sampler.photometric_jitter(tf.fill([6, 2, 2, 3], 250.0), 1.0, seed).numpy()
    assert white.max() <= 255.0 and white.min() >= 0.0


def test_classifier_samples_refinement_view_shows_the_grown_box_cut_to_the_image():
    """view="refinement": the same labelled boxes and labels as view="box", the pixels taken from
    each box grown 1.6x about its centre and cut to the 300 x 400 image (worked with np.clip);
    a gradient image makes the crop's pixels tell where they came from."""
    yy, xx = np.meshgrid(np.arange(300), np.arange(400), indexing="ij")
    image = np.stack([yy * 0.8, xx * 0.6, np.full_like(yy, 50)], -1).astype(np.uint8)
    example = {
        "image": tf.constant(image),
        "boxes_image_yxyx": tf.constant(BOXES),
        "class_ids": tf.constant(CLASS_IDS),
    }
    cfg = _tiny_cfg()
    cfg.inference.refine_enlarge, cfg.inference.refine_crop = 1.6, "clip"
    seed = tf.constant([1, 1], tf.int64)
    box = pipeline.classifier_samples(example, cfg, 64, seed, hflip=False)
    ref = pipeline.classifier_samples(example, cfg, 64, seed, hflip=False, view="refinement")
    np.testing.assert_array_equal(ref["labels"].numpy(), box["labels"].numpy())
    np.testing.assert_array_equal(ref["crops_image_yxyx"].numpy(), box["crops_image_yxyx"].numpy())
    np.testing.assert_array_equal(box["pixels_image_yxyx"].numpy(), box["crops_image_yxyx"].numpy())
    b = box["crops_image_yxyx"].numpy().astype(np.float64)
    cy, cx = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hh, hw = (b[:, 2] - b[:, 0]) * 0.8, (b[:, 3] - b[:, 1]) * 0.8
    want = np.stack(
        [
            np.clip(cy - hh, 0, 300),
            np.clip(cx - hw, 0, 400),
            np.clip(cy + hh, 0, 300),
            np.clip(cx + hw, 0, 400),
        ],
        -1,
    )
    np.testing.assert_allclose(ref["pixels_image_yxyx"].numpy(), want, atol=1e-3)
    # The grown crop shows more of the image: its red (= 0.8 row) range spans the wider rows.
    valid = box["valid"].numpy()
    red_box = np.ptp(box["image"].numpy()[valid, :, :, 0], axis=(1, 2))
    red_ref = np.ptp(ref["image"].numpy()[valid, :, :, 0], axis=(1, 2))
    assert valid.sum() > 10 and np.all(red_ref >= red_box - 1.0)
    assert np.mean(red_ref > red_box + 1.0) > 0.5
    with pytest.raises(ValueError, match="view"):
        pipeline.classifier_samples(example, cfg, 4, seed, view="whole")
