"""Clients for a TF Serving endpoint (or the local server) serving the detector.

``DetectorClient`` talks gRPC through tensorflow-serving-api's stubs; ``RestDetectorClient`` uses
the REST ``:predict`` call with base64 images ({"b64": ...}). Both:
  * address a model by name and optionally a version or a version label,
  * set a deadline on every call (``timeout_s``),
  * retry a call that failed with UNAVAILABLE a bounded number of times with exponential backoff
    — and nothing else: INVALID_ARGUMENT, NOT_FOUND, ... are the caller's to fix and are raised at
    once. gRPC: the status UNAVAILABLE (the code gRPC's retry policies and TF Serving's
    documentation name as retryable). REST: HTTP 503 (TF Serving's UNAVAILABLE) and a connection
    that failed before the request went out (refused, unreachable, reset while sending); a
    connection lost after the request was sent, while waiting for or reading the answer, is not
    retried, because the server may already have run it — the rule of HTTP clients for
    non-idempotent requests (RFC 9110 section 9.2.2; urllib3 retries a POST only on connect
    errors). It raises UNAVAILABLE marked ``retryable = False``,
  * return ``Detections`` with pixel boxes (image sizes read from the bytes with Pillow).

    with DetectorClient("localhost:8500", "dnet") as client:
        client.check_signature()
        for result in client.detect(["street.jpg"]):
            print(result.to_dict())
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import os
import pathlib
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from dnet_tf.core import contracts
from dnet_tf.core.detections import Detections
from dnet_tf.serving.detections import image_size

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # gRPC's 4 MiB default is too small for large images
DEFAULT_SIGNATURE = contracts.SERVING_DEFAULT
IMAGE_INPUT = contracts.INPUT_IMAGES


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for UNAVAILABLE.

    Attempt k (k = 1, 2, ...) that fails waits min(initial * multiplier^(k-1), max) seconds,
    scaled by a random factor in [1 - jitter, 1], before attempt k + 1; at most max_attempts
    attempts in all (1 = no retry).
    """

    max_attempts: int = 4  # >= 1
    initial_backoff_s: float = 0.1  # > 0
    max_backoff_s: float = 2.0  # >= initial_backoff_s
    multiplier: float = 2.0  # >= 1
    jitter: float = 0.2  # [0, 1): spreads retries of many clients apart

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("RetryPolicy: need 0 < initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy: need multiplier >= 1 and 0 <= jitter < 1")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(self.initial_backoff_s * self.multiplier ** (attempt - 1), self.max_backoff_s)
        return base * (1.0 - self.jitter * (rng or random).random())


