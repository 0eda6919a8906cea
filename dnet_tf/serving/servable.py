"""One loaded version of one model: its SignatureDefs and a way to run them on NumPy arrays.

The SavedModel is loaded with ``tf.saved_model.load`` and its signatures are called as concrete
functions. The SignatureDefs reported to clients (GetModelMetadata, input validation) are read
from ``saved_model.pb`` itself, i.e. exactly what TF Serving's loader sees under the ``serve`` tag.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from dnet_tf.serving.errors import ServingError, grpc_code_from_value, invalid_argument

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
WARMUP_FILE = pathlib.Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit on records read from the warmup file


def read_signature_defs(export_dir: str | pathlib.Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """SignatureDefs of the ``serve`` MetaGraph in ``<export_dir>/saved_model.pb``.

    Raises:
      ValueError: when the file is missing/unparsable or has no MetaGraph tagged ``serve``.
    """
    path = pathlib.Path(export_dir) / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(path.read_bytes())
    except (OSError, Exception) as e:  # DecodeError or I/O
        raise ValueError(f"{path}: cannot read SavedModel: {e}") from e
    for mg in sm.meta_graphs:
        if SERVE_TAG in mg.meta_info_def.tags:
            return {k: v for k, v in mg.signature_def.items() if not k.startswith("__")}
    raise ValueError(f"{path}: no MetaGraph tagged {SERVE_TAG!r}")


def _shape_error(alias: str, info: meta_graph_pb2.TensorInfo, shape: tuple) -> str | None:
    ts = info.tensor_shape
    if ts.unknown_rank:
        return None
    want = [d.size for d in ts.dim]
    if len(want) != len(shape) or any(w >= 0 and w != s for w, s in zip(want, shape)):
        pretty = "[" + ",".join("?" if w < 0 else str(w) for w in want) + "]"
        return (
            f"input '{alias}' has shape {list(shape)}, which is incompatible with the "
            f"signature's {pretty}"
        )
    return None


class ServableVersion:
    """A loaded model version.

    Attributes:
      name: model name; version: version number; path: its directory.
      signature_defs: signature name -> SignatureDef (the ``serve`` MetaGraph's).
    """

    def __init__(self, name: str, version: int, path: str | pathlib.Path):
        self.name = name
        self.version = int(version)
        self.path = pathlib.Path(path)
        self.signature_defs = read_signature_defs(self.path)
        self._loaded = tf.saved_model.load(str(self.path), tags=[SERVE_TAG])
        self._functions = {
            k: self._loaded.signatures[k]
            for k in self.signature_defs
            if k in self._loaded.signatures
        }

    def __repr__(self) -> str:
        return f"ServableVersion({self.name!r}, {self.version}, {str(self.path)!r})"

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The named SignatureDef ("" = serving_default); INVALID_ARGUMENT if absent (as TF
        Serving)."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self._functions:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def check_inputs(self, signature_name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Validates input aliases, dtypes and shapes against the signature.

        Raises:
          ServingError INVALID_ARGUMENT with TF Serving's wording for a wrong/missing alias, a dtype
          mismatch, or a shape the signature does not accept.
        """
        sig = self.signature(signature_name)
        expected = sorted(sig.inputs)
        if len(arrays) != len(sig.inputs):
            raise invalid_argument(
                f"input size does not match signature: {len(arrays)}!={len(sig.inputs)} "
                f"len([{','.join(sorted(arrays))}]) != len([{','.join(expected)}])"
            )
        for alias, array in arrays.items():
            if alias not in sig.inputs:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(expected)}}}."
                )
            info = sig.inputs[alias]
            want = tf.dtypes.as_dtype(info.dtype)
            got = _numpy_to_tf_dtype(array)
            if got != want:
                raise invalid_argument(
                    f"Expects arg[{expected.index(alias)}] to be {want.name} but "
                    f"{got.name if got is not None else array.dtype} is provided"
                )
            err = _shape_error(alias, info, tuple(array.shape))
            if err:
                raise invalid_argument(err)

    def output_aliases(self, signature_name: str, output_filter=()) -> list[str]:
        """Output aliases to return: all of them, or the filter (validated as TF Serving does)."""
        sig = self.signature(signature_name)
        if not output_filter:
            return sorted(sig.outputs)
        seen = []
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs "
                    f"expected to be in the set {{{','.join(sorted(sig.outputs))}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen

    def run(self, signature_name: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls the signature on validated inputs.

        Args:
          signature_name: "" for serving_default.
          arrays: alias -> ndarray (bytes objects for DT_STRING), already passed ``check_inputs``.
        Returns:
          alias -> ndarray for every output of the signature.
        Raises:
          ServingError with the code of the TensorFlow error (e.g. INVALID_ARGUMENT when
          tf.io.decode_image rejects the bytes).
        """
        sig = self.signature(signature_name)
        fn = self._functions[signature_name or DEFAULT_SIGNATURE]
        feeds = {
            alias: tf.constant(array, dtype=tf.dtypes.as_dtype(sig.inputs[alias].dtype))
            for alias, array in arrays.items()
        }
        try:
            outputs = fn(**feeds)
        except tf.errors.OpError as e:
            raise ServingError(
                grpc_code_from_value(e.error_code), _clean_op_message(e.message)
            ) from e
        except (TypeError, ValueError) as e:
            raise invalid_argument(str(e)) from e
        return {k: v.numpy() for k, v in outputs.items()}

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` (PredictionLog TFRecords) as TF
        Serving
        does before marking a version available.

        Returns:
          number of predict records replayed (0 when there is no warmup file).
        Raises:
          ValueError: when a record is not a PredictLog or its request fails.
        """
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        count = 0
        for raw in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
            entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                raise ValueError(
                    f"{path}: warmup record {count} is {entry.WhichOneof('log_type')}, "
                    "only predict_log is supported"
                )
            request = entry.predict_log.request
            arrays = {k: tensor_proto_to_array(k, v) for k, v in request.inputs.items()}
            try:
                self.check_inputs(request.model_spec.signature_name, arrays)
                self.run(request.model_spec.signature_name, arrays)
            except ServingError as e:
                raise ValueError(f"{path}: warmup record {count} failed: {e}") from e
            count += 1
        return count


def _clean_op_message(message: str) -> str:
    """The op's own message without eager-mode boilerplate ("Graph execution error:", "Detected at
    node ...", "<stack traces unavailable>"), which says nothing to a remote client."""
    lines = [
        ln
        for ln in message.splitlines()
        if ln.strip()
        and not ln.startswith(("Graph execution error", "Detected at node"))
        and ln.strip() != "<stack traces unavailable>"
    ]
    return "\n".join(lines) or message


def _numpy_to_tf_dtype(array: np.ndarray):
    if array.dtype == object or array.dtype.kind in ("S", "U"):
        return tf.string
    try:
        return tf.dtypes.as_dtype(array.dtype)
    except TypeError:
        return None


# What one DT_STRING element costs once built, beyond its bytes: a NumPy object pointer (8) and
# the tf.string (tstring, 24) it becomes.
STRING_ELEMENT_OVERHEAD_BYTES = 32


def declared_tensor_bytes(alias: str, proto) -> int:
    """Bytes a TensorProto would occupy once built, from its shape and dtype alone.

    TensorFlow (and so ``tf.make_ndarray``) fills a tensor whose value list is shorter than its
    shape with the last value, so a few bytes of proto can declare gigabytes. Numbers: element
    count x item size. Strings: element count x STRING_ELEMENT_OVERHEAD_BYTES + the string bytes.

    Raises:
      ServingError INVALID_ARGUMENT for a negative dimension, an unknown rank or dtype.
    """
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {alias} (shape of unknown rank)")
    count = 1
    for d in shape.dim:
        if d.size < 0:
            raise invalid_argument(f"tensor parsing error: {alias} (negative dimension {d.size})")
        count *= int(d.size)
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError as e:
        raise invalid_argument(f"tensor parsing error: {alias} (dtype {proto.dtype}: {e})") from e
    if dtype == tf.string:
        return count * STRING_ELEMENT_OVERHEAD_BYTES + sum(len(v) for v in proto.string_val)
    if dtype.size == 0 or dtype == tf.resource or dtype == tf.variant:
        raise invalid_argument(f"tensor parsing error: {alias} (unsupported dtype {dtype.name})")
    return count * dtype.size


def tensor_proto_to_array(alias: str, proto, max_bytes: int | None = None) -> np.ndarray:
    """TensorProto -> ndarray; INVALID_ARGUMENT "tensor parsing error" when malformed.

    The same code and wording as TF Serving.

    Args:
      alias: the input's name (for messages).
      proto: the TensorProto.
      max_bytes: the most bytes the built array may take (``declared_tensor_bytes``), checked
        before anything is allocated; None for no limit.
    """
    if max_bytes is not None:
        size = declared_tensor_bytes(alias, proto)
        if size > max_bytes:
            dims = [int(d.size) for d in proto.tensor_shape.dim]
            raise invalid_argument(
                f"input '{alias}' declares shape {dims} of "
                f"{tf.dtypes.as_dtype(proto.dtype).name}, {size} bytes once built, more than "
                f"the server's limit of {max_bytes} bytes (--max_request_bytes)"
            )
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the client's malformed tensor
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({e})"
        ) from e
