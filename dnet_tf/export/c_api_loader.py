"""Loads an exported SavedModel the way TF Serving does, through TensorFlow's C API, with no
TensorFlow Python layer in the process.

TF Serving loads a model with the C++ ``tensorflow::LoadSavedModel`` and then replays
``assets.extra/tf_serving_warmup_requests`` before it marks the version available; a record that
fails fails the load. The pip wheel's ``libtensorflow_cc.so.2`` exports the C API
(``TF_LoadSessionFromSavedModel``, ``TF_SessionRun``, ``TF_StringInit``/``TF_StringCopy``), which
calls that same C++ loader, so driving it with ctypes checks what the TF1 Python session loader
cannot: that the export loads and answers in the C++ runtime TF Serving is built on, and in the
runtime of any older TensorFlow release whose libraries are given (``--tf_lib_dir``).

Nothing here imports TensorFlow's Python package: the shared libraries are found from
``importlib.util.find_spec("tensorflow")`` (which locates the package without running it), and the
protocol buffers (MetaGraphDef, PredictionLog, TensorProto) are the generated ``*_pb2`` modules,
imported under a stub ``tensorflow`` package so that ``tensorflow/__init__.py`` never runs.

    python -m dnet_tf.export.c_api_loader --model models/dnet/1 --check_bad_bytes a.jpg b.jpg

prints one JSON object: the library's TF_Version, the warm-up records replayed, the detections of
the images (``dnet_tf.core.detections`` layout) and, with --check_bad_bytes, the status code
of undecodable bytes (3, INVALID_ARGUMENT, as TF Serving answers).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pathlib
import struct
import sys
import types
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

WARMUP_FILE = ("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords
DEFAULT_SIGNATURE = "serving_default"
INVALID_ARGUMENT = 3  # TF_Code

# TF_DataType values (tensorflow/c/tf_datatype.h) and their NumPy dtypes; TF_STRING is apart.
TF_STRING = 7
_NUMPY_OF_TF = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
_TF_OF_NUMPY = {np.dtype(v): k for k, v in _NUMPY_OF_TF.items()}
_TF_STRING_SIZE = 24  # sizeof(TF_TString) (tensorflow/core/platform/ctstring_internal.h)


class CApiError(RuntimeError):
    """A TF_Status that is not OK: ``code`` is the TF_Code (3 INVALID_ARGUMENT, 5 NOT_FOUND ...)."""

    def __init__(self, code: int, message: str, what: str):
        super().__init__(f"{what}: TF_Code {code}: {message}")
        self.code = code
        self.message = message


def tensorflow_package_dir() -> pathlib.Path:
    """The installed ``tensorflow`` package directory, found without importing it."""
    loaded = sys.modules.get("tensorflow")
    if getattr(loaded, "__file__", None):  # the real package (its __path__ has more dirs)
        return pathlib.Path(loaded.__file__).parent
    if getattr(loaded, "__path__", None):  # the stub of _import_protos
        return pathlib.Path(list(loaded.__path__)[0])
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no tensorflow package on sys.path (pip install tensorflow)")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _import_protos():
    """(meta_graph_pb2, prediction_log_pb2, types_pb2) without running tensorflow/__init__.py.

    When the real package is not loaded, a stub module named ``tensorflow`` whose __path__ is the
    package directory lets Python import ``tensorflow.core.*`` (empty ``__init__`` files and
    generated protos); ``tensorflow.python`` is blocked so any use of the Python layer fails loudly.
    """
    if "tensorflow" not in sys.modules:
        stub = types.ModuleType("tensorflow")
        stub.__path__ = [str(tensorflow_package_dir())]
        sys.modules["tensorflow"] = stub
        sys.modules["tensorflow.python"] = None  # type: ignore[assignment]
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    return meta_graph_pb2, prediction_log_pb2, types_pb2


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("length", ctypes.c_size_t),
        ("data_deallocator", ctypes.c_void_p),
    ]


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _load_library(lib_dir: pathlib.Path) -> ctypes.CDLL:
    """The library exporting the C API, with libtensorflow_framework.so.2 loaded first, globally
    (the C API library resolves symbols such as TF_AllocateTensor in it).

    From TensorFlow 2.12 on the wheel ships the C API in libtensorflow_cc.so.2; before, in
    python/_pywrap_tensorflow_internal.so (the same C++ code, with the Python bindings beside it,
    which ctypes loads without running them: dlopen calls no module initialiser).
    """
    framework = lib_dir / "libtensorflow_framework.so.2"
    candidates = [
        lib_dir / "libtensorflow_cc.so.2",
        lib_dir / "python" / "_pywrap_tensorflow_internal.so",
    ]
    c_api = next((f for f in candidates if f.is_file()), None)
    if not framework.is_file() or c_api is None:
        raise FileNotFoundError(
            f"{lib_dir}: no libtensorflow_framework.so.2 and libtensorflow_cc.so.2 "
            f"(a tensorflow wheel's package directory?)"
        )
    ctypes.CDLL(str(framework), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(c_api), mode=ctypes.RTLD_GLOBAL)
    p, i, s, c = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
    sigs = {
        "TF_Version": (c, []),
        "TF_NewStatus": (p, []),
        "TF_DeleteStatus": (None, [p]),
        "TF_GetCode": (i, [p]),
        "TF_Message": (c, [p]),
        "TF_NewGraph": (p, []),
        "TF_DeleteGraph": (None, [p]),
        "TF_GraphOperationByName": (p, [p, c]),
        "TF_NewSessionOptions": (p, []),
        "TF_DeleteSessionOptions": (None, [p]),
        "TF_NewBuffer": (p, []),
        "TF_DeleteBuffer": (None, [p]),
        "TF_LoadSessionFromSavedModel": (p, [p, p, c, ctypes.POINTER(c), i, p, p, p]),
        "TF_CloseSession": (None, [p, p]),
        "TF_DeleteSession": (None, [p, p]),
        "TF_SessionRun": (
            None,
            [p, p, p, p, i, p, ctypes.POINTER(p), i, p, i, p, p],
        ),
        "TF_AllocateTensor": (p, [i, ctypes.POINTER(ctypes.c_int64), i, s]),
        "TF_DeleteTensor": (None, [p]),
        "TF_TensorData": (p, [p]),
        "TF_TensorByteSize": (s, [p]),
        "TF_TensorType": (i, [p]),
        "TF_NumDims": (i, [p]),
        "TF_Dim": (ctypes.c_int64, [p, i]),
        "TF_StringInit": (None, [p]),
        "TF_StringCopy": (None, [p, c, s]),
        "TF_StringGetDataPointer": (p, [p]),
        "TF_StringGetSize": (s, [p]),
        "TF_StringDealloc": (None, [p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class CApiSession:
    """A SavedModel loaded by ``TF_LoadSessionFromSavedModel`` (the C++ LoadSavedModel).

    Args:
      export_dir: the SavedModel version directory.
      lib_dir: directory holding libtensorflow_cc.so.2 and libtensorflow_framework.so.2
        (default: the installed tensorflow package's).
      tags: MetaGraph tags; TF Serving loads ``serve``.
    Raises:
      CApiError: when the C++ loader refuses the model (code and message as TF gives them).
    """

    def __init__(self, export_dir, lib_dir=None, tags: Sequence[str] = ("serve",)):
        meta_graph_pb2, self._prediction_log_pb2, _ = _import_protos()
        self.export_dir = pathlib.Path(export_dir)
        self._lib = _load_library(pathlib.Path(lib_dir) if lib_dir else tensorflow_package_dir())
        self.tf_version = self._lib.TF_Version().decode()
        lib = self._lib
        self._graph = lib.TF_NewGraph()
        opts = lib.TF_NewSessionOptions()
        meta = lib.TF_NewBuffer()
        ctags = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
        try:
            self._session = self._call(
                f"TF_LoadSessionFromSavedModel({self.export_dir})",
                lib.TF_LoadSessionFromSavedModel,
                opts,
                None,
                str(self.export_dir).encode(),
                ctags,
                len(tags),
                self._graph,
                meta,
            )
            buf = _Buffer.from_address(meta)
            self.meta_graph = meta_graph_pb2.MetaGraphDef.FromString(
                ctypes.string_at(buf.data, buf.length)
            )
        finally:
            lib.TF_DeleteBuffer(meta)
            lib.TF_DeleteSessionOptions(opts)

    def _call(self, what: str, fn, *args):
        status = self._lib.TF_NewStatus()
        try:
            result = fn(*args, status)
            code = self._lib.TF_GetCode(status)
            if code != 0:
                raise CApiError(code, self._lib.TF_Message(status).decode(errors="replace"), what)
            return result
        finally:
            self._lib.TF_DeleteStatus(status)

    @property
    def signatures(self):
        """name -> SignatureDef, as the loader returned them in the MetaGraphDef."""
        return self.meta_graph.signature_def

    def _endpoint(self, tensor_name: str) -> _Output:
        op, _, index = tensor_name.partition(":")
        oper = self._lib.TF_GraphOperationByName(self._graph, op.encode())
        if not oper:
            raise KeyError(f"graph has no operation {op!r} (signature tensor {tensor_name!r})")
        return _Output(oper, int(index or 0))

    def _new_tensor(self, value: np.ndarray) -> int:
        lib = self._lib
        dims = (ctypes.c_int64 * max(value.ndim, 1))(*value.shape)
        if value.dtype.kind in "SOU":
            flat = [v if isinstance(v, bytes) else str(v).encode() for v in value.reshape(-1)]
            t = lib.TF_AllocateTensor(TF_STRING, dims, value.ndim, _TF_STRING_SIZE * len(flat))
            base = lib.TF_TensorData(t)
            for k, data in enumerate(flat):
                lib.TF_StringInit(base + k * _TF_STRING_SIZE)
                lib.TF_StringCopy(base + k * _TF_STRING_SIZE, data, len(data))
            return t
        if value.dtype not in _TF_OF_NUMPY:
            raise TypeError(f"no TF_DataType for NumPy dtype {value.dtype}")
        value = np.ascontiguousarray(value)
        t = lib.TF_AllocateTensor(_TF_OF_NUMPY[value.dtype], dims, value.ndim, value.nbytes)
        ctypes.memmove(lib.TF_TensorData(t), value.ctypes.data, value.nbytes)
        return t

    def _free_input(self, t: int, value: np.ndarray) -> None:
        # A tensor allocated by TF_AllocateTensor does not destroy its TF_TString elements.
        if value.dtype.kind in "SOU":
            base = self._lib.TF_TensorData(t)
            for k in range(value.size):
                self._lib.TF_StringDealloc(base + k * _TF_STRING_SIZE)
        self._lib.TF_DeleteTensor(t)

    def _to_numpy(self, t: int) -> np.ndarray:
        lib = self._lib
        shape = tuple(lib.TF_Dim(t, d) for d in range(lib.TF_NumDims(t)))
        dtype = lib.TF_TensorType(t)
        base = lib.TF_TensorData(t)
        if dtype == TF_STRING:
            n = int(np.prod(shape, dtype=np.int64))
            items = [
                ctypes.string_at(
                    lib.TF_StringGetDataPointer(base + k * _TF_STRING_SIZE),
                    lib.TF_StringGetSize(base + k * _TF_STRING_SIZE),
                )
                for k in range(n)
            ]
            return np.array(items, dtype=object).reshape(shape)
        if dtype not in _NUMPY_OF_TF:
            raise TypeError(f"output TF_DataType {dtype} has no NumPy dtype here")
        raw = ctypes.string_at(base, lib.TF_TensorByteSize(t))
        return np.frombuffer(raw, _NUMPY_OF_TF[dtype]).reshape(shape).copy()

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs one signature as TF Serving's Predict does: the request's input keys must be
        exactly the signature's, and all outputs are returned unless ``output_filter`` names some.

        Raises:
          CApiError: from TF_SessionRun (bad image bytes: code 3, INVALID_ARGUMENT).
          ValueError: unknown signature, input keys that do not match it, unknown output names.
        """
        if signature_name not in self.signatures:
            raise ValueError(
                f"signature {signature_name!r} not in the model: {sorted(self.signatures)}"
            )
        sig = self.signatures[signature_name]
        if set(inputs) != set(sig.inputs):
            raise ValueError(
                f"signature {signature_name!r} takes inputs {sorted(sig.inputs)}, "
                f"request has {sorted(inputs)}"
            )
        names = list(output_filter) or sorted(sig.outputs)
        unknown = [n for n in names if n not in sig.outputs]
        if unknown:
            raise ValueError(f"signature {signature_name!r} has no outputs {unknown}")
        keys = sorted(inputs)
        values = [np.asarray(inputs[k]) for k in keys]
        feeds = (_Output * len(keys))(*[self._endpoint(sig.inputs[k].name) for k in keys])
        fetches = (_Output * len(names))(*[self._endpoint(sig.outputs[n].name) for n in names])
        in_tensors = [self._new_tensor(v) for v in values]
        out_tensors = (ctypes.c_void_p * len(names))()
        try:
            self._call(
                f"TF_SessionRun({signature_name})",
                self._lib.TF_SessionRun,
                self._session,
                None,
                feeds,
                (ctypes.c_void_p * len(keys))(*in_tensors),
                len(keys),
                fetches,
                out_tensors,
                len(names),
                None,
                0,
                None,
            )
            return {n: self._to_numpy(out_tensors[j]) for j, n in enumerate(names)}
        finally:
            for t, v in zip(in_tensors, values):
                self._free_input(t, v)
            for t in out_tensors:
                if t:
                    self._lib.TF_DeleteTensor(t)

    def replay_warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` as TF Serving does at load: each
        record a PredictionLog, each predict_log's request run once (num_request_iterations 1),
        at most 1000 records; returns the number replayed (0 when the file is absent).

        Raises:
          ValueError: a corrupt record or unparsable PredictionLog, too many records, or a log
            type other than predict (TF Serving would run classify/regress/multi-inference; this
            export writes none, so they are refused rather than skipped).
          CApiError: a request the model fails (TF Serving then fails the load).
        """
        path = self.export_dir.joinpath(*WARMUP_FILE)
        if not path.exists():
            return 0
        count = 0
        for record in read_tfrecords(path):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records")
            log = self._prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
                raise ValueError(f"{path}: record {count} is not a PredictionLog: {e}") from e
            kind = log.WhichOneof("log_type")
            if kind != "predict_log":
                raise ValueError(f"{path}: record {count} is a {kind}, only predict_log is run")
            req = log.predict_log.request
            inputs = {k: tensor_proto_to_numpy(v) for k, v in req.inputs.items()}
            self.run(
                inputs,
                req.model_spec.signature_name or DEFAULT_SIGNATURE,
                list(req.output_filter),
            )
        return count

    def close(self) -> None:
        if getattr(self, "_session", None):
            self._call("TF_CloseSession", self._lib.TF_CloseSession, self._session)
            self._call("TF_DeleteSession", self._lib.TF_DeleteSession, self._session)
            self._session = None
            self._lib.TF_DeleteGraph(self._graph)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tensor_proto_to_numpy(proto) -> np.ndarray:
    """A TensorProto as an array (the subset of TensorProto a PredictRequest uses)."""
    _, _, dt = _import_protos()
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.dtype == dt.DT_STRING:
        values = np.array(list(proto.string_val), dtype=object)
    else:
        np_dtype = _NUMPY_OF_TF.get(proto.dtype)
        if np_dtype is None:
            raise TypeError(f"TensorProto dtype {dt.DataType.Name(proto.dtype)} not handled")
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, np_dtype)
        elif np_dtype is np.float16:  # half_val holds the 16-bit patterns as ints
            values = np.array(list(proto.half_val), np.uint16).view(np.float16)
        else:
            field = {
                np.float32: "float_val",
                np.float64: "double_val",
                np.int64: "int64_val",
                np.bool_: "bool_val",
            }.get(np_dtype, "int_val")
            values = np.array(list(getattr(proto, field)), np_dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if values.size == 1 and n > 1:  # TensorProto repeats a lone value to fill the shape
        values = np.repeat(values, n)
    return values.reshape(shape)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated right by 15 and offset by 0xa282ead8."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: str | os.PathLike) -> Iterator[bytes]:
    """The records of an uncompressed TFRecord file, both checksums verified.

    Framing per record: uint64 length (little-endian), uint32 masked CRC-32C of those 8 bytes,
    ``length`` bytes of data, uint32 masked CRC-32C of the data.

    Raises:
      ValueError: naming the file, record and byte offset, for a truncated record or a checksum
        mismatch (TF Serving's reader answers DATA_LOSS there).
    """
    data = pathlib.Path(path).read_bytes()
    pos, index = 0, 0
    while pos < len(data):
        where = f"{path}: record {index} at byte {pos}"
        if pos + 12 > len(data):
            raise ValueError(f"{where}: truncated header ({len(data) - pos} bytes left)")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if masked_crc32c(header) != header_crc:
            raise ValueError(f"{where}: length checksum mismatch")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            raise ValueError(f"{where}: truncated data ({length} bytes declared)")
        payload = data[start:end]
        (data_crc,) = struct.unpack("<I", data[end : end + 4])
        if masked_crc32c(payload) != data_crc:
            raise ValueError(f"{where}: data checksum mismatch")
        yield payload
        pos, index = end + 4, index + 1


# A JPEG start-of-image marker followed by garbage: long enough to be taken for a JPEG.
BAD_BYTES = b"\xff\xd8\xff\xe0" + bytes(range(60))


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m dnet_tf.export.c_api_loader", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, help="SavedModel version directory")
    parser.add_argument("--tf_lib_dir", help="dir with libtensorflow_cc.so.2 (default: installed)")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE)
    parser.add_argument("--save_outputs", help="write the raw output arrays to this .npz")
    parser.add_argument(
        "--check_bad_bytes",
        action="store_true",
        help="also send undecodable bytes and report the status code (expected 3)",
    )
    parser.add_argument("images", nargs="*", help="encoded image files, run as one batch")
    args = parser.parse_args(argv)

    from dnet_tf.core import contracts
    from dnet_tf.core.detections import Detections
    from dnet_tf.serving.detections import image_size

    report: dict = {}
    with CApiSession(args.model, args.tf_lib_dir) as sess:
        report["tf_version"] = sess.tf_version
        report["warmup_records"] = sess.replay_warmup()
        if args.images:
            blobs = [pathlib.Path(p).read_bytes() for p in args.images]
            out = sess.run({"images": np.array(blobs, dtype=object)}, args.signature)
            if args.save_outputs:
                np.savez(args.save_outputs, **out)
            version_dir = pathlib.Path(args.model).resolve()
            version = contracts.parse_version(version_dir.name)
            sizes = [image_size(b) for b in blobs]
            results = Detections.batch_from_outputs(
                out, sizes, args.images, version_dir.parent.name, version
            )
            report["results"] = [r.to_dict() for r in results]
        if args.check_bad_bytes:
            try:
                sess.run({"images": np.array([BAD_BYTES], dtype=object)}, args.signature)
                report["bad_bytes_code"] = 0
            except CApiError as e:
                report["bad_bytes_code"] = e.code
                report["bad_bytes_message"] = e.message.splitlines()[0][:300]
    report["tensorflow_python_imported"] = any(
        m is not None and (n == "tensorflow.python" or n.startswith("tensorflow.python."))
        for n, m in list(sys.modules.items())
    )
    print(json.dumps(report))
    ok = not args.check_bad_bytes or report["bad_bytes_code"] == INVALID_ARGUMENT
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
