"""Crops resized to the network input, and the paste-back of window masks onto a canvas.

Sampling convention (the pixel-centre convention of ``tf.image.resize(half_pixel_centers)``):
a continuous interval [y0, y1) resized to S samples has sample i at the continuous point
y0 + (i + 0.5) (y1 - y0) / S, i.e. at index coordinate y - 0.5 of the pixel grid (pixel r has its
centre at r + 0.5). Bilinear interpolation between pixel centres; points inside the image but
within half a pixel of its border read the border pixel; points outside the image read
``extrapolation_value``.

``tf.image.crop_and_resize`` samples a normalized box [y1, y2] of an image of H rows at index
y1 (H - 1) + i (y2 - y1)(H - 1) / (S - 1). The functions below pad the image by one replicated
pixel on every side (so that the half-pixel border bands interpolate to the border pixel) and
solve for the normalized box whose samples land on the points above.
"""

from __future__ import annotations

import tensorflow as tf

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


def _sample_range(start, end, samples, size):
    """Normalized crop_and_resize coordinates on an axis of ``size`` cells padded by one cell on
    each side, for ``samples`` pixel-centre samples of the continuous interval [start, end).

    Returns:
      (first, last): normalized positions of the first and last samples (equal for one sample,
      which crop_and_resize then reads at their mean).
    """
    step = (end - start) / samples
    first = start + 0.5 * step + 0.5  # continuous p -> index p - 0.5 -> padded index p + 0.5
    last = end - 0.5 * step + 0.5
    return first / (size + 1.0), last / (size + 1.0)


def _outside(start, end, samples, size):
    """bool [N, samples]: sample i of [start, end) falls outside [0, size]."""
    i = tf.range(samples, dtype=tf.float32)[None, :]
    pos = start[:, None] + (i + 0.5) * ((end - start) / samples)[:, None]
    return (pos < 0.0) | (pos > size)


def replicate_border(x):
    """[N, H, W, C] -> [N, H + 2, W + 2, C]: one cell replicated on every side.

    The values of ``tf.pad(x, ..., mode="SYMMETRIC")`` with a width of 1, by concatenation:
    the CPU's MirrorPad kernel took ~20 ms on the 35 windows' masks of 20 classes, this ~2 ms.
    """
    x = tf.concat([x[:, :1], x, x[:, -1:]], axis=1)
    return tf.concat([x[:, :, :1], x, x[:, :, -1:]], axis=2)


@_NOT_CONVERTED
def crop_and_resize(
    images, boxes_image_yxyx, box_indices, size: int, extrapolation_value: float = 0.0
):
    """Crops continuous boxes of a batch of images, each resized affinely to size x size.

    Args:
      images: float32 [B, H, W, C] (other real dtypes are cast to float32).
      boxes_image_yxyx: float32 [N, 4] image_yxyx of image ``box_indices[n]``; may extend outside
        the image (refinement crops).
      box_indices: int32 [N] in [0, B).
      size: S, the output side (Python int >= 1).
      extrapolation_value: value of samples outside the image.
    Returns:
      float32 [N, S, S, C], bilinear with pixel-centre alignment (module docstring).
    """
    if int(size) < 1:
        raise ValueError(f"crop_and_resize: size must be >= 1, got {size}")
    images = tf.cast(images, tf.float32)
    boxes = tf.cast(boxes_image_yxyx, tf.float32)
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    padded = replicate_border(images)
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    s = float(size)
    ny0, ny1 = _sample_range(y0, y1, s, shape[0])
    nx0, nx1 = _sample_range(x0, x1, s, shape[1])
    out = tf.image.crop_and_resize(
        padded,
        tf.stack([ny0, nx0, ny1, nx1], axis=-1),
        tf.cast(box_indices, tf.int32),
        [size, size],
        method="bilinear",
        extrapolation_value=extrapolation_value,
    )
    out_y, out_x = _outside(y0, y1, size, shape[0]), _outside(x0, x1, size, shape[1])  # [N, S] each

    def mask_outside():
        # Separable inside mask, one multiply-add over the crops (a select is far slower on CPU).
        inside = (
            tf.cast(~out_y, tf.float32)[:, :, None] * tf.cast(~out_x, tf.float32)[:, None, :]
        )[..., None]
        if extrapolation_value == 0:
            return out * inside
        return out * inside + float(extrapolation_value) * (1.0 - inside)

    # Crops inside the image (the windows, most classifier crops) skip the masking.
    return tf.cond(tf.reduce_any(out_y) | tf.reduce_any(out_x), mask_outside, lambda: out)


