"""Graph-only decoding of encoded images for the SavedModel's string input.

Supports JPEG, PNG, GIF (first frame) and BMP; greyscale and RGBA become RGB. The size declared in
the file's header is checked *before* decoding, so a small file declaring a huge image is refused
with InvalidArgument instead of exhausting memory. Unknown formats, empty and truncated data also
fail with InvalidArgument (from the decode ops or the asserts below).
"""

from __future__ import annotations

import tensorflow as tf

# Magic numbers of the supported formats, and the byte counts needed to read each header's size.
_JPEG, _PNG, _GIF, _BMP = 0, 1, 2, 3
_MIN_HEADER_BYTES = 26  # the BMP header's height ends at byte 26, the largest of the four


def _le_uint(raw_u8: tf.Tensor) -> tf.Tensor:
    """Little-endian unsigned integer from uint8 [n] -> int64 scalar."""
    raw = tf.cast(raw_u8, tf.int64)
    weights = tf.bitwise.left_shift(
        tf.constant(1, tf.int64), tf.range(tf.size(raw_u8), dtype=tf.int64) * 8
    )
    return tf.reduce_sum(raw * weights)


def _be_uint(raw_u8: tf.Tensor) -> tf.Tensor:
    return _le_uint(tf.reverse(raw_u8, axis=[0]))


def _header_bytes(encoded: tf.Tensor, pos: int, length: int) -> tf.Tensor:
    return tf.io.decode_raw(tf.strings.substr(encoded, pos, length), tf.uint8)


def image_format(encoded: tf.Tensor) -> tf.Tensor:
    """Format id (0 JPEG, 1 PNG, 2 GIF, 3 BMP) of one encoded image; InvalidArgument otherwise.

    Args:
      encoded: tf.string scalar.
    Returns:
      int32 scalar.
    """
    length = tf.strings.length(encoded)
    long_enough = tf.debugging.assert_greater_equal(
        length,
        _MIN_HEADER_BYTES,
        message="image bytes too short to be a JPEG, PNG, GIF or BMP (empty or truncated input)",
    )
    with tf.control_dependencies([long_enough]):
        magic = tf.strings.substr(encoded, 0, 4)
    is_jpeg = tf.strings.substr(magic, 0, 2) == b"\xff\xd8"
    is_png = magic == b"\x89PNG"
    is_gif = tf.strings.substr(magic, 0, 3) == b"GIF"
    is_bmp = tf.strings.substr(magic, 0, 2) == b"BM"
    known = tf.stack([is_jpeg, is_png, is_gif, is_bmp])
    is_known = tf.debugging.assert_equal(
        tf.reduce_any(known),
        True,
        message="unknown image format: expected JPEG, PNG, GIF or BMP bytes",
    )
    with tf.control_dependencies([is_known]):
        return tf.cast(tf.argmax(tf.cast(known, tf.int32)), tf.int32)


def declared_size(encoded: tf.Tensor, fmt: tf.Tensor) -> tf.Tensor:
    """Height and width an encoded image declares in its header, without decoding the pixels.

    Args:
      encoded: tf.string scalar; fmt: int32 scalar from ``image_format``.
    Returns:
      int64 [2] = (height, width).
    """

    def jpeg():
        return tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64)

    def png():  # IHDR: width then height, big-endian uint32 at bytes 16..24
        return tf.stack(
            [_be_uint(_header_bytes(encoded, 20, 4)), _be_uint(_header_bytes(encoded, 16, 4))]
        )

    def gif():  # logical screen: width then height, little-endian uint16 at bytes 6..10
        return tf.stack(
            [_le_uint(_header_bytes(encoded, 8, 2)), _le_uint(_header_bytes(encoded, 6, 2))]
        )

    def bmp():  # BITMAPINFOHEADER: width then height, little-endian int32 at 18..26; height < 0 = top-down
        h = _le_uint(_header_bytes(encoded, 22, 4))
        h = tf.where(h >= 2**31, 2**32 - h, h)
        return tf.stack([h, _le_uint(_header_bytes(encoded, 18, 4))])

    return tf.switch_case(fmt, [jpeg, png, gif, bmp])


def decode_rgb(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Decodes one encoded image to RGB uint8 [H, W, 3] after checking its declared size.

    Raises (at run time) InvalidArgument for unknown formats, truncated or corrupt data, and
    images whose declared H * W exceeds ``max_pixels`` or is zero.
    """
    fmt = image_format(encoded)
    hw = declared_size(encoded, fmt)
    pixels = hw[0] * hw[1]
    checks = [
        tf.debugging.assert_positive(pixels, message="image declares a zero height or width"),
        tf.debugging.assert_less_equal(
            pixels,
            tf.constant(max_pixels, tf.int64),
            message=f"image declares more than {max_pixels} pixels (raise InferenceConfig.max_image_pixels)",
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_batch(encoded: tf.Tensor, max_pixels: int):
    """Decodes a batch of encoded images of possibly different sizes.

    Args:
      encoded: tf.string [B].
      max_pixels: the largest H * W accepted.
    Returns:
      images: float32 [B, Hmax, Wmax, 3], pixel values 0..255, each image at the top-left,
        zero-padded to the largest height and width in the batch.
      sizes: int32 [B, 2] = (height, width) of each image.
    """

    def one(s):
        image = decode_rgb(s, max_pixels)
        return tf.RaggedTensor.from_tensor(image), tf.shape(image)[:2]

    ragged, sizes = tf.map_fn(
        one,
        encoded,
        fn_output_signature=(
            tf.RaggedTensorSpec(shape=[None, None, 3], dtype=tf.uint8, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    return tf.cast(ragged.to_tensor(), tf.float32), sizes
