"""Decoding dataset image files as real-world datasets hold them: some truncated, some broken.

One decoder for training and evaluation alike, ``decode_tensor``: TensorFlow's, with its recovery
of truncated JPEGs switched on (``try_recover_truncated``: libjpeg stops at the premature end and
the rows it never received are filled, as TF decides). Anything TF cannot decode even so is a
problem naming the file; the readers (``voc.read_voc_split``) skip it under ``on_error="skip"``
and stop on it otherwise.

``check_image_file`` decodes a file once and says whether it decodes cleanly, only with recovery,
or not at all; results are cached per (path, size, mtime), so a training run that reads its split
for both stages decodes each file once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """How one image file decodes.

    Attributes:
      ok: TF decodes it (cleanly, or with truncated-JPEG recovery).
      recovered: it decoded only with recovery (a truncated or corrupt JPEG).
      problem: why it does not decode cleanly ("" when it does).
    """

    ok: bool
    recovered: bool = False
    problem: str = ""


def _is_jpeg(encoded: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(encoded, 0, 2), b"\xff\xd8")


def decode_tensor(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3], recovering truncated JPEGs.

    A complete JPEG decodes exactly as with tf.io.decode_image (the same op and settings).
    """
    image = tf.cond(
        _is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, try_recover_truncated=True),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def _first_line(e: Exception) -> str:
    """The op's own words: no "{{function_node ...}}" prefix or "[Op:...]" suffix."""
    text = getattr(e, "message", None) or str(e)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return re.sub(r"\s*\[Op:\w+\].*$", "", lines[0] if lines else text)


@functools.lru_cache(maxsize=65536)
def _check_cached(path: str, size: int, mtime_ns: int) -> ImageCheck:
    del size, mtime_ns  # the cache key: a rewritten file is checked again
    try:
        data = tf.io.read_file(path)
    except (tf.errors.OpError, OSError) as e:
        return ImageCheck(False, problem=f"cannot read image {path} ({_first_line(e)})")
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
        return ImageCheck(True)
    except tf.errors.OpError as e:
        strict = _first_line(e)
    try:
        decode_tensor(data)
    except tf.errors.OpError as e:
        return ImageCheck(False, problem=f"cannot decode image {path} ({_first_line(e)})")
    return ImageCheck(
        True, recovered=True, problem=f"image {path} decoded with recovery ({strict})"
    )


def check_image_file(path: str | os.PathLike) -> ImageCheck:
    """Decodes the file once (cached) and reports how it went; never raises for a bad file."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        return ImageCheck(False, problem=f"cannot read image {path} ({e})")
    return _check_cached(path, st.st_size, st.st_mtime_ns)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] pixels of an image file with ``decode_tensor``.

    Raises:
      ValueError naming the file when TF cannot decode it.
    """
    path = os.fspath(path)
    try:
        return decode_tensor(tf.io.read_file(path)).numpy()
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"{path}: cannot decode image ({_first_line(e)})") from e
