"""Status codes shared by the local server's gRPC and REST front ends.

TF Serving reports failures as ``tensorflow.error.Code`` values, which are numerically the gRPC
status codes; its REST front end maps them to HTTP codes with ``ToHTTPStatusCode``
(tensorflow_serving/util/net_http). The tables here reproduce both so that a client sees the same
code from this server as from ``tensorflow_model_server``.
"""

from __future__ import annotations

import grpc

# gRPC status by its integer value (== tensorflow.error.Code and OpError.error_code).
_GRPC_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

# TF Serving's net_http mapping from canonical status to HTTP status.
_HTTP_BY_GRPC = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failure with the status code TF Serving would return.

    Attributes:
      code: grpc.StatusCode of the failure.
      message: human-readable detail (sent as the gRPC details / the REST ``error`` field).
      http_status: optional HTTP status overriding the code's usual one.
    """

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """TF Serving's HTTP status for the code, unless the REST layer chose a more precise one
        (413 for an over-size body, which only the local server limits)."""
        return self._http_status or http_status(self.code)


def grpc_code_from_value(value: int) -> grpc.StatusCode:
    """gRPC status for an integer code (e.g. ``tf.errors.OpError.error_code``); UNKNOWN if
    unmapped."""
    return _GRPC_BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


def http_status(code: grpc.StatusCode) -> int:
    """HTTP status TF Serving's REST API uses for a canonical status code."""
    return _HTTP_BY_GRPC.get(code, 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)
