"""Command line of the local model server; flag names mirror tensorflow_model_server's.

    python -m dnet_tf.serving.server_cli --model_base_path models/dnet --model_name dnet \
        --port 8500 --rest_api_port 8501 \
        [--enable_batching --batching_parameters_file serving/batching_parameters.txt] \
        [--monitoring_config_file serving/monitoring.config]

or ``--model_config_file serving/models.config`` for several models, version policies and labels.
Boolean flags accept ``--flag``, ``--flag=true`` and ``--flag=false`` as abseil flags do.
SIGTERM or SIGINT stops the server gracefully: health turns NOT_SERVING, new requests are refused,
requests in flight finish (up to --shutdown_grace_seconds), then the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from dnet_tf.serving.server import DEFAULT_MAX_REQUEST_BYTES, LocalModelServer, ServerOptions

log = logging.getLogger("dnet_tf.serving")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it), for a server started next."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(
    model_base_path, model_name: str, port: int, rest_api_port: int | None = None, *extra: str
) -> list[str]:
    """The command line that starts this server on localhost in a subprocess (``python -m``)
    for one model; ``extra`` are further flags (``--flag=value``)."""
    cmd = [
        sys.executable,
        "-m",
        "dnet_tf.serving.server_cli",
        "--host=127.0.0.1",
        f"--model_base_path={model_base_path}",
        f"--model_name={model_name}",
        f"--port={port}",
    ]
    if rest_api_port is not None:
        cmd.append(f"--rest_api_port={rest_api_port}")
    return cmd + list(extra)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnet-serve",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    p.add_argument(
        "--rest_api_port",
        type=int,
        default=0,
        help="REST port; 0 disables REST, as in tensorflow_model_server (default 0)",
    )
    p.add_argument("--host", default="0.0.0.0", help="interface to bind (default 0.0.0.0)")
    p.add_argument("--model_name", default="default", help="served model name (default 'default')")
    p.add_argument("--model_base_path", help="directory holding <version>/ SavedModel directories")
    p.add_argument(
        "--model_config_file", help="ModelServerConfig text proto (instead of name/base path)"
    )
    p.add_argument(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="server-side batching of concurrent requests",
    )
    p.add_argument("--batching_parameters_file", help="BatchingParameters text proto")
    p.add_argument(
        "--monitoring_config_file", help="MonitoringConfig text proto (Prometheus on the REST port)"
    )
    p.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between scans for new versions; 0 = load once (default 1)",
    )
    p.add_argument(
        "--enable_model_warmup",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests before serving a version",
    )
    p.add_argument(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="accepted for command-line parity; labels are always resolved per request",
    )
    p.add_argument(
        "--grpc_max_threads", type=int, default=0, help="request threads (0 = max(16, 4 x CPUs))"
    )
    p.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest accepted gRPC message / REST body (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    p.add_argument(
        "--grpc_max_concurrent_rpcs",
        type=int,
        default=0,
        help="gRPC calls accepted at once; more get RESOURCE_EXHAUSTED (0 = 2 x request threads)",
    )
    p.add_argument(
        "--rest_api_max_connections",
        type=int,
        default=64,
        help="open REST connections; more are answered 503 (default 64)",
    )
    p.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30_000,
        help="a REST request must arrive whole within this many ms (default 30000)",
    )
    p.add_argument(
        "--max_num_load_retries",
        type=int,
        default=5,
        help="retries of a version whose load failed (default 5, as TF Serving)",
    )
    p.add_argument(
        "--load_retry_interval_micros",
        type=int,
        default=60_000_000,
        help="microseconds between load retries (default 60000000, as TF Serving)",
    )
    p.add_argument(
        "--shutdown_grace_seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds requests in flight get to finish (default 30)",
    )
    p.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="threads one op may use; 0 = TensorFlow's choice (the CPU count) (default 0)",
    )
    p.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="threads running independent ops; 0 = TensorFlow's choice (default 0)",
    )
    p.add_argument("--log_level", default="INFO", help="Python logging level (default INFO)")
    return p


# Upper bound of each TensorFlow thread-pool flag: far above any machine's cores.
MAX_TENSORFLOW_THREADS = 1024


def set_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Sizes TensorFlow's thread pools for this process, as tensorflow_model_server's flags of the
    same names do; 0 leaves a pool to TensorFlow. Must run before the first model is loaded.

    Raises:
      ValueError: a count outside [0, MAX_TENSORFLOW_THREADS] (a typo of a few digits must not
        start a million threads), or TensorFlow already started (its pools are fixed then).
    """
    for name, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if not 0 <= value <= MAX_TENSORFLOW_THREADS:
            raise ValueError(
                f"--tensorflow_{name}_parallelism must be in [0, {MAX_TENSORFLOW_THREADS}], "
                f"got {value}"
            )
    if not (intra_op or inter_op):
        return
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:
        raise ValueError(f"cannot size TensorFlow's thread pools now: {e}") from e


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    if args.batching_parameters_file and not args.enable_batching:
        log.warning("--batching_parameters_file is ignored without --enable_batching")
    return ServerOptions(
        port=args.port,
        rest_api_port=args.rest_api_port or None,
        host=args.host,
        model_name=None if args.model_config_file else args.model_name,
        model_base_path=args.model_base_path,
        model_config_file=args.model_config_file,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        monitoring_config_file=args.monitoring_config_file,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        max_request_bytes=args.max_request_bytes,
        grpc_max_threads=args.grpc_max_threads,
        grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
        rest_api_max_connections=args.rest_api_max_connections,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGTERM or SIGINT; returns the exit code (``main`` exits with it)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        set_tensorflow_threads(
            args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
        )
        server = LocalModelServer(options_from_args(args))
        server.start()
    except (ValueError, RuntimeError, OSError) as e:
        print(f"dnet-serve: {e}", file=sys.stderr)
        return 2
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"dnet-serve ready: gRPC port {server.grpc_port}"
        + (f", REST port {server.rest_port}" if server.rest_port else ""),
        flush=True,
    )
    while not stop_requested.wait(0.1):  # a timed wait lets the signal handler run promptly
        pass
    server.stop()
    return 0


def _exit_now(code: int) -> None:
    """Exits without the interpreter's teardown of TensorFlow and the gRPC threads, which can
    take seconds on a loaded machine: once ``stop`` has returned every answer has been sent, so
    the exit stays within the grace period (flushing what was logged first)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """The ``dnet-serve`` console script."""
    _exit_now(run())


if __name__ == "__main__":
    main()
