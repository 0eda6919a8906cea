"""Attempt to convert the whole exported detector (a SavedModel signature) to TFLite.

Edge teams asked whether the whole of Algorithm 1 could run as one .tflite file. This module
tries each exported signature with TFLite builtin ops only and then with TF Select ops (the Flex
delegate), records what converts and what does not (with the converter's own list of the ops it
could not map), and whether a converted file runs on the LiteRT interpreter shipped here.

What TF 2.21 does with the DetectorModule graph (measured on the default run; report.json has
the converter's messages):
  * builtins only: fails for both signatures. ``tf.map_fn`` over the images becomes TensorList
    ops that cannot be lowered ("Lowering tensor list ops is failed"), and
    ``tf.image.crop_and_resize`` (windows, crops, paste-back), searchsorted (UpperBound) and
    scatter-max have no builtin kernel.
  * builtins + Select TF ops: ``image_tensor`` (uint8 pixels in) converts, with those ops as Flex
    ops (FlexCropAndResize, FlexTensorList*, FlexTensorScatterMax, FlexUpperBound);
    ``serving_default`` (encoded bytes in) does not: its header parsing (ExtractJpegShape) and
    the format switch (Case) are neither builtins nor Flex ops.
  * The converted ``image_tensor`` file does not run on the LiteRT interpreter here: a tiny
    model stops at its first Flex op (neither the ai-edge-litert wheel nor TensorFlow's own
    tf.lite.Interpreter links the Flex delegate); the default run's fails earlier, allocating
    the dynamically shaped tensors ("BytesRequired number of elements overflowed"). On Android
    it would need at least the tensorflow-lite-select-tf-ops dependency (several MB per ABI).
Hence the supported edge path: networks as .tflite, the rest in ``edge_pipeline``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

import tensorflow as tf

SIGNATURES = ("image_tensor", "serving_default")
OPS_SETS = {
    "builtins": ("TFLITE_BUILTINS",),
    "builtins+select": ("TFLITE_BUILTINS", "SELECT_TF_OPS"),
}


def _op_lists(message: str) -> dict:
    """The converter's 'Flex ops: ...' and 'Custom ops: ...' lines as lists; the first error
    line."""
    out = {}
    for key, label in (("flex_ops", "Flex ops:"), ("unsupported_ops", "Custom ops:")):
        for line in message.splitlines():
            if line.strip().startswith(label):
                out[key] = sorted(
                    {op.strip() for op in line.split(":", 1)[1].split(",") if op.strip()}
                )
    errors = [m.group(1).strip() for m in re.finditer(r"error: (.*)", message)]
    # The shortest distinct messages are the informative ones (the rest repeat MLIR locations).
    distinct = []
    for e in errors:
        e = re.sub(r"loc\(.*?\)\)*:?\s*", "", e)[:300]
        if e and e not in distinct:
            distinct.append(e)
    out["errors"] = distinct[:6]
    return out


def try_convert_signature(
    saved_model_dir: str | os.PathLike,
    signature: str,
    ops_set: str,
    out_path: str | os.PathLike | None = None,
) -> dict:
    """Converts one signature of a SavedModel with one ops set; never raises for a failed
    conversion.

    Args:
      saved_model_dir: a SavedModel version directory (e.g. models/dnet/1).
      signature: e.g. "image_tensor" or "serving_default".
      ops_set: a key of OPS_SETS.
      out_path: where to write the .tflite file when the conversion succeeds (optional).
    Returns:
      dict: signature, ops_set, converted (bool), seconds, and either bytes (+ path, flex_ops) or
      errors / unsupported_ops / flex_ops as the converter listed them.
    """
    if ops_set not in OPS_SETS:
        raise ValueError(f"unknown ops_set {ops_set!r}; known: {list(OPS_SETS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[signature]
    )
    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in OPS_SETS[ops_set]]
    if "SELECT_TF_OPS" in OPS_SETS[ops_set]:
        # The converter's own advice for graphs with tf.map_fn: keep TensorList ops as Flex ops.
        converter._experimental_lower_tensor_list_ops = False  # pylint: disable=protected-access
    result = {"signature": signature, "ops_set": ops_set}
    start = time.perf_counter()
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError and friends; record, do not stop
        result.update(
            converted=False,
            seconds=round(time.perf_counter() - start, 1),
            error_type=type(e).__name__,
            **_op_lists(str(e)),
        )
        return result
    result.update(
        converted=True, seconds=round(time.perf_counter() - start, 1), bytes=len(flatbuffer)
    )
    if out_path is not None:
        with open(out_path, "wb") as f:
            f.write(flatbuffer)
        result["path"] = str(out_path)
    result.update(
        flex_ops=flex_ops(flatbuffer), runs_on_litert=_runs_on_litert(flatbuffer, signature)
    )
    return result


def flex_ops(flatbuffer: bytes) -> list:
    """Names of the TF Select (Flex) ops a .tflite file uses, read from its operator codes."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i).CustomCode()
        if code and code.decode().startswith("Flex"):
            names.add(code.decode())
    return sorted(names)


def _runs_on_litert(flatbuffer: bytes, signature: str) -> dict:
    """Whether the LiteRT interpreter runs the converted signature on a small black image."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_content=flatbuffer).get_signature_runner(signature)
        if signature == "image_tensor":
            runner(images=np.zeros((1, 64, 64, 3), np.uint8))
        else:
            runner(images=np.array([b""], object))
        return {"ok": True}
    except Exception as e:  # RuntimeError from the interpreter when an op has no kernel
        return {"ok": False, "error": str(e).splitlines()[0][:400] if str(e) else type(e).__name__}


def attempt_whole_pipeline(
    saved_model_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    signatures: Sequence[str] = SIGNATURES,
    ops_sets: Sequence[str] = tuple(OPS_SETS),
) -> list:
    """Tries every signature with every ops set; returns one ``try_convert_signature`` dict each.

    Converted files are written to ``out_dir/detector_<signature>_<ops_set>.tflite`` when out_dir
    is given.
    """
    results = []
    for signature in signatures:
        for ops_set in ops_sets:
            path = None
            if out_dir is not None:
                os.makedirs(out_dir, exist_ok=True)
                path = os.path.join(
                    out_dir, f"detector_{signature}_{ops_set.replace('+', '_')}.tflite"
                )
            results.append(try_convert_signature(saved_model_dir, signature, ops_set, path))
    return results
