"""Training samples of §6 of the paper, as graph-only TF ops (no py_function).

Localizer crops. A crop's width is uniform between ``min_crop_fraction`` x the image width and
the image width (the paper's rule). The paper leaves the height open; here the crop keeps the
image's aspect ratio times a jitter, log-uniform in [1/1.5, 1.5], clipped to the image height.
Inference windows (the full image and its halves and quarters, §5.3) have the image's aspect
ratio, so training crops are distorted by the resize to the square network input the way the
windows are; the jitter covers the refinement crops around detections, whose aspect is the box's.
- 60% negative (``1 - localizer_positive_fraction``): the crop intersects no object box;
- 40% positive: the crop covers >= ``positive_coverage`` (80%) of some object box's area.
The target masks come from the geometry alone (Eq. (1) on the boxes in the crop's frame), so
the positive / negative choice only decides which crops are drawn.

Classifier crops. Negative: Jaccard < ``classifier_negative_iou`` (0.2) with every box; positive:
Jaccard >= ``classifier_positive_iou`` (0.6) with some box, labelled with the class of the box of
highest Jaccard (label = class id + 1; 0 = background). Positive candidates are jittered copies
of a random object box; negative candidates use the localizer's width rule with the aspect of a
random object box (jittered), so the classifier cannot tell positives by their aspect distortion.

Rejection sampling is vectorised: each of the K samples draws ``max_attempts`` candidates at once
and keeps the first that qualifies. Positive candidates are drawn near a random object box (the
crop's width still uniform in [min, W]; its position placed so it can cover the box) — uniform
candidates would almost never give positives with small crops around small objects. A sample
whose ``max_attempts`` candidates all fail (e.g. a positive in an image without objects, a
negative in an image full of objects) comes back with ``valid = False``; the pipeline drops it,
so a label is never wrong, at the price of a slightly shifted positive share on such images.

Randomness is stateless (``tf.random.stateless_*``) from a seed tensor of shape [2], so a
sample depends only on its seed.

Frames: boxes_image_yxyx / crops_image_yxyx are continuous absolute pixels of the image
(pixel (r, c) covers [r, r+1) x [c, c+1)); boxes_norm_yxyx are normalized to a crop.
"""

from __future__ import annotations

import importlib.util
import math

import tensorflow as tf

from dnet_tf.config import SamplerConfig
from dnet_tf.constants import BACKGROUND_CLASS_ID, CLASS_ID_OFFSET, HFLIP_PERMUTATION
from dnet_tf.ops import boxes as box_ops

LOCALIZER_ASPECT_JITTER = 1.5  # crop h/w = image h/w x r, r log-uniform in [1/1.5, 1.5]
CLASSIFIER_CENTRE_JITTER = 0.2  # positive candidate centre shift, fraction of the box side
CLASSIFIER_SCALE_JITTER = 1.35  # positive candidate side x s, s log-uniform in [1/1.35, 1.35]
CLASSIFIER_ASPECT_JITTER = 1.3  # negative candidate aspect = random box's x r, r in [1/1.3, 1.3]
POSITIVE_SLACK = 0.1  # positive candidates may cut this fraction of the box on each side


def _uniform(seed, shape, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi, dtype=tf.float32)


def _log_uniform(seed, shape, factor):
    return tf.exp(_uniform(seed, shape, -math.log(factor), math.log(factor)))


def _first_true(ok: tf.Tensor):
    """For ok [K, A]: (index of the first True per row [K] (0 if none), any True [K])."""
    found = tf.reduce_any(ok, axis=1)
    index = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
    return index, found


