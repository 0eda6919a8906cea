"""Detections as the clients return them: ``dnet_tf.core.detections.Detections``, one per image.

The client learns each image's H and W from the encoded bytes with Pillow (``image_size``),
which reads the header only and, like tf.io.decode_image, ignores EXIF orientation -- both see
the same stored pixel grid -- and decodes the signature's outputs with
``Detections.batch_from_outputs``.
"""

from __future__ import annotations

import io

from PIL import Image

from dnet_tf.core.detections import Detection, Detections, to_json  # noqa: F401 (re-exported)


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of encoded image bytes, read from the header by Pillow.

    Raises:
      ValueError: when Pillow cannot identify the bytes as an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as e:  # noqa: BLE001 - Pillow raises several types for unreadable data
        raise ValueError(f"not a readable image ({len(data)} bytes): {e}") from e
    return int(height), int(width)
