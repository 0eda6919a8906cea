"""TF Serving's REST API (the subset a detector needs) on the standard library's HTTP server.

Routes (``<spec>`` is ``<name>``, ``<name>/versions/<v>`` or ``<name>/labels/<l>``):
  POST /v1/models/<spec>:predict   {"signature_name"?, "instances" | "inputs"}
  GET  /v1/models/<spec>           GetModelStatusResponse as JSON
  GET  /v1/models/<spec>/metadata  GetModelMetadataResponse as JSON
  GET  <prometheus path>           metrics, when monitoring is enabled

JSON tensors follow TF Serving's encoding: binary strings travel as {"b64": "..."}; the row
("instances") request format answers {"predictions": [...]} and the columnar ("inputs") format
answers {"outputs": ...}; a string output whose alias ends in "_bytes" is sent as {"b64": ...},
other strings as UTF-8 text. Errors answer {"error": "..."} with TF Serving's HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import json
import logging
import re
import socket
import threading
import time
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from dnet_tf.serving.core import SIGNATURE_DEF_FIELD, ServingCore
from dnet_tf.serving.errors import ServingError, invalid_argument
from dnet_tf.serving.servable import DEFAULT_SIGNATURE
from dnet_tf.serving.versions import parse_version

log = logging.getLogger(__name__)

# An over-limit request body up to this size is read and dropped so the client gets the 413.
_DRAIN_LIMIT = 64 * 1024 * 1024
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<method>[a-zA-Z]+))?/?$"
)


# ---------------------------------------------------------------------- JSON <-> arrays


def _decode_value(value: Any) -> Any:
    """Replaces {"b64": s} by bytes and str by UTF-8 bytes, recursively."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise invalid_argument(f"Unable to base64 decode: {e}") from e
        raise invalid_argument(
            f'JSON object in a tensor value must be {{"b64": ...}}, got keys {sorted(value)}'
        )
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _to_array(alias: str, value: Any, dtype: tf.DType) -> np.ndarray:
    value = _decode_value(value)
    try:
        if dtype == tf.string:
            array = np.array(value, dtype=object)
            if array.size and not all(isinstance(v, bytes) for v in array.reshape(-1)):
                raise ValueError('expected strings or {"b64": ...} values')
            return array
        if any(isinstance(v, bytes) for v in np.asarray(value, dtype=object).reshape(-1)):
            raise ValueError(f"expected numbers for a {dtype.name} input, got strings")
        return np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise invalid_argument(f"Failed to process input '{alias}' as {dtype.name}: {e}") from e


def _is_named(obj: Any) -> bool:
    """A JSON object naming inputs (as opposed to one {"b64": ...} value)."""
    return isinstance(obj, dict) and set(obj) != {"b64"}


def _check_aliases(given, aliases) -> None:
    for alias in given:
        if alias not in aliases:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(aliases)}}}."
            )
    if set(given) != set(aliases):
        raise invalid_argument(
            f"input size does not match signature: {len(given)}!={len(aliases)} "
            f"len([{','.join(sorted(given))}]) != len([{','.join(aliases)}])"
        )


def parse_predict_body(
    body: Any, input_dtypes: dict[str, tf.DType]
) -> tuple[dict[str, np.ndarray], str]:
    """Request JSON -> (alias -> ndarray, format) with format "row" or "columnar".

    Args:
      body: the decoded JSON object.
      input_dtypes: alias -> dtype of the signature's inputs (JSON is typed by the signature).
    Raises:
      ServingError INVALID_ARGUMENT with TF Serving's wording for a malformed body.
    """
    if not isinstance(body, dict):
        raise invalid_argument("Request body must be a JSON object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise invalid_argument(
            "Missing 'inputs' or 'instances' key"
            if not has_instances
            else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
        )
    aliases = sorted(input_dtypes)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("'instances' must be a list")
        if instances and all(_is_named(x) for x in instances):
            for x in instances:
                _check_aliases(list(x), aliases)
            columns = {alias: [x[alias] for x in instances] for alias in aliases}
        else:
            if len(aliases) != 1:
                raise invalid_argument(f"instances must be objects naming the inputs {aliases}")
            columns = {aliases[0]: instances}
        fmt = "row"
    else:
        inputs = body["inputs"]
        if _is_named(inputs):
            _check_aliases(list(inputs), aliases)
            columns = inputs
        else:
            if len(aliases) != 1:
                raise invalid_argument(f"'inputs' must be an object naming the inputs {aliases}")
            columns = {aliases[0]: inputs}
        fmt = "columnar"
    return {a: _to_array(a, v, input_dtypes[a]) for a, v in columns.items()}, fmt