def _pick(candidates: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """candidates [K, A, ...], index [K] -> [K, ...]."""
    return tf.gather(candidates, index, axis=1, batch_dims=1)


def _crop_size(seed, shape, height, width, min_fraction, aspect):
    """Crop (h, w) in px: w uniform in [min_fraction W, W], h = w x aspect clipped to [1, H]."""
    w = _uniform(seed, shape, min_fraction, 1.0) * width
    w = tf.clip_by_value(w, tf.minimum(1.0, width), width)
    h = tf.clip_by_value(w * aspect, tf.minimum(1.0, height), height)
    return h, w


def _place_uniform(seed, h, w, height, width):
    u = _uniform(seed, tf.shape(h))
    v = _uniform(tf.random.experimental.stateless_fold_in(seed, 1), tf.shape(h))
    y0, x0 = u * (height - h), v * (width - w)
    return tf.stack([y0, x0, y0 + h, x0 + w], axis=-1)


def _place_near(seed, h, w, target_yxyx, height, width, slack):
    """Crops of size (h, w) placed so that they can cover the target box along each axis.

    Along x the crop's left edge is uniform over [tx1 - w - s, tx0 + s] (s = slack x box width)
    intersected with [0, W - w]; the same along y.
    """
    ty0, tx0, ty1, tx1 = tf.unstack(target_yxyx, axis=-1)
    sy, sx = slack * (ty1 - ty0), slack * (tx1 - tx0)

    def axis(seed_, lo, hi, size, limit):
        lo = tf.clip_by_value(lo, 0.0, limit - size)
        hi = tf.clip_by_value(hi, 0.0, limit - size)
        hi = tf.maximum(hi, lo)
        return lo + _uniform(seed_, tf.shape(lo)) * (hi - lo)

    y0 = axis(seed, ty1 - h - sy, ty0 + sy, h, height)
    x0 = axis(tf.random.experimental.stateless_fold_in(seed, 1), tx1 - w - sx, tx0 + sx, w, width)
    return tf.stack([y0, x0, y0 + h, x0 + w], axis=-1)


def _pairwise(fn, crops_yxyx, boxes_yxyx):
    """fn over crops [K, A, 4] x boxes [N, 4] -> [K, A, N]."""
    k, a = tf.shape(crops_yxyx)[0], tf.shape(crops_yxyx)[1]
    flat = fn(tf.reshape(crops_yxyx, [-1, 4]), boxes_yxyx)
    return tf.reshape(flat, [k, a, tf.shape(boxes_yxyx)[0]])


def _with_dummy(boxes_yxyx):
    """Appends a unit box so that gathering index 0 works when there are no boxes (its
    candidates are never used: no positive is wanted from an image without objects)."""
    return tf.concat([boxes_yxyx, tf.constant([[0.0, 0.0, 1.0, 1.0]])], axis=0)


def _random_box_index(seed, shape, num_boxes):
    return tf.random.stateless_uniform(
        shape, seed, minval=0, maxval=tf.maximum(num_boxes, 1), dtype=tf.int32
    )


def sample_localizer_crops(
    image_hw, boxes_image_yxyx, num_samples: int, cfg: SamplerConfig, seed
) -> dict:
    """Draws K localizer crops of one image (§6): 40% positive, 60% negative by default.

    Args:
      image_hw: int or float [2], the image's (H, W) in px.
      boxes_image_yxyx: float32 [N, 4] object boxes, continuous image_yxyx; N may be 0.
      num_samples: K, a Python int.
      cfg: SamplerConfig (min_crop_fraction, localizer_positive_fraction, positive_coverage,
        max_attempts).
      seed: int32/int64 [2], the stateless random seed.
    Returns:
      dict with
        crops_image_yxyx: float32 [K, 4], continuous image_yxyx;
        is_positive: bool [K], the crop covers >= positive_coverage of some box's area;
        valid: bool [K], the crop is of the kind drawn for it (positive or negative).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
    hw = tf.cast(image_hw, tf.float32)
    height, width = hw[0], hw[1]
    boxes = tf.reshape(tf.cast(boxes_image_yxyx, tf.float32), [-1, 4])
    n = tf.shape(boxes)[0]
    k, a = num_samples, cfg.max_attempts
    want_positive = (_uniform(seeds[0], [k]) < cfg.localizer_positive_fraction) & (n > 0)

    aspect = (height / width) * _log_uniform(seeds[1], [k, a], LOCALIZER_ASPECT_JITTER)
    h, w = _crop_size(seeds[2], [k, a], height, width, cfg.min_crop_fraction, aspect)
    negatives = _place_uniform(seeds[3], h, w, height, width)
    target = tf.gather(_with_dummy(boxes), _random_box_index(seeds[4], [k, a], n))  # [K, A, 4]
    positives = _place_near(seeds[5], h, w, target, height, width, POSITIVE_SLACK)
    candidates = tf.where(want_positive[:, None, None], positives, negatives)  # [K, A, 4]

    inter = _pairwise(box_ops.intersection, candidates, boxes)  # [K, A, N]
    coverage = tf.math.divide_no_nan(inter, box_ops.area(boxes)[None, None, :])
    positive_ok = tf.reduce_any(coverage >= cfg.positive_coverage, axis=-1)
    negative_ok = tf.reduce_all(inter <= 0.0, axis=-1)
    ok = tf.where(want_positive[:, None], positive_ok, negative_ok)
    index, found = _first_true(ok)
    crops = _pick(candidates, index)
    return {
        "crops_image_yxyx": crops,
        "is_positive": want_positive & found,
        "valid": found,
    }


def sample_classifier_crops(
    image_hw, boxes_image_yxyx, class_ids, num_samples: int, cfg: SamplerConfig, seed
) -> dict:
    """Draws K classifier crops of one image (§6) with their labels.

    Args:
      image_hw: [2], (H, W) in px.
      boxes_image_yxyx: float32 [N, 4], continuous image_yxyx; N may be 0.
      class_ids: int32 [N], 0-based.
      num_samples: K, a Python int.
      cfg: SamplerConfig (classifier_positive_fraction, classifier_negative_iou,
        classifier_positive_iou, min_crop_fraction, max_attempts).
      seed: [2] stateless seed.
    Returns:
      dict with
        crops_image_yxyx: float32 [K, 4];
        labels: int32 [K] in [0, C]: 0 = background, else 1 + class id of the box of highest
          Jaccard;
        best_iou: float32 [K], the crop's highest Jaccard with any box (0 when N = 0);
        valid: bool [K], the crop qualifies for the kind drawn for it.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 10)
    hw = tf.cast(image_hw, tf.float32)
    height, width = hw[0], hw[1]
    boxes = tf.reshape(tf.cast(boxes_image_yxyx, tf.float32), [-1, 4])
    class_ids = tf.reshape(tf.cast(class_ids, tf.int32), [-1])
    n = tf.shape(boxes)[0]
    k, a = num_samples, cfg.max_attempts
    want_positive = (_uniform(seeds[0], [k]) < cfg.classifier_positive_fraction) & (n > 0)

    # Positive candidates: jittered copies of a random box, clipped to the image.
    target = tf.gather(_with_dummy(boxes), _random_box_index(seeds[1], [k, a], n))  # [K, A, 4]
    ty0, tx0, ty1, tx1 = tf.unstack(target, axis=-1)
    th, tw = ty1 - ty0, tx1 - tx0
    cy = (ty0 + ty1) / 2 + _uniform(seeds[2], [k, a], -1.0, 1.0) * CLASSIFIER_CENTRE_JITTER * th
    cx = (tx0 + tx1) / 2 + _uniform(seeds[3], [k, a], -1.0, 1.0) * CLASSIFIER_CENTRE_JITTER * tw
    ph = th * _log_uniform(seeds[4], [k, a], CLASSIFIER_SCALE_JITTER)
    pw = tw * _log_uniform(seeds[5], [k, a], CLASSIFIER_SCALE_JITTER)
    positives = box_ops.clip(
        tf.stack([cy - ph / 2, cx - pw / 2, cy + ph / 2, cx + pw / 2], -1), height, width
    )

    # Negative candidates: the localizer's width rule, the aspect of a random box (or the image).
    box_aspect = tf.math.divide_no_nan(th, tw)
    box_aspect = tf.where(n > 0, box_aspect, height / width)
    aspect = box_aspect * _log_uniform(seeds[6], [k, a], CLASSIFIER_ASPECT_JITTER)
    h, w = _crop_size(seeds[7], [k, a], height, width, cfg.min_crop_fraction, aspect)
    negatives = _place_uniform(seeds[8], h, w, height, width)
    candidates = tf.where(want_positive[:, None, None], positives, negatives)

    jaccard = _pairwise(box_ops.iou, candidates, boxes)  # [K, A, N]
    best = tf.reduce_max(tf.concat([jaccard, tf.zeros([k, a, 1])], axis=-1), axis=-1)
    ok = tf.where(
        want_positive[:, None],
        best >= cfg.classifier_positive_iou,
        best < cfg.classifier_negative_iou,
    )
    index, found = _first_true(ok)
    crops = _pick(candidates, index)
    best_iou = _pick(best, index)
    best_box = _pick(
        tf.argmax(
            tf.concat([jaccard, tf.zeros([k, a, 1])], axis=-1), axis=-1, output_type=tf.int32
        ),
        index,
    )
    best_class = tf.gather(tf.concat([class_ids, [-1]], 0), best_box)
    labels = tf.where(want_positive, best_class + CLASS_ID_OFFSET, BACKGROUND_CLASS_ID)
    return {
        "crops_image_yxyx": crops,
        "labels": tf.cast(labels, tf.int32),
        "best_iou": best_iou,
        "valid": found,
    }


