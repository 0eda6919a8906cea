"""gRPC servicers: tensorflow.serving.PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus), over a ServingCore. Classify, Regress and MultiInference are left
UNIMPLEMENTED (the detector exports only predict signatures); so is HandleReloadConfigRequest.
"""

from __future__ import annotations

import logging
import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from dnet_tf.serving.core import ServingCore
from dnet_tf.serving.errors import ServingError

log = logging.getLogger(__name__)


def _call(core: ServingCore, context, api: str, model: str, fn, request):
    metrics = core.metrics
    metrics.request_started("GRPC")
    t0 = time.perf_counter()
    status = "OK"
    try:
        return fn(request)
    except ServingError as e:
        status = e.code.name
        error = e
    except Exception as e:  # noqa: BLE001 - never leak a traceback as a transport error
        log.exception("%s failed", api)
        status = "INTERNAL"
        error = ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    finally:
        metrics.request_finished("GRPC", model, api, status, time.perf_counter() - t0)
    context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        return _call(
            self._core, context, "predict", request.model_spec.name, self._core.predict, request
        )

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _call(
            self._core,
            context,
            "GetModelMetadata",
            request.model_spec.name,
            self._core.model_metadata,
            request,
        )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        return _call(
            self._core,
            context,
            "GetModelStatus",
            request.model_spec.name,
            self._core.model_status,
            request,
        )
