"""The request budget of the exported graph: what one request may cost before anything is batched.

``DetectorModule.detect`` takes one padded float32 batch [B, Hmax, Wmax, 3], so a request's cost
grows with (number of images) x (largest image): one large image among many tiny ones makes every
tiny one as expensive as the large one. The budget bounds each factor, in the graph itself (TF
Serving runs the same checks), for both image signatures:

  1. each image is brought to at most ``max_image_side`` px on its longer side (aspect kept,
     bilinear with an antialiasing filter) before batching; smaller images pass unchanged;
  2. at most ``max_images`` images per request;
  3. at most ``max_request_pixels`` padded pixels, B x Hmax x Wmax after step 1.

Past 2 or 3 the request fails with InvalidArgument naming the InferenceConfig field. Why step 1
costs no accuracy: ``resolution_side`` below. The peak memory this bounds: README, "Reliability".
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class RequestBudget:
    """Limits of one request; None switches a limit off (tests, in-memory evaluation).

    Attributes:
      max_image_pixels: the largest H x W an image may declare (checked before decoding).
      max_image_side: longer side, px, each image is brought down to; None keeps sizes.
      max_images: images per request.
      max_request_pixels: padded pixels of the request, B x Hmax x Wmax after resizing.
    """

    max_image_pixels: int
    max_image_side: int | None = None
    max_images: int | None = None
    max_request_pixels: int | None = None

    @classmethod
    def from_config(cls, cfg) -> RequestBudget:
        """From an InferenceConfig."""
        return cls(
            max_image_pixels=int(cfg.max_image_pixels),
            max_image_side=int(cfg.max_image_side),
            max_images=int(cfg.max_images_per_request),
            max_request_pixels=int(cfg.max_request_pixels),
        )

    @classmethod
    def coerce(cls, budget) -> RequestBudget:
        """A RequestBudget, or a bare int taken as max_image_pixels (no other limit)."""
        return budget if isinstance(budget, RequestBudget) else cls(max_image_pixels=int(budget))


def resolution_side(input_size: int, num_scales: int) -> int:
    """Longest image side past which no window of the first stage gains resolution, px.

    The finest scale's windows are 2^-(num_scales - 1) of the image side, and every window is
    resized to input_size x input_size for the localizer. Once a finest window is input_size px
    wide it is already downsampled, so a larger image adds nothing the networks see in stage 1.
    Worked: input_size 225, 3 scales: 225 x 4 = 900 px.
    """
    return int(input_size) * 2 ** (int(num_scales) - 1)


def check_image_count(batch: tf.Tensor, budget: RequestBudget) -> list:
    """Asserts for the number of images; empty without a limit. ``batch``: int32 scalar."""
    if budget.max_images is None:
        return []
    return [
        tf.debugging.assert_less_equal(
            batch,
            tf.constant(budget.max_images, batch.dtype),
            message=f"request has more images than InferenceConfig.max_images_per_request = "
            f"{budget.max_images}",
        )
    ]


def check_request_pixels(sizes: tf.Tensor, budget: RequestBudget) -> list:
    """Asserts B x Hmax x Wmax <= max_request_pixels; ``sizes`` int32 [B, 2] after resizing."""
    if budget.max_request_pixels is None:
        return []
    sizes64 = tf.cast(sizes, tf.int64)
    hw_max = tf.reduce_max(tf.concat([sizes64, tf.zeros([1, 2], tf.int64)], axis=0), axis=0)
    padded = tf.shape(sizes, out_type=tf.int64)[0] * hw_max[0] * hw_max[1]
    return [
        tf.debugging.assert_less_equal(
            padded,
            tf.constant(budget.max_request_pixels, tf.int64),
            message=f"request needs more padded pixels (images x largest height x largest width, "
            f"after resizing to max_image_side) than InferenceConfig.max_request_pixels = "
            f"{budget.max_request_pixels}; send fewer images per request or images of one size",
        )
    ]


def fitted_size(hw: tf.Tensor, max_side: int | None) -> tf.Tensor:
    """(h, w) int32 [2] scaled so that the longer side is at most max_side (aspect kept)."""
    hw = tf.cast(hw, tf.int32)
    if max_side is None:
        return hw
    longest = tf.cast(tf.reduce_max(hw), tf.float64)
    one = tf.constant(1.0, tf.float64)
    scale = tf.minimum(one, float(max_side) / tf.maximum(longest, one))
    out = tf.cast(tf.round(tf.cast(hw, tf.float64) * scale), tf.int32)
    return tf.clip_by_value(out, 1, max_side)


def fit_images(images: tf.Tensor, max_side: int | None) -> tf.Tensor:
    """uint8 [H, W, 3] or [B, H, W, 3] -> float32 0..255, longer side at most max_side.

    Images already within the limit are only cast, so their detections are exactly as before.
    Larger ones are resized with bilinear antialiasing (a box filter as wide as the scale), which
    averages the dropped pixels instead of skipping them.
    """
    shape = tf.shape(images)
    hw = shape[-3:-1]
    target = fitted_size(hw, max_side)
    as_float = tf.cast(images, tf.float32)
    if max_side is None:
        return as_float
    return tf.cond(
        tf.reduce_all(tf.equal(target, hw)),
        lambda: as_float,
        lambda: tf.clip_by_value(
            tf.image.resize(images, target, method="bilinear", antialias=True), 0.0, 255.0
        ),
    )


def uint8_batch_within(images_uint8: tf.Tensor, budget: RequestBudget):
    """The image_tensor signature's input under the budget.

    Args:
      images_uint8: uint8 [B, H, W, 3] (one size for the whole batch, as the signature takes it).
    Returns:
      (float32 images [B, h, w, 3] 0..255, int32 sizes [B, 2]) for ``DetectorModule.detect``,
      (h, w) = (H, W) brought to max_image_side.
    Raises (at run time):
      InvalidArgument past max_images_per_request, max_image_pixels or max_request_pixels.
    """
    images_uint8 = tf.convert_to_tensor(images_uint8, tf.uint8)
    shape = tf.shape(images_uint8)
    pixels = tf.cast(shape[1], tf.int64) * tf.cast(shape[2], tf.int64)
    checks = check_image_count(shape[0], budget) + [
        tf.debugging.assert_less_equal(
            pixels,
            tf.constant(budget.max_image_pixels, tf.int64),
            message=f"image has more than InferenceConfig.max_image_pixels = "
            f"{budget.max_image_pixels} pixels",
        )
    ]
    target = fitted_size(shape[1:3], budget.max_image_side)
    sizes = tf.tile(target[None, :], [shape[0], 1])
    checks += check_request_pixels(sizes, budget)
    with tf.control_dependencies(checks):
        images = fit_images(tf.identity(images_uint8), budget.max_image_side)
    images.set_shape([None, None, None, 3])
    return images, sizes