@tf.autograph.experimental.do_not_convert  # plain Python dispatch; nothing for autograph to convert
def crop_and_resize(image: tf.Tensor, crops_image_yxyx: tf.Tensor, size: int) -> tf.Tensor:
    """K crops of one image resized to size x size: the team op
    ``dnet_tf.ops.crops.crop_and_resize``
    when that module exists, else ``crop_and_resize_local`` (same sampling convention).

    Args:
      image: uint8 or float [H, W, 3].
      crops_image_yxyx: float32 [K, 4], continuous image_yxyx.
      size: S.
    Returns:
      float32 [K, S, S, 3] in the input's value range.
    """
    if importlib.util.find_spec("dnet_tf.ops.crops") is None:
        return crop_and_resize_local(image, crops_image_yxyx, size)
    from dnet_tf.ops.crops import crop_and_resize as team_crop_and_resize

    crops = tf.cast(crops_image_yxyx, tf.float32)
    indices = tf.zeros([tf.shape(crops)[0]], tf.int32)
    return team_crop_and_resize(tf.cast(image, tf.float32)[None], crops, indices, size)


def crop_and_resize_local(image: tf.Tensor, crops_image_yxyx: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize of K continuous-frame crops of one image to size x size.

    Output sample (i, j) of a crop [y0, x0, y1, x1] sits at the continuous point
    (y0 + (i + 0.5) h / S, x0 + (j + 0.5) w / S), h = y1 - y0, w = x1 - x0, i.e. the pixel-centre
    convention of tf.image.resize(half_pixel_centers); points within half a pixel of the border
    take the border pixel (the image is padded by one replicated pixel, so bilinear sampling never
    reads tf.image.crop_and_resize's extrapolation value).

    Args:
      image: uint8 or float [H, W, 3].
      crops_image_yxyx: float32 [K, 4], continuous image_yxyx.
      size: S, output side in px.
    Returns:
      float32 [K, S, S, 3] in the input's value range.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    crops = tf.cast(crops_image_yxyx, tf.float32)
    y0, x0, y1, x1 = tf.unstack(crops, axis=-1)
    s = float(size)
    # Continuous sample position p -> index p - 0.5 in the image -> p + 0.5 in the padded image;
    # crop_and_resize's normalized coordinate is index / (padded side - 1) = index / (H + 1).
    hy, hx = (y1 - y0) / s, (x1 - x0) / s
    ny0 = (y0 + 0.5 * hy + 0.5) / (shape[0] + 1.0)
    ny1 = (y1 - 0.5 * hy + 0.5) / (shape[0] + 1.0)
    nx0 = (x0 + 0.5 * hx + 0.5) / (shape[1] + 1.0)
    nx1 = (x1 - 0.5 * hx + 0.5) / (shape[1] + 1.0)
    boxes = tf.stack([ny0, nx0, ny1, nx1], axis=-1)
    k = tf.shape(crops)[0]
    return tf.image.crop_and_resize(
        padded[None], boxes, tf.zeros([k], tf.int32), [size, size], method="bilinear"
    )


def boxes_in_crops(boxes_image_yxyx: tf.Tensor, crops_image_yxyx: tf.Tensor) -> tf.Tensor:
    """Object boxes seen in each crop's normalized frame (unclipped).

    Args:
      boxes_image_yxyx: float32 [N, 4]; crops_image_yxyx: float32 [K, 4], both continuous
        image_yxyx.
    Returns:
      float32 [K, N, 4] norm_yxyx of each crop ([0, 1] = the crop).
    """
    return box_ops.to_frame(
        tf.cast(boxes_image_yxyx, tf.float32)[None, :, :],
        tf.cast(crops_image_yxyx, tf.float32)[:, None, :],
        1.0,
        1.0,
    )


def hflip_masks(masks: tf.Tensor) -> tf.Tensor:
    """Mask targets of the horizontally mirrored crop: columns reversed, left/right swapped.

    Args:
      masks: float [..., d, d, 5, C] (rows, columns, mask types in MASK_TYPES order, classes).
    Returns:
      float [..., d, d, 5, C]: out[.., i, j, t, c] = masks[.., i, d-1-j, HFLIP_PERMUTATION[t], c].
    """
    mirrored = tf.reverse(masks, axis=[-3])
    return tf.gather(mirrored, list(HFLIP_PERMUTATION), axis=-2)


def hflip_boxes_norm(boxes_norm_yxyx: tf.Tensor) -> tf.Tensor:
    """Mirrors norm_yxyx boxes about the vertical centre line: x -> 1 - x."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes_norm_yxyx, axis=-1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


# Photometric jitter at strength 1: brightness offset up to +-32 grey levels, contrast and
# saturation factors in [0.7, 1.3]. Real photographs vary in exposure and colour far more than
# the synthetic set; the masks do not depend on any of it.
PHOTOMETRIC_BRIGHTNESS = 32.0
PHOTOMETRIC_FACTOR = 0.3


def photometric_jitter(pixels: tf.Tensor, strength: float, seed) -> tf.Tensor:
    """Random brightness, contrast and saturation per crop; the geometry (and so the masks and
    labels) unchanged.

    Args:
      pixels: float32 [K, S, S, 3] RGB in 0..255.
      strength: in [0, 1]; 0 returns pixels unchanged. At strength s the brightness offset is
        uniform in +-s x 32 grey levels, and the contrast (about the crop's mean) and saturation
        (about each pixel's grey) factors uniform in [1 - 0.3 s, 1 + 0.3 s].
      seed: int64 [2] stateless seed.
    Returns:
      float32 [K, S, S, 3] clipped to 0..255.
    """
    if strength <= 0:
        return pixels
    pixels = tf.convert_to_tensor(pixels, tf.float32)
    k = tf.shape(pixels)[0]
    own_seed = tf.random.experimental.stateless_fold_in(seed, 31)
    keys = tf.unstack(tf.random.experimental.stateless_split(own_seed, 3))
    s = float(strength)
    offset = _uniform(keys[0], [k], -s * PHOTOMETRIC_BRIGHTNESS, s * PHOTOMETRIC_BRIGHTNESS)
    contrast = _uniform(keys[1], [k], 1.0 - s * PHOTOMETRIC_FACTOR, 1.0 + s * PHOTOMETRIC_FACTOR)
    saturation = _uniform(keys[2], [k], 1.0 - s * PHOTOMETRIC_FACTOR, 1.0 + s * PHOTOMETRIC_FACTOR)
    grey = tf.reduce_mean(pixels, axis=-1, keepdims=True)
    out = grey + saturation[:, None, None, None] * (pixels - grey)
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = mean + contrast[:, None, None, None] * (out - mean) + offset[:, None, None, None]
    return tf.clip_by_value(out, 0.0, 255.0)
