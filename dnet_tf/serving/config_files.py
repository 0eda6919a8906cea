"""TF Serving's text-proto configuration files, parsed with TF Serving's own message types.

* ``--model_config_file``: ``tensorflow.serving.ModelServerConfig`` (from tensorflow-serving-api's
  ``tensorflow_serving.config.model_server_config_pb2``).
* ``--batching_parameters_file``: ``tensorflow.serving.BatchingParameters``
  (tensorflow_serving/servables/tensorflow/session_bundle_config.proto).
* ``--monitoring_config_file``: ``tensorflow.serving.MonitoringConfig``
  (tensorflow_serving/config/monitoring_config.proto).

The pip package tensorflow-serving-api ships only the model-server, logging and platform config
modules, not the last two. When they are not importable, the two messages are rebuilt here from
TF Serving's .proto definitions (same package, names, numbers and wrapper types) in a private
descriptor pool, so a file that parses here parses in ``tensorflow_model_server`` and a misspelt
field fails here too.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from dnet_tf.serving.versions import VersionPolicy

_PACKAGE = "tensorflow.serving"

# (name, number, label, type, wrapper type name or None) of BatchingParameters, as in
# session_bundle_config.proto. Int64Value / StringValue wrappers distinguish "unset" from 0.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, "optional", "message", ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, "optional", "message", ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, "optional", "message", ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, "optional", "message", ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, "optional", "message", ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, "repeated", "int64", None),
    ("pad_variable_length_inputs", 7, "optional", "bool", None),
)

_FIELD_TYPES = {
    "message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
}
_LABELS = {
    "optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
}


def _add_message(file_proto, name: str, fields) -> None:
    msg = file_proto.message_type.add(name=name)
    for field_name, number, label, ftype, type_name in fields:
        f = msg.field.add(
            name=field_name, number=number, label=_LABELS[label], type=_FIELD_TYPES[ftype]
        )
        if type_name:
            f.type_name = type_name


def _build_private_classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    _add_message(batching, "BatchingParameters", _BATCHING_FIELDS)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package=_PACKAGE, syntax="proto3"
    )
    _add_message(
        monitoring,
        "PrometheusConfig",
        (("enable", 1, "optional", "bool", None), ("path", 2, "optional", "string", None)),
    )
    _add_message(
        monitoring,
        "MonitoringConfig",
        (("prometheus_config", 1, "optional", "message", f".{_PACKAGE}.PrometheusConfig"),),
    )
    pool.Add(monitoring)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def _message_classes() -> dict[str, Any]:
    classes = {}
    try:  # the real generated modules, where an installed TF Serving build provides them
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2  # type: ignore

        classes["BatchingParameters"] = session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    try:
        from tensorflow_serving.config import monitoring_config_pb2  # type: ignore

        classes["MonitoringConfig"] = monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    if len(classes) < 2:
        private = _build_private_classes()
        for name, cls in private.items():
            classes.setdefault(name, cls)
    return classes


_CLASSES = _message_classes()
BatchingParameters = _CLASSES["BatchingParameters"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
ModelServerConfig = model_server_config_pb2.ModelServerConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def _parse_text_file(path: str | pathlib.Path, message_cls, what: str):
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{what} file {path}: cannot read: {e}") from e
    msg = message_cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ValueError(
            f"{what} file {path}: not a valid {message_cls.DESCRIPTOR.full_name} text proto: {e}"
        ) from e
    return msg


def read_batching_parameters(path: str | pathlib.Path):
    """Parses a ``--batching_parameters_file`` into a BatchingParameters message.

    Raises:
      ValueError: naming the file, when it is unreadable or has an unknown/mistyped field.
    """
    return _parse_text_file(path, BatchingParameters, "batching parameters")


def read_monitoring_config(path: str | pathlib.Path):
    """Parses a ``--monitoring_config_file`` into a MonitoringConfig message."""
    return _parse_text_file(path, MonitoringConfig, "monitoring config")


def read_model_server_config(path: str | pathlib.Path):
    """Parses a ``--model_config_file`` into a ModelServerConfig message."""
    return _parse_text_file(path, ModelServerConfig, "model config")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One served model: a name, a base path holding ``<version>/`` directories, which versions to
    serve and the version labels (label -> version number) clients may ask for."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: tuple[tuple[str, int], ...] = ()

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


def model_sources_from_config(
    config, config_dir: str | pathlib.Path | None = None
) -> list[ModelSource]:
    """ModelSource list from a ModelServerConfig message.

    A relative ``base_path`` is resolved against ``config_dir`` when given (tensorflow_model_server
    resolves it against its working directory; use absolute paths in production configs).

    Raises:
      ValueError: for a custom_model_config, a model_platform other than tensorflow, a missing
        name or base_path, or duplicate model names.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError("model config: only model_config_list is supported")
    sources = []
    seen = set()
    for i, mc in enumerate(config.model_config_list.config):
        where = f"model config entry {i}"
        if not mc.name:
            raise ValueError(f"{where}: field 'name' is empty")
        if not mc.base_path:
            raise ValueError(f"{where} ({mc.name}): field 'base_path' is empty")
        if mc.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"{where} ({mc.name}): model_platform {mc.model_platform!r} is not supported"
            )
        if mc.name in seen:
            raise ValueError(f"{where}: duplicate model name {mc.name!r}")
        seen.add(mc.name)
        base = pathlib.Path(mc.base_path)
        if config_dir is not None and not base.is_absolute():
            base = pathlib.Path(config_dir) / base
        policy = (
            VersionPolicy.from_proto(mc.model_version_policy)
            if mc.HasField("model_version_policy")
            else VersionPolicy()
        )
        labels = tuple(sorted((k, int(v)) for k, v in mc.version_labels.items()))
        sources.append(ModelSource(mc.name, str(base), policy, labels))
    return sources