def _encode_value(alias: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = alias.endswith("_bytes")

        def enc(b):
            b = bytes(b)
            return (
                {"b64": base64.b64encode(b).decode("ascii")}
                if as_b64
                else b.decode("utf-8", errors="replace")
            )

        flat = [enc(b) for b in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


def encode_predict_outputs(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """Outputs -> TF Serving's response JSON object for the request format."""
    if fmt == "columnar":
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return {"outputs": _encode_value(alias, value)}
        return {"outputs": {k: _encode_value(k, v) for k, v in outputs.items()}}
    batch = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    sizes = set(batch.values())
    if len(sizes) != 1 or None in sizes:
        raise invalid_argument(
            f"Tensors have inconsistent batch sizes for the row format: {batch}; "
            "use the columnar ('inputs') format"
        )
    n = sizes.pop()
    encoded = {k: _encode_value(k, v) for k, v in outputs.items()}
    if len(encoded) == 1:
        return {"predictions": next(iter(encoded.values()))}
    return {"predictions": [{k: encoded[k][i] for k in encoded} for i in range(n)]}


def _message_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# ---------------------------------------------------------------------- HTTP


class _Connection:
    """Bookkeeping of one REST connection: reading its request until ``deadline``, then busy."""

    __slots__ = ("busy", "deadline")

    def __init__(self, deadline: float):
        self.busy = False
        self.deadline = deadline


class RestServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with bounded connections, read deadlines and a bounded ``stop``.

    Each connection must deliver its whole request (headers and body) within ``read_timeout_s``
    of being accepted, else it is closed: a slow or idle client holds a thread for at most that
    long. At most ``max_connections`` are open at once; past that a new connection is answered 503
    (UNAVAILABLE, which clients retry) and closed. ``stop(grace)`` closes the connections still
    reading at once (they hold no request yet), gives the requests being run up to ``grace``
    seconds, then closes whatever is left: it returns within grace + about a second whatever the
    clients do.
    """

    daemon_threads = True  # a stuck handler never keeps the process alive; stop() bounds the wait
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address,
        core: ServingCore,
        max_request_bytes: int,
        metrics_path: str | None,
        max_connections: int = 64,
        read_timeout_s: float = 30.0,
    ):
        self.core = core
        self.max_request_bytes = int(max_request_bytes)
        self.metrics_path = metrics_path
        self.max_connections = int(max_connections)
        self.read_timeout_s = float(read_timeout_s)
        self._conns: dict[Any, _Connection] = {}
        self._conns_lock = threading.Lock()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(address, RestHandler)

    # -- connections

    def process_request(self, request, client_address):
        with self._conns_lock:
            full = len(self._conns) >= self.max_connections
            if not full:
                self._conns[request] = _Connection(time.monotonic() + self.read_timeout_s)
        if full:
            self._refuse(request)
            return
        t = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self._handler_threads = [x for x in self._handler_threads if x.is_alive()] + [t]
        t.start()

    def _refuse(self, request) -> None:
        body = json.dumps({"error": "too many REST connections; retry later"}).encode()
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def mark_busy(self, request) -> None:
        """The request has been read whole: from now on it is a request in flight."""
        with self._conns_lock:
            conn = self._conns.get(request)
            if conn is not None:
                conn.busy = True

    def open_connections(self) -> tuple[int, int]:
        """(connections reading a request, connections running one)."""
        with self._conns_lock:
            busy = sum(c.busy for c in self._conns.values())
            return len(self._conns) - busy, busy

    def _close_sockets(self, only_reading: bool, now: float | None = None) -> None:
        with self._conns_lock:
            picked = [
                sock
                for sock, c in self._conns.items()
                if not (only_reading and c.busy) and (now is None or c.deadline <= now)
            ]
        for sock in picked:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the handler's blocked read or write returns
            except OSError:
                pass

    def service_actions(self):
        """Called by serve_forever every poll interval: closes connections past their deadline."""
        self._close_sockets(only_reading=True, now=time.monotonic())

    def handle_error(self, request, client_address):
        # A client gone mid-answer, or a connection closed at its deadline or at shutdown.
        log.debug("REST connection from %s ended with an error", client_address, exc_info=True)

    def stop(self, grace: float) -> None:
        """Stops accepting, closes idle and half-sent connections, waits up to ``grace`` s for the
        requests in flight, then closes the rest."""
        self.shutdown()  # serve_forever leaves its loop: no new connections
        self.socket.close()
        self._close_sockets(only_reading=True)
        deadline = time.monotonic() + max(0.0, grace)
        while self.open_connections()[1] and time.monotonic() < deadline:
            time.sleep(0.02)
        self._close_sockets(only_reading=False)
        end = time.monotonic() + 0.5
        for t in list(self._handler_threads):
            t.join(max(0.0, end - time.monotonic()))


class RestHandler(http.server.BaseHTTPRequestHandler):
    server: RestServer
    server_version = "dnet-local-model-server"
    protocol_version = (
        "HTTP/1.0"  # one request per connection: shutdown never waits on idle keep-alives
    )

    def setup(self):
        self.timeout = (
            self.server.read_timeout_s
        )  # per socket operation; the total: service_actions
        super().setup()

    def log_message(self, fmt, *args):  # route access logs to logging, at debug level
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ServingError) -> None:
        self._send_json(err.http_status, {"error": err.message})

    def _route(self, method: str) -> None:
        core = self.server.core
        path = self.path.split("?", 1)[0]
        if method == "GET":
            self.server.mark_busy(self.connection)
        if method == "GET" and self.server.metrics_path and path == self.server.metrics_path:
            body = core.metrics.render().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        m = _PATH.match(path)
        ok_shape = m is not None and (
            (method == "POST" and m["method"] == "predict" and not m["metadata"])
            or (method == "GET" and not m["method"])
        )
        if not ok_shape:
            self._send_error(invalid_argument(f"Malformed request: {method} {path}"))
            return
        spec = model_pb2.ModelSpec(name=m["name"])
        if m["version"]:
            if parse_version(m["version"]) is None:
                self._send_error(
                    invalid_argument(f"Malformed request: version {m['version']} is not an int64")
                )
                return
            spec.version.value = int(m["version"])
        elif m["label"]:
            spec.version_label = m["label"]
        api = (
            "predict"
            if method == "POST"
            else ("GetModelMetadata" if m["metadata"] else "GetModelStatus")
        )
        metrics = core.metrics
        metrics.request_started("REST")
        t0 = time.perf_counter()
        status = "OK"
        try:
            if api == "predict":
                payload = self._predict(spec)
            elif api == "GetModelMetadata":
                req = get_model_metadata_pb2.GetModelMetadataRequest(
                    metadata_field=[SIGNATURE_DEF_FIELD]
                )
                req.model_spec.CopyFrom(spec)
                payload = _message_json(core.model_metadata(req))
            else:
                req = get_model_status_pb2.GetModelStatusRequest()
                req.model_spec.CopyFrom(spec)
                payload = _message_json(core.model_status(req))
            self._send_json(200, payload)
        except ServingError as e:
            status = e.code.name
            self._send_error(e)
        except Exception as e:  # noqa: BLE001
            log.exception("REST %s failed", api)
            status = "INTERNAL"
            self._send_error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))
        finally:
            metrics.request_finished("REST", spec.name, api, status, time.perf_counter() - t0)

    def _predict(self, spec) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, "POST body needs a Content-Length header"
            )
        length = int(length)
        if length > self.server.max_request_bytes:
            self._discard_body(length)
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Request body of {length} bytes exceeds the limit of "
                f"{self.server.max_request_bytes} bytes",
                http_status=413,
            )
        raw = self.rfile.read(length)
        if len(raw) != length:
            self.close_connection = True
            raise invalid_argument(
                f"POST body ended after {len(raw)} of its {length} bytes "
                f"(or took longer than {self.server.read_timeout_s:g} s to arrive)"
            )
        self.server.mark_busy(self.connection)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise invalid_argument(f"JSON Parse error: {e}") from e
        signature_name = DEFAULT_SIGNATURE
        if isinstance(body, dict) and "signature_name" in body:
            if not isinstance(body["signature_name"], str):
                raise invalid_argument("'signature_name' key must be a string value.")
            signature_name = body["signature_name"] or DEFAULT_SIGNATURE
        core = self.server.core
        servable = core.resolve(spec)
        sig = servable.signature(signature_name)
        dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in sig.inputs.items()}
        arrays, fmt = parse_predict_body(body, dtypes)
        outputs = core.run(servable, signature_name, arrays)
        return encode_predict_outputs(outputs, fmt)

    def _discard_body(self, length: int) -> None:
        """Reads and drops an over-limit body (up to _DRAIN_LIMIT bytes), then closes.

        Answering before the client has finished sending makes its next write fail (a broken
        pipe, a reset) and it never reads the 413. Reading a modestly oversized body lets the
        answer through; a body past _DRAIN_LIMIT is not worth reading, the connection just closes.
        """
        self.close_connection = True
        if length > _DRAIN_LIMIT:
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def do_GET(self):  # noqa: N802
        self._route("GET")

    def do_POST(self):  # noqa: N802
        self._route("POST")
