"""Which ops of an exported SavedModel the installed TensorFlow can run on a given device.

TF Serving's GPU image places each op on the GPU when a GPU kernel is registered for it and
falls back to the CPU otherwise, copying tensors across at every such boundary. This reads the
op types of every graph and function of a SavedModel and looks each one up in the kernel
registry of this TensorFlow build (``tensorflow.python.framework.kernels``), which holds the GPU
kernels whether or not a GPU is present.

Ops with a "DEFAULT" kernel (functional control flow such as ``StatelessIf``, ``While``,
``PartitionedCall``, ``Identity``) run on any device and count as placeable everywhere.
"""

from __future__ import annotations

import functools
import os
import pathlib

# Ops that run on the CPU in every TensorFlow build, and why that costs nothing on a GPU server:
# they handle the request's bytes (decoding, string checks, the class-name lookup) once per image,
# before or after the detector proper.
CPU_ONLY_OPS = {
    "DecodeImage": "image decoding (JPEG/PNG/GIF/BMP) has only a CPU kernel; once per image",
    "ExtractJpegShape": "reads the JPEG header for the size check before decoding",
    "DecodeRaw": "reads the size fields of PNG/GIF/BMP headers from the request bytes",
    "Substr": "string op: the format check on the request bytes",
    "StringLength": "string op: the truncation check on the request bytes",
    "RaggedTensorToVariant": "decoding: the batch's decoded images, of different sizes, as one "
    "ragged uint8 tensor (tf.map_fn over the request)",
    "RaggedTensorToTensor": "decoding: that ragged batch zero-padded into one uint8 tensor",
    "ScaleAndTranslate": "decoding: the request budget's antialiased downscale of an image "
    "larger than max_image_side, once per such image, before the batch is formed",
    "StringJoin": "string op of the checkpoint-saving function (temporary file names)",
    "StaticRegexFullMatch": "string op of the checkpoint-saving function (device-name check)",
    "SaveV2": "writes checkpoints; not on the serving path",
    "MergeV2Checkpoints": "writes checkpoints; not on the serving path",
    "ShardedFilename": "checkpoint file names; not on the serving path",
    "RestoreV2": "reads the variables once, at load; not on the serving path",
}


def saved_model_op_types(path: str | os.PathLike) -> set[str]:
    """The op type of every node of every meta graph of ``path/saved_model.pb``, functions too."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel.FromString((pathlib.Path(path) / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for f in mg.graph_def.library.function:
            ops.update(n.op for n in f.node_def)
    return ops


@functools.cache
def kernel_devices(op_type: str) -> frozenset[str]:
    """Device types ("CPU", "GPU", "DEFAULT", ...) with a kernel registered for ``op_type``."""
    from tensorflow.python.framework import kernels

    return frozenset(k.device_type for k in kernels.get_registered_kernels_for_op(op_type).kernel)


def ops_without_kernel(op_types, device: str = "GPU") -> list[str]:
    """The op types of ``op_types`` with neither a ``device`` kernel nor a DEFAULT one, sorted."""
    return sorted(op for op in op_types if not kernel_devices(op) & {device, "DEFAULT"})
