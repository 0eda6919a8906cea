"""The request logic shared by the gRPC and REST front ends: resolve the model spec, validate the
inputs against the SignatureDef, run (through the batch scheduler when enabled), and build TF
Serving's response messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from dnet_tf.serving.batching import BatchScheduler
from dnet_tf.serving.errors import invalid_argument
from dnet_tf.serving.manager import ModelManager
from dnet_tf.serving.metrics import Metrics
from dnet_tf.serving.servable import DEFAULT_SIGNATURE, ServableVersion, tensor_proto_to_array

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"  # the only metadata field TF Serving supports


def spec_version(model_spec) -> tuple[int | None, str | None]:
    """(version, label) of a ModelSpec; at most one is set (they share a oneof)."""
    which = model_spec.WhichOneof("version_choice")
    if which == "version":
        return int(model_spec.version.value), None
    if which == "version_label":
        return None, model_spec.version_label
    return None, None


class ServingCore:
    """Model lookups and predictions for both transports.

    Args:
      manager: the ModelManager holding the loaded versions.
      batcher: a BatchScheduler, or None to run each request on its own.
      metrics: Metrics to record batch sizes into.
      max_tensor_bytes: the most bytes one gRPC input tensor may take once built, checked on its
        declared shape before it is built (a TensorProto can declare far more than it carries).
    """

    def __init__(
        self,
        manager: ModelManager,
        batcher: BatchScheduler | None = None,
        metrics: Metrics | None = None,
        max_tensor_bytes: int | None = None,
    ):
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics or Metrics()
        self.max_tensor_bytes = max_tensor_bytes  # per input, once built; None = no limit

    def resolve(self, model_spec) -> ServableVersion:
        if not model_spec.name:
            raise invalid_argument("Missing model name in request.")
        version, label = spec_version(model_spec)
        return self.manager.resolve(model_spec.name, version, label)

    def run(
        self,
        servable: ServableVersion,
        signature_name: str,
        arrays: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Validates and runs one request; returns the (filtered) outputs as arrays.

        Raises:
          ServingError with TF Serving's status code.
        """
        servable.check_inputs(signature_name, arrays)
        aliases = servable.output_aliases(signature_name, output_filter)
        if self.batcher is not None:
            outputs = self.batcher.submit(servable, signature_name, arrays)
        else:
            outputs = servable.run(signature_name, arrays)
        return {k: outputs[k] for k in aliases}

    def batch_runner(self, servable: ServableVersion, signature_name: str, arrays) -> dict:
        """The run function handed to the BatchScheduler (records the batch size)."""
        rows = next(iter(arrays.values())).shape[0] if arrays else 0
        self.metrics.batch_run(servable.name, int(rows))
        return servable.run(signature_name, arrays)

    # ------------------------------------------------------------------ gRPC messages

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        servable.signature(signature_name)  # INVALID_ARGUMENT before decoding any tensor
        arrays = {
            alias: tensor_proto_to_array(alias, proto, self.max_tensor_bytes)
            for alias, proto in request.inputs.items()
        }
        outputs = self.run(servable, signature_name, arrays, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        self.fill_spec(response.model_spec, servable, signature_name)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    @staticmethod
    def fill_spec(spec, servable: ServableVersion, signature_name: str | None) -> None:
        spec.name = servable.name
        spec.version.value = servable.version
        if signature_name is not None:
            spec.signature_name = signature_name

    def model_metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self.fill_spec(response.model_spec, servable, None)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        return response

    def model_status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.model_spec.name:
            raise invalid_argument("Missing model name in request.")
        version, label = spec_version(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for st in self.manager.status(request.model_spec.name, version, label):
            entry = response.model_version_status.add(version=st.version, state=st.state)
            # error_code uses tensorflow.error.Code: 0 OK, 2 UNKNOWN (TF Serving's code for a failed
            # load)
            entry.status.error_code = 2 if st.error else 0
            entry.status.error_message = st.error
        return response
