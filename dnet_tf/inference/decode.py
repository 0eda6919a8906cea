"""Graph-only decoding of encoded images for the SavedModel's string input.

Supports JPEG, PNG, GIF (first frame) and BMP; greyscale and RGBA become RGB. The size declared in
the file's header is checked *before* decoding, so a small file declaring a huge image is refused
with InvalidArgument instead of exhausting memory. Unknown formats, empty and truncated data also
fail with InvalidArgument (from the decode ops or the asserts below).
"""

from __future__ import annotations

import tensorflow as tf

from dnet_tf.inference.budget import (
    RequestBudget,
    check_image_count,
    check_request_pixels,
    fit_images,
)

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

    # BITMAPINFOHEADER: width then height, little-endian int32 at 18..26; height < 0 = top-down.
    def bmp():
        h = _le_uint(_header_bytes(encoded, 22, 4))
        h = tf.where(h >= 2**31, 2**32 - h, h)
        return tf.stack([h, _le_uint(_header_bytes(encoded, 18, 4))])

    return tf.switch_case(fmt, [jpeg, png, gif, bmp])


def gif_frame_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """Largest and total H x W over the frame descriptors of a GIF, without decoding it.

    giflib (behind tf.io.decode_gif) reads every frame of the file and allocates each frame's
    raster at the frame's own declared size, whatever the logical screen says; the screen size
    alone therefore bounds nothing. This walks the block structure: header and logical screen
    (13 bytes), optional global colour table, then extension blocks (0x21, sub-blocks) and image
    descriptors (0x2C: left, top, width, height, flags; optional local colour table; LZW code size
    byte; sub-blocks) up to the trailer (0x3B) or the end of the data. Each step advances at least
    one byte, so the walk ends after at most len(encoded) steps.

    Args:
      encoded: tf.string scalar holding GIF bytes.
    Returns:
      int64 [2] = (largest frame's pixels, all frames' pixels).
    """
    data = tf.io.decode_raw(encoded, tf.uint8)
    n = tf.size(data, out_type=tf.int64)
    padded = tf.concat([tf.cast(data, tf.int64), tf.zeros([16], tf.int64)], axis=0)

    def at(i):
        return tf.gather(padded, tf.minimum(tf.cast(i, tf.int64), n + 15))

    def le16(i):
        return at(i) + 256 * at(i + 1)

    def table_bytes(flags):  # a colour table follows when bit 7 is set: 3 x 2^(size + 1) bytes
        has = tf.bitwise.bitwise_and(flags, 0x80) > 0
        size = tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.bitwise.bitwise_and(flags, 7) + 1)
        return tf.where(has, 3 * size, tf.constant(0, tf.int64))

    start = tf.constant(13, tf.int64) + table_bytes(at(10))
    # State: position, in sub-blocks?, done?, largest frame, total pixels.
    zero = tf.constant(0, tf.int64)

    def step(pos, in_blocks, done, largest, total):
        def sub_block():
            length = at(pos)
            return pos + 1 + length, length > 0, done, largest, total

        def block_start():
            kind = at(pos)
            is_ext = tf.equal(kind, 0x21)
            is_image = tf.equal(kind, 0x2C)
            area = le16(pos + 5) * le16(pos + 7)
            image_next = pos + 10 + table_bytes(at(pos + 9)) + 1  # + the LZW code size byte
            return (
                tf.where(is_ext, pos + 2, tf.where(is_image, image_next, pos)),
                is_ext | is_image,
                ~(is_ext | is_image),
                tf.where(is_image, tf.maximum(largest, area), largest),
                tf.where(is_image, total + area, total),
            )

        pos, in_blocks, done, largest, total = tf.cond(in_blocks, sub_block, block_start)
        return pos, in_blocks, done | (pos >= n), largest, total

    _, _, _, largest, total = tf.while_loop(
        lambda pos, in_blocks, done, largest, total: ~done,
        step,
        (start, tf.constant(False), start >= n, zero, zero),
        maximum_iterations=tf.cast(tf.minimum(n + 1, 2**31 - 1), tf.int32),
    )
    return tf.stack([largest, total])


def _gif_checks(encoded: tf.Tensor, fmt: tf.Tensor, max_pixels: int) -> list:
    """Asserts on a GIF's frame descriptors (no-ops for other formats)."""
    frames = tf.cond(
        tf.equal(fmt, _GIF),
        lambda: gif_frame_pixels(encoded),
        lambda: tf.zeros([2], tf.int64),
    )
    return [
        tf.debugging.assert_less_equal(
            frames[0],
            tf.constant(max_pixels, tf.int64),
            message=f"GIF frame declares more than {max_pixels} pixels "
            "(InferenceConfig.max_image_pixels)",
        ),
        # Every frame's raster is allocated (one byte a pixel): all of them together may cost no
        # more than the largest image allowed decoded as RGB.
        tf.debugging.assert_less_equal(
            frames[1],
            tf.constant(3 * max_pixels, tf.int64),
            message=f"GIF frames declare more than {3 * max_pixels} pixels in all "
            "(3 x InferenceConfig.max_image_pixels)",
        ),
    ]


def decode_rgb(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Decodes one encoded image to RGB uint8 [H, W, 3] after checking its declared size.

    Raises (at run time) InvalidArgument for unknown formats, truncated or corrupt data, and
    images whose declared H * W exceeds ``max_pixels`` or is zero (for a GIF: any frame's).
    """
    fmt = image_format(encoded)
    hw = declared_size(encoded, fmt)
    pixels = hw[0] * hw[1]
    checks = [
        tf.debugging.assert_positive(pixels, message="image declares a zero height or width"),
        tf.debugging.assert_less_equal(
            pixels,
            tf.constant(max_pixels, tf.int64),
            message=f"image declares more than {max_pixels} pixels "
            "(InferenceConfig.max_image_pixels)",
        ),
    ]
    with tf.control_dependencies(checks):
        gif_checks = _gif_checks(encoded, fmt, max_pixels)
    with tf.control_dependencies(checks + gif_checks):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_batch(encoded: tf.Tensor, budget: RequestBudget | int):
    """Decodes a batch of encoded images of possibly different sizes, within a request budget.

    Images are decoded one at a time (so at most one full-size decoded image exists at once) and
    each is brought to ``budget.max_image_side`` before the batch is padded.

    Args:
      encoded: tf.string [B].
      budget: a RequestBudget, or an int: the largest H * W accepted, with no other limit.
    Returns:
      images: float32 [B, Hmax, Wmax, 3], pixel values 0..255, each image at the top-left,
        zero-padded to the largest height and width in the batch (after resizing).
      sizes: int32 [B, 2] = (height, width) of each image as batched (after resizing).
    Raises (at run time):
      InvalidArgument for bad bytes and past any limit of the budget, naming the limit.
    """
    budget = RequestBudget.coerce(budget)
    encoded = tf.convert_to_tensor(encoded, tf.string)
    with tf.control_dependencies(check_image_count(tf.size(encoded), budget)):
        encoded = tf.identity(encoded)

    def one(s):
        image = fit_images(decode_rgb(s, budget.max_image_pixels), budget.max_image_side)
        return tf.RaggedTensor.from_tensor(image), tf.shape(image)[:2]

    ragged, sizes = tf.map_fn(
        one,
        encoded,
        fn_output_signature=(
            tf.RaggedTensorSpec(shape=[None, None, 3], dtype=tf.float32, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
        ),
        parallel_iterations=1,
    )
    with tf.control_dependencies(check_request_pixels(sizes, budget)):
        images = ragged.to_tensor()
    return images, sizes
