"""Small inputs that ask a detector server for large allocations, for the reliability benchmark
(bench/request_budget.py) and the adversarial tests (tests/test_serving_adversarial.py).

Each builder returns bytes or a proto a client could send; sizes are what the input *declares*,
not what it carries.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise_jpeg(height: int, width: int, seed: int = 0, quality: int = 90, cell: int = 50) -> bytes:
    """A JPEG of smooth noise: random colours every ``cell`` px, bilinearly interpolated (the
    larger the cell, the smaller the file: 3000 x 3000 at cell 1000, quality 40 is ~156 KB)."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (height // cell + 2, width // cell + 2, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def tiny_png(seed: int = 0) -> bytes:
    """A 1 x 1 RGB PNG."""
    return encode(np.random.RandomState(seed).randint(0, 256, (1, 1, 3), np.uint8), "PNG")


def png_header_bomb(height: int = 100_000, width: int = 100_000) -> bytes:
    """A PNG whose IHDR declares height x width RGB pixels, with one empty IDAT (~60 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def jpeg_header_bomb(height: int = 65_000, width: int = 65_000) -> bytes:
    """A small real JPEG whose SOF0 frame header is patched to declare height x width."""
    data = bytearray(encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_frame_offsets(data: bytes) -> list[int]:
    """Byte offsets of the image descriptors (0x2C) of a GIF."""
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while pos < len(data):
        kind = data[pos]
        if kind == 0x21:
            pos += 2
        elif kind == 0x2C:
            found.append(pos)
            local = data[pos + 9]
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            break
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return found


def gif_frame_bomb(height: int = 60_000, width: int = 60_000) -> bytes:
    """A two-frame 4 x 4 GIF (logical screen 4 x 4) whose second frame declares height x width."""
    rng = np.random.RandomState(0)
    frames = [Image.fromarray(rng.randint(0, 256, (4, 4, 3), np.uint8)) for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    data = bytearray(buf.getvalue())
    second = gif_frame_offsets(bytes(data))[1]
    data[second + 5 : second + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def declared_uint8_tensor(shape=(1, 12_000, 12_000, 3)):
    """A uint8 TensorProto declaring ``shape`` with a single int_val (TF fills the rest)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_UINT8,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
        ),
        int_val=[7],
    )


def declared_string_tensor(count: int = 200_000_000):
    """A DT_STRING TensorProto declaring ``count`` elements with a single string_val."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(count))]
        ),
        string_val=[b"x"],
    )


def predict_request(model: str, signature: str, tensor):
    """A PredictRequest with ``tensor`` (a TensorProto) as input "images"."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(tensor)
    return request


def string_tensor(images):
    import tensorflow as tf

    return tf.make_tensor_proto(list(images), dtype=tf.string)


def vm_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak resident) of a process, KiB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Resets a process's VmHWM to its current VmRSS (Linux clear_refs "5"); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
