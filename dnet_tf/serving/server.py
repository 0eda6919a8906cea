"""A local model server that speaks TF Serving's API over the same SavedModel.

For development, tests and machines without TF Serving (its binary is not on PyPI): gRPC
PredictionService.Predict / GetModelMetadata, ModelService.GetModelStatus and grpc.health.v1 on
one port, TF Serving's REST API on another. Versions under each base path are polled and swapped
in without dropping a request (``manager``); optional server-side batching (``batching``);
``stop(grace)`` refuses new requests and lets the ones in flight finish.

    with LocalModelServer(ServerOptions(model_name="dnet", model_base_path="models/dnet",
                                        port=8500, rest_api_port=8501)) as server:
        server.wait_for_termination()

Production deployments run ``tensorflow_model_server`` (docker/); this server behaves the same
where a client can see it (protos, status codes, version choice, REST JSON), not in performance.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pathlib
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from dnet_tf.serving import config_files
from dnet_tf.serving.batching import BatchingOptions, BatchScheduler
from dnet_tf.serving.config_files import ModelSource
from dnet_tf.serving.core import ServingCore
from dnet_tf.serving.grpc_service import ModelServicer, PredictionServicer
from dnet_tf.serving.manager import ModelManager
from dnet_tf.serving.metrics import Metrics
from dnet_tf.serving.rest import RestServer

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass
class ServerOptions:
    """Server settings; field names follow tensorflow_model_server's flags.

    Give either ``model_name`` + ``model_base_path`` or ``model_config_file``.
    """

    port: int = 8500  # gRPC port; 0 picks a free one (see LocalModelServer.grpc_port)
    rest_api_port: int | None = 8501  # REST port; None disables REST; 0 picks a free one
    host: str = "0.0.0.0"  # interface to bind
    model_name: str | None = None
    model_base_path: str | None = None
    model_config_file: str | None = None  # a ModelServerConfig text proto (serving/models.config)
    enable_batching: bool = False
    batching_parameters_file: str | None = None  # BatchingParameters text proto
    batching: BatchingOptions | None = None  # overrides batching_parameters_file when given
    monitoring_config_file: str | None = None  # MonitoringConfig text proto (Prometheus on REST)
    file_system_poll_wait_seconds: float = 1.0  # s between version scans; 0 = load once
    enable_model_warmup: bool = True  # replay assets.extra/tf_serving_warmup_requests
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # per request, gRPC message or REST body
    grpc_max_threads: int = 0  # request threads; 0 = max(16, 4 x CPUs) as TF Serving
    # gRPC calls accepted at once (running or waiting for a thread); more get RESOURCE_EXHAUSTED
    # at once instead of queueing without bound; 0 = 2 x the request threads
    grpc_max_concurrent_rpcs: int = 0
    rest_api_max_connections: int = 64  # open REST connections; more are answered 503
    rest_api_timeout_in_ms: int = 30_000  # a REST request must arrive whole within this, ms
    max_num_load_retries: int = 5  # retries of a failed version load (TF Serving's default)
    load_retry_interval_micros: int = 60_000_000  # between those retries (TF Serving's default)
    shutdown_grace_seconds: float = 30.0  # stop(): time in-flight requests get to finish

    def model_sources(self) -> list[ModelSource]:
        if self.model_config_file:
            if self.model_base_path:
                raise ValueError("give either --model_config_file or --model_base_path, not both")
            cfg = config_files.read_model_server_config(self.model_config_file)
            return config_files.model_sources_from_config(
                cfg, pathlib.Path(self.model_config_file).parent
            )
        if not self.model_base_path:
            raise ValueError(
                "no model: set --model_base_path (with --model_name) or --model_config_file"
            )
        return [
            ModelSource(
                self.model_name or "default", str(pathlib.Path(self.model_base_path).absolute())
            )
        ]

    def batching_options(self) -> BatchingOptions | None:
        if not self.enable_batching:
            return None
        if self.batching is not None:
            return self.batching.validate()
        if self.batching_parameters_file:
            return BatchingOptions.from_proto(
                config_files.read_batching_parameters(self.batching_parameters_file)
            )
        return BatchingOptions().validate()

    def metrics_path(self) -> str | None:
        if not self.monitoring_config_file:
            return None
        cfg = config_files.read_monitoring_config(self.monitoring_config_file)
        if not cfg.prometheus_config.enable:
            return None
        return cfg.prometheus_config.path or config_files.DEFAULT_PROMETHEUS_PATH


class LocalModelServer:
    """The server; ``start()`` loads the models (synchronously) and opens the ports.

    Attributes (after start): grpc_port, rest_port (None without REST), manager, core.
    """

    def __init__(self, options: ServerOptions):
        self.options = options
        self._sources = options.model_sources()
        self._batching = options.batching_options()
        self._metrics_path = options.metrics_path()
        self.metrics = Metrics()
        self.manager = ModelManager(
            self._sources,
            options.file_system_poll_wait_seconds,
            warmup=options.enable_model_warmup,
            on_change=self._on_models_changed,
            max_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_micros / 1e6,
        )
        self.metrics.set_served_models(s.name for s in self._sources)
        self.core = ServingCore(
            self.manager, None, self.metrics, max_tensor_bytes=int(options.max_request_bytes)
        )
        self.batcher: BatchScheduler | None = None
        self._health = health.HealthServicer()
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def _on_models_changed(self, name: str) -> None:
        log.info("model %s now serves versions %s", name, self.manager.loaded_versions(name))

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
            self._health.set(service, status)

    def start(self) -> LocalModelServer:
        """Loads every model (blocking), then opens the ports.

        Raises:
          RuntimeError: a model has no loadable version, or a port cannot be bound; whatever was
            started is stopped again.
        """
        try:
            return self._start()
        except BaseException:
            if self._grpc is not None:
                self._grpc.stop(0)
            if self._rest is not None:
                self._rest.server_close()
            if self.batcher is not None:
                self.batcher.close()
            self.manager.stop()
            raise

    def _start(self) -> LocalModelServer:
        opts = self.options
        self._set_health(False)
        self.manager.start()
        if not self.manager.ready():
            missing = [s.name for s in self._sources if not self.manager.loaded_versions(s.name)]
            raise RuntimeError(
                f"no loadable version for model(s) {missing} under "
                f"{[s.base_path for s in self._sources if s.name in missing]}"
            )
        if self._batching is not None:
            self.batcher = BatchScheduler(self._batching, self.core.batch_runner)
            self.core.batcher = self.batcher
        threads = opts.grpc_max_threads or max(16, 4 * (os.cpu_count() or 1))
        if self._batching is not None:  # each queued request holds a thread
            threads = max(threads, 2 * self._batching.max_batch_size)
        limit = int(opts.max_request_bytes)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            maximum_concurrent_rpcs=opts.grpc_max_concurrent_rpcs or 2 * threads,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core), self._grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{_bind_host(opts.host)}:{opts.port}")
        except RuntimeError as e:
            raise RuntimeError(f"cannot bind gRPC port {opts.port} on {opts.host}: {e}") from e
        if self.grpc_port == 0:
            raise RuntimeError(f"cannot bind gRPC port {opts.port} on {opts.host}")
        self._grpc.start()
        if opts.rest_api_port is not None:
            try:
                self._rest = RestServer(
                    (opts.host, opts.rest_api_port),
                    self.core,
                    limit,
                    self._metrics_path,
                    max_connections=opts.rest_api_max_connections,
                    read_timeout_s=opts.rest_api_timeout_in_ms / 1000.0,
                )
            except OSError as e:
                raise RuntimeError(
                    f"cannot bind REST port {opts.rest_api_port} on {opts.host}: {e}"
                ) from e
            self.rest_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self._rest.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="rest",
                daemon=True,
            )
            self._rest_thread.start()
        self._set_health(True)
        log.info(
            "serving %s: gRPC on %s:%d%s",
            [s.name for s in self._sources],
            opts.host,
            self.grpc_port,
            f", REST on {opts.host}:{self.rest_port}" if self._rest else "",
        )
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stops accepting requests, waits up to ``grace`` seconds for those in flight, then closes.

        Health turns NOT_SERVING first; new gRPC calls get UNAVAILABLE and new REST connections are
        refused, while accepted requests (including those queued for a batch) complete. REST
        connections that have not sent a whole request (idle, half-sent) are closed at once. It
        returns within about grace + 1 s whatever the clients do: past the grace period gRPC
        cancels the calls left and REST closes their connections.
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.options.shutdown_grace_seconds if grace is None else grace
            deadline = time.monotonic() + grace
            self._set_health(False)
            if self.batcher is not None:
                self.batcher.drain()
            grpc_done = self._grpc.stop(grace) if self._grpc is not None else None
            if self._rest is not None:
                self._rest.stop(grace)
            if grpc_done is not None:
                grpc_done.wait(max(0.0, deadline - time.monotonic()) + 0.5)
            if self.batcher is not None:
                self.batcher.close()
            self.manager.stop()
            self._stopped.set()
            log.info("server stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Blocks until ``stop`` has finished (or timeout); True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