class ServingCallError(RuntimeError):
    """A failed call, with the gRPC status code (REST codes are mapped to their gRPC equivalent).

    Attributes: code (grpc.StatusCode), details (str), attempts (calls made), retryable (the
    client may send the call again: UNAVAILABLE, except after the request has gone out over REST).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        attempts: int = 1,
        retryable: bool | None = None,
    ):
        super().__init__(
            f"{code.name}: {details}" + (f" (after {attempts} attempts)" if attempts > 1 else "")
        )
        self.code = code
        self.details = details
        self.attempts = attempts
        self.retryable = code == grpc.StatusCode.UNAVAILABLE if retryable is None else retryable


def is_retryable(error: Exception) -> bool:
    """The retry rule of both clients (module docstring)."""
    return isinstance(error, ServingCallError) and error.retryable


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    is_retryable: Callable[[Exception], bool],
    sleep: Callable[[float], None] = time.sleep,
    on_retry=None,
) -> tuple[T, int]:
    """Calls ``fn`` until it succeeds, raises a non-retryable error, or attempts run out.

    Returns:
      (result, attempts made).
    Raises:
      the last exception, with ``attempts`` set on it when it is a ServingCallError.
    """
    attempt = 1
    while True:
        try:
            return fn(), attempt
        except Exception as e:  # noqa: BLE001 - re-raised below unless retryable
            if not is_retryable(e) or attempt >= policy.max_attempts:
                if isinstance(e, ServingCallError):
                    e.attempts = attempt
                raise
            delay = policy.backoff(attempt)
            if on_retry:
                on_retry(attempt, delay, e)
            log.info("attempt %d failed (%s); retrying in %.2f s", attempt, e, delay)
            sleep(delay)
            attempt += 1


def _read_image(image) -> tuple[bytes, str]:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "<bytes>"
    path = pathlib.Path(image)
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _prepare(images: Sequence, names: Sequence[str] | None):
    if isinstance(images, (bytes, bytearray, str, os.PathLike)):
        raise TypeError("images must be a sequence of paths or encoded-image bytes")
    datas, sources = [], []
    for i, image in enumerate(images):
        data, source = _read_image(image)
        datas.append(data)
        sources.append(names[i] if names else (source if source != "<bytes>" else f"image_{i}"))
    sizes = [image_size(d) for d in datas]
    return datas, sources, sizes


class _ModelClient:
    """What both clients share: the addressed model, the deadline, retries, ``detect``.

    Args (keyword): version / version_label: pin a version (at most one; default the newest
      served); signature_name: the signature to call (serving_default takes encoded images);
      timeout_s: deadline of every call, seconds (> 0); retry: RetryPolicy for UNAVAILABLE.
    """

    def __init__(
        self,
        model_name: str,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
    ):
        if version is not None and version_label:
            raise ValueError("give a version or a version_label, not both")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.signature_name = signature_name
        self.timeout_s = float(timeout_s)
        self.retry = retry
        self.last_attempts = 0  # calls made by the latest method call (> 1 after retries)

    def _with_retries(self, once):
        """``once()`` under the retry policy; records the attempts made in ``last_attempts``."""
        try:
            result, self.last_attempts = call_with_retry(once, self.retry, is_retryable)
        except ServingCallError as e:
            self.last_attempts = e.attempts
            raise
        return result

    def predict_encoded(self, encoded: Sequence[bytes]):
        raise NotImplementedError

    def get_model_metadata(self) -> dict:
        raise NotImplementedError

    def detect(
        self, images: Sequence, names: Sequence[str] | None = None, min_score: float = 0.0
    ) -> list[Detections]:
        """Detections for each image (paths or encoded bytes), in one Predict call.

        Raises:
          ValueError: an image cannot be read or identified.
          ServingCallError: the call failed.
        """
        datas, sources, sizes = _prepare(images, names)
        outputs, version = self.predict_encoded(datas)
        return Detections.batch_from_outputs(
            outputs, sizes, sources, self.model_name, version, min_score
        )

    def check_signature(self) -> None:
        """Checks the served signature takes ``images`` DT_STRING [None] and returns the contract's
        outputs, so a misconfigured endpoint fails here and not on the first real request.

        Raises:
          ValueError: naming what differs.
        """
        check_signature_def(self.get_model_metadata(), self.signature_name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class DetectorClient(_ModelClient):
    """gRPC client for the detector's SavedModel contract.

    Args:
      target: "host:port" of the gRPC endpoint.
      model_name: the served model's name.
      version / version_label: pin a version (at most one); default = the newest served.
      signature_name: signature to call (serving_default takes encoded images).
      timeout_s: deadline of every call, seconds.
      retry: RetryPolicy for UNAVAILABLE.
      max_message_bytes: max send/receive message size of the channel.
      credentials: grpc.ChannelCredentials for TLS; None = insecure channel.
      lb_policy: gRPC load-balancing policy, e.g. "round_robin" with a "dns:///" target resolving
        to several replicas (docker/k8s/service.yaml, headless Service); None = pick_first.
    """

    def __init__(
        self,
        target: str = "localhost:8500",
        model_name: str = "dnet",
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        credentials=None,
        lb_policy: str | None = None,
        **address,
    ):
        super().__init__(model_name, **address)
        self.target = target
        options = [
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            # reconnect soon after a server comes back, so a retry can succeed
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if lb_policy:
            options.append(("grpc.lb_policy_name", lb_policy))
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _spec(self, spec, signature: bool = True) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.version_label:
            spec.version_label = self.version_label
        if signature:
            spec.signature_name = self.signature_name

    def _call(self, method, request):
        def once():
            try:
                return method(request, timeout=self.timeout_s)
            except grpc.RpcError as e:
                raise ServingCallError(e.code(), e.details() or "") from e

        return self._with_retries(once)

    def predict_encoded(self, encoded: Sequence[bytes]) -> tuple[dict[str, np.ndarray], int | None]:
        """Raw Predict on encoded images.

        Returns:
          (alias -> ndarray outputs, version that answered).
        Raises:
          ServingCallError with the gRPC status code.
        """
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.inputs[IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(list(encoded), dtype=tf.string))
        response = self._call(self._predict.Predict, request)
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        version = (
            response.model_spec.version.value if response.model_spec.HasField("version") else None
        )
        return outputs, version

    def get_model_metadata(self) -> dict:
        """Signature name -> SignatureDef of the addressed version (GetModelMetadata)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, signature=False)
        response = self._call(self._predict.GetModelMetadata, request)
        return _signature_defs(response)

    def get_model_status(self) -> list[dict]:
        """[{"version": int, "state": "AVAILABLE"|..., "error_code": int, "error_message": str}]."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, signature=False)
        response = self._call(self._models.GetModelStatus, request)
        return _status_list(response)


def _signature_defs(response) -> dict:
    """Signature name -> SignatureDef of a GetModelMetadataResponse."""
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(sig_map):
        raise ServingCallError(
            grpc.StatusCode.INTERNAL, "metadata 'signature_def' is not a SignatureDefMap"
        )
    return dict(sig_map.signature_def)


def _status_list(response) -> list[dict]:
    """GetModelStatusResponse -> [{"version", "state", "error_code", "error_message"}] with names
    for the state (AVAILABLE, ...) and the tensorflow.error.Code (OK, ...)."""
    out = []
    for s in response.model_version_status:
        code_enum = s.status.DESCRIPTOR.fields_by_name["error_code"].enum_type
        code = code_enum.values_by_number.get(s.status.error_code)
        out.append(
            {
                "version": int(s.version),
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                "error_code": code.name if code else str(s.status.error_code),
                "error_message": s.status.error_message,
            }
        )
    return out


def check_signature_def(signature_defs: dict, signature_name: str = DEFAULT_SIGNATURE) -> None:
    """Raises ValueError unless ``signature_defs[signature_name]`` follows the detector contract."""
    if signature_name not in signature_defs:
        raise ValueError(
            f"model has no signature {signature_name!r}; it has {sorted(signature_defs)}"
        )
    sig = signature_defs[signature_name]
    if IMAGE_INPUT not in sig.inputs or len(sig.inputs) != 1:
        raise ValueError(
            f"signature {signature_name!r} inputs are {sorted(sig.inputs)}, expected ['images']"
        )
    info = sig.inputs[IMAGE_INPUT]
    if info.dtype != tf.string.as_datatype_enum:
        raise ValueError(
            f"signature {signature_name!r} input 'images' is "
            f"{tf.dtypes.as_dtype(info.dtype).name}, "
            "expected string (encoded images)"
        )
    missing = [k for k in contracts.DETECTION_OUTPUTS if k not in sig.outputs]
    if missing:
        raise ValueError(f"signature {signature_name!r} lacks outputs {missing}")


# ---------------------------------------------------------------------- REST

_GRPC_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class RestDetectorClient(_ModelClient):
    """REST client: ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`` with
    {"signature_name": ..., "instances": [{"b64": ...}, ...]}.

    Args: as DetectorClient, with ``base_url`` ("http://host:8501") in place of the target.
    """

    def __init__(
        self, base_url: str = "http://localhost:8501", model_name: str = "dnet", **address
    ):
        super().__init__(model_name, **address)
        self.base_url = base_url.rstrip("/")

    def _model_url(self) -> str:
        url = f"{self.base_url}/v1/models/{self.model_name}"
        if self.version is not None:
            url += f"/versions/{int(self.version)}"
        elif self.version_label:
            url += f"/labels/{self.version_label}"
        return url

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")

        def once():
            req = urllib.request.Request(
                url,
                data=data,
                method="POST" if data is not None else "GET",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                raw = e.read()
                try:
                    message = json.loads(raw).get("error", raw.decode("utf-8", "replace"))
                except (ValueError, AttributeError):
                    message = raw.decode("utf-8", "replace")
                raise ServingCallError(
                    _GRPC_BY_HTTP.get(e.code, grpc.StatusCode.UNKNOWN), f"HTTP {e.code}: {message}"
                ) from e
            except urllib.error.URLError as e:
                # urllib wraps what fails while connecting and sending: the request never reached
                # the server whole, so sending it again is safe.
                if isinstance(e.reason, (TimeoutError,)) or "timed out" in str(e.reason):
                    raise ServingCallError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e.reason)) from e
                raise ServingCallError(grpc.StatusCode.UNAVAILABLE, str(e.reason)) from e
            except (ConnectionError, OSError, http.client.HTTPException) as e:
                # Raised unwrapped while waiting for or reading the answer: the request was sent.
                if isinstance(e, TimeoutError):
                    raise ServingCallError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from e
                raise ServingCallError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"connection lost after the request was sent ({type(e).__name__}: {e}); "
                    "not retried, the server may have run it",
                    retryable=False,
                ) from e

        return self._with_retries(once)

    def predict_encoded(self, encoded: Sequence[bytes]) -> tuple[dict[str, np.ndarray], None]:
        """Raw :predict on encoded images; (alias -> ndarray, None) — REST does not name the
        version."""
        body = {
            "signature_name": self.signature_name,
            "instances": [{"b64": base64.b64encode(d).decode("ascii")} for d in encoded],
        }
        reply = self._request(f"{self._model_url()}:predict", body)
        rows = reply.get("predictions")
        if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
            raise ServingCallError(
                grpc.StatusCode.INTERNAL, f"unexpected :predict reply keys {sorted(reply)}"
            )
        keys = rows[0].keys() if rows else contracts.DETECTION_OUTPUTS
        outputs = {}
        for k in keys:
            values = [r[k] for r in rows]
            outputs[k] = (
                np.array(values, dtype=object)
                if k == "detection_class_names"
                else np.asarray(values)
            )
        return outputs, None

    def get_model_metadata(self) -> dict:
        """Signature name -> SignatureDef, parsed from the ``/metadata`` JSON."""
        reply = self._request(f"{self._model_url()}/metadata")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        try:
            json_format.ParseDict(reply, response)
        except json_format.ParseError as e:
            raise ServingCallError(
                grpc.StatusCode.INTERNAL, f"unexpected metadata reply: {e}"
            ) from e
        return _signature_defs(response)

    def get_model_status(self) -> list[dict]:
        """As DetectorClient.get_model_status, from the ``GET /v1/models/...`` JSON."""
        response = get_model_status_pb2.GetModelStatusResponse()
        try:
            json_format.ParseDict(self._request(self._model_url()), response)
        except json_format.ParseError as e:
            raise ServingCallError(grpc.StatusCode.INTERNAL, f"unexpected status reply: {e}") from e
        return _status_list(response)