@_NOT_CONVERTED
def paste_max(masks, window_cell_yxyx, canvas_height, canvas_width):
    """Pastes each window's d x d masks onto its extent of a canvas and merges windows by max.

    Canvas cell (r, c) of window n reads the window's masks bilinearly at its centre
    (r + 0.5, c + 0.5) expressed in the window's mask cells (cell-centre aligned; within half a
    mask cell of the window's edge it reads the edge cell). Cells whose centre lies outside
    [wy0, wy1) x [wx0, wx1) get nothing from window n; cells no window covers are 0. Masks are
    sigmoid outputs (>= 0), so the canvas is the max over windows and 0.

    Each window is resampled only over the patch of canvas cells around its extent (one
    crop_and_resize for all windows), then scattered into the canvas with a max: memory stays
    proportional to the windows' area, not windows x canvas.

    Args:
      masks: float32 [N, d, d, K] (K = mask types x classes, flattened).
      window_cell_yxyx: float32 [N, 4], each window's extent in canvas cells (cell_yxyx).
      canvas_height, canvas_width: int scalars (dynamic allowed), >= 1.
    Returns:
      float32 [canvas_height, canvas_width, K].
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    windows = tf.cast(window_cell_yxyx, tf.float32)
    n = tf.shape(masks)[0]
    d = tf.cast(tf.shape(masks)[1], tf.float32)
    k = tf.shape(masks)[3]
    hc, wc = tf.cast(canvas_height, tf.int32), tf.cast(canvas_width, tf.int32)
    wy0, wx0, wy1, wx1 = tf.unstack(windows, axis=-1)
    # Patch: canvas rows r0 .. r0 + ph - 1 with r0 the first row whose centre is >= wy0; ph
    # covers the tallest window (extra rows are masked as outside).
    r0 = tf.math.ceil(wy0 - 0.5)
    c0 = tf.math.ceil(wx0 - 0.5)
    ph = tf.cast(tf.math.ceil(tf.reduce_max(wy1 - wy0)), tf.int32) + 1
    pw = tf.cast(tf.math.ceil(tf.reduce_max(wx1 - wx0)), tf.int32) + 1
    phf, pwf = tf.cast(ph, tf.float32), tf.cast(pw, tf.float32)
    # The patch [r0, r0 + ph) in the window's mask cells, sampled at ph cell centres.
    scale_y, scale_x = d / (wy1 - wy0), d / (wx1 - wx0)
    ny0, ny1 = _sample_range((r0 - wy0) * scale_y, (r0 + phf - wy0) * scale_y, phf, d)
    nx0, nx1 = _sample_range((c0 - wx0) * scale_x, (c0 + pwf - wx0) * scale_x, pwf, d)
    padded = replicate_border(masks)
    patches = tf.image.crop_and_resize(
        padded,
        tf.stack([ny0, nx0, ny1, nx1], axis=-1),
        tf.range(n),
        tf.stack([ph, pw]),
        method="bilinear",
    )  # [N, ph, pw, K]
    rows = r0[:, None] + tf.range(phf)[None, :]  # [N, ph] canvas rows
    cols = c0[:, None] + tf.range(pwf)[None, :]
    in_y = (
        (rows + 0.5 >= wy0[:, None])
        & (rows + 0.5 < wy1[:, None])
        & (rows >= 0)
        & (rows < tf.cast(hc, tf.float32))
    )
    in_x = (
        (cols + 0.5 >= wx0[:, None])
        & (cols + 0.5 < wx1[:, None])
        & (cols >= 0)
        & (cols < tf.cast(wc, tf.float32))
    )
    inside = in_y[:, :, None] & in_x[:, None, :]  # [N, ph, pw]
    # Cells outside go to a spare row hc * wc of the flat canvas, dropped at the end.
    flat_index = tf.cast(rows, tf.int32)[:, :, None] * wc + tf.cast(cols, tf.int32)[:, None, :]
    flat_index = tf.where(inside, flat_index, hc * wc)
    canvas = tf.tensor_scatter_nd_max(
        tf.zeros(tf.stack([hc * wc + 1, k])),
        tf.reshape(flat_index, [-1, 1]),
        tf.reshape(patches, [-1, k]),
    )
    return tf.reshape(canvas[:-1], tf.stack([hc, wc, k]))
