"""Server-side batching: concurrent requests to the same model version and signature are
concatenated along dimension 0 into one signature call, and the outputs are split back.

This mirrors TF Serving's BatchingSession with its BatchingParameters:
  * a batch closes when it holds ``max_batch_size`` rows or its oldest request has waited
    ``batch_timeout_micros``; ``num_batch_threads`` threads run closed batches;
  * at most ``max_enqueued_batches`` batches wait per queue — beyond that a request is refused
    with UNAVAILABLE, as TF Serving does, so clients back off instead of queueing forever;
  * a request with more rows than ``max_batch_size`` is refused with INVALID_ARGUMENT;
  * with ``allowed_batch_sizes`` a batch is padded up to the next allowed size with copies of
    its first row, whose outputs are dropped.

One queue exists per (model version, signature, non-batch input shapes): the string input of
``serving_default`` is [B], so every request fits one queue; ``image_tensor`` requests with
different image sizes go to different queues rather than being padded (padding an image would
change the detections, see serving/batching_parameters.txt). Where TF Serving fails a whole batch
when one request in it is bad, this scheduler re-runs the batch's requests one by one after an
INVALID_ARGUMENT so that only the bad request fails.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping

import grpc
import numpy as np

from dnet_tf.serving.errors import ServingError, invalid_argument, unavailable

RunFn = Callable[[object, str, Mapping[str, np.ndarray]], dict]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with TF Serving's defaults where a field is unset."""

    max_batch_size: int = 1000  # rows per batch; >= 1
    batch_timeout_micros: int = 0  # µs the oldest request waits for more rows; >= 0
    max_enqueued_batches: int = 10  # waiting batches per queue before UNAVAILABLE; >= 1
    num_batch_threads: int = 4  # threads running batches; >= 1 (TF Serving: number of CPUs)
    allowed_batch_sizes: tuple[int, ...] = ()  # increasing, last == max_batch_size; () = any size
    pad_variable_length_inputs: bool = False  # accepted for parity; inputs are never padded here

    def validate(self) -> BatchingOptions:
        def check(cond, field, msg):
            if not cond:
                raise ValueError(f"batching parameter '{field}': {msg}")

        check(
            self.max_batch_size >= 1, "max_batch_size", f"must be >= 1, got {self.max_batch_size}"
        )
        check(self.batch_timeout_micros >= 0, "batch_timeout_micros", "must be >= 0")
        check(self.max_enqueued_batches >= 1, "max_enqueued_batches", "must be >= 1")
        check(self.num_batch_threads >= 1, "num_batch_threads", "must be >= 1")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            check(
                all(a < b for a, b in zip(sizes, sizes[1:])) and sizes[0] >= 1,
                "allowed_batch_sizes",
                f"must be positive and increasing, got {sizes}",
            )
            check(
                sizes[-1] == self.max_batch_size,
                "allowed_batch_sizes",
                f"last entry must equal max_batch_size ({self.max_batch_size}), got {sizes[-1]}",
            )
        return self

    @classmethod
    def from_proto(cls, params) -> BatchingOptions:
        """From a BatchingParameters message (see config_files.read_batching_parameters)."""
        d = cls()

        def wrapped(field, default):
            return getattr(params, field).value if params.HasField(field) else default

        return cls(
            max_batch_size=int(wrapped("max_batch_size", d.max_batch_size)),
            batch_timeout_micros=int(wrapped("batch_timeout_micros", d.batch_timeout_micros)),
            max_enqueued_batches=int(wrapped("max_enqueued_batches", d.max_enqueued_batches)),
            num_batch_threads=int(wrapped("num_batch_threads", d.num_batch_threads)),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
        ).validate()


@dataclasses.dataclass
class _Task:
    arrays: Mapping[str, np.ndarray]
    rows: int
    future: concurrent.futures.Future


@dataclasses.dataclass
class _Batch:
    key: tuple
    servable: object
    signature_name: str
    deadline: float  # monotonic time at which it closes even if not full
    tasks: list = dataclasses.field(default_factory=list)
    rows: int = 0


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if None in sizes:
        raise invalid_argument("Batching Run() input tensors must have at least one dimension")
    if len(sizes) != 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


class BatchScheduler:
    """Collects concurrent ``submit`` calls into batches and runs them with ``run_fn``.

    Args:
      options: BatchingOptions.
      run_fn: (servable, signature_name, arrays) -> outputs; called with the concatenated inputs.
    """

    def __init__(self, options: BatchingOptions, run_fn: RunFn):
        self.options = options.validate()
        self._run_fn = run_fn
        self._cond = threading.Condition()
        self._open: dict[tuple, _Batch] = {}
        self._ready: collections.deque[_Batch] = collections.deque()
        self._waiting: collections.Counter = collections.Counter()  # key -> batches not yet running
        self._closed = False
        self._draining = False  # shutdown began: run every batch at once, still accept requests
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(self.options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()
        self._stats_lock = threading.Lock()
        self.batch_sizes: list[int] = []  # rows of every batch formed, in order (tests, benchmarks)

    def submit(self, servable, signature_name: str, arrays: Mapping[str, np.ndarray]) -> dict:
        """Runs one request through a batch and returns its share of the outputs (blocks).

        Raises:
          ServingError: INVALID_ARGUMENT for a request larger than max_batch_size or with
            unequal batch dimensions; UNAVAILABLE when the queue is full or the scheduler is
            closed; whatever the batch's run raised.
        """
        rows = _rows(arrays)
        if rows > self.options.max_batch_size:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        if rows == 0:
            return self._run_fn(servable, signature_name, arrays)
        shapes = tuple(sorted((k, v.shape[1:], str(v.dtype)) for k, v in arrays.items()))
        key = (id(servable), signature_name, shapes)
        task = _Task(arrays, rows, concurrent.futures.Future())
        with self._cond:
            if self._closed:
                raise unavailable("Batch scheduler is shutting down")
            batch = self._open.get(key)
            if batch is not None and batch.rows + rows > self.options.max_batch_size:
                self._close_batch(batch)
                batch = None
            if batch is None:
                if self._waiting[key] >= self.options.max_enqueued_batches:
                    raise unavailable(
                        "The batch scheduling queue to which this task was submitted is full"
                    )
                batch = _Batch(
                    key,
                    servable,
                    signature_name,
                    time.monotonic() + self.options.batch_timeout_micros * 1e-6,
                )
                self._open[key] = batch
                self._waiting[key] += 1
            batch.tasks.append(task)
            batch.rows += rows
            if (
                batch.rows >= self.options.max_batch_size
                or self.options.batch_timeout_micros == 0
                or self._draining
            ):
                self._close_batch(batch)
            self._cond.notify()
        return task.future.result()

    def _close_batch(self, batch: _Batch) -> None:
        # caller holds the lock
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        self._ready.append(batch)
        self._cond.notify()

    def _next_batch(self) -> _Batch | None:
        with self._cond:
            while True:
                now = time.monotonic()
                for batch in list(self._open.values()):
                    if batch.deadline <= now or self._closed or self._draining:
                        self._close_batch(batch)
                if self._ready:
                    batch = self._ready.popleft()
                    self._waiting[batch.key] -= 1
                    return batch
                if self._closed:
                    return None
                timeout = min((b.deadline for b in self._open.values()), default=None)
                self._cond.wait(None if timeout is None else max(timeout - now, 0.0))

    def _worker(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        tasks = batch.tasks
        with self._stats_lock:
            self.batch_sizes.append(batch.rows)
        try:
            outputs = self._run_batch(batch.servable, batch.signature_name, tasks)
        except ServingError as e:
            if e.code == grpc.StatusCode.INVALID_ARGUMENT and len(tasks) > 1:
                for task in tasks:  # isolate the bad request(s)
                    self._run_single(batch, task)
                return
            for task in tasks:
                task.future.set_exception(e)
            return
        except Exception as e:  # noqa: BLE001 - report, never kill the worker
            err = ServingError(grpc.StatusCode.INTERNAL, f"batch failed: {e}")
            for task in tasks:
                task.future.set_exception(err)
            return
        start = 0
        for task in tasks:
            task.future.set_result({k: v[start : start + task.rows] for k, v in outputs.items()})
            start += task.rows

    def _run_single(self, batch: _Batch, task: _Task) -> None:
        try:
            task.future.set_result(self._run_fn(batch.servable, batch.signature_name, task.arrays))
        except ServingError as e:
            task.future.set_exception(e)
        except Exception as e:  # noqa: BLE001
            task.future.set_exception(ServingError(grpc.StatusCode.INTERNAL, str(e)))

    def _run_batch(self, servable, signature_name: str, tasks: list) -> dict:
        rows = sum(t.rows for t in tasks)
        if len(tasks) == 1:
            merged = dict(tasks[0].arrays)
        else:
            merged = {
                k: np.concatenate([t.arrays[k] for t in tasks], axis=0) for k in tasks[0].arrays
            }
        padded = rows
        for size in self.options.allowed_batch_sizes:
            if size >= rows:
                padded = size
                break
        if padded > rows:
            merged = {
                k: np.concatenate([v, np.repeat(v[:1], padded - rows, axis=0)], axis=0)
                for k, v in merged.items()
            }
        outputs = self._run_fn(servable, signature_name, merged)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != padded:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor '{name}' has 0th dimension "
                    f"{value.shape[0] if value.ndim else 'none'}, expected {padded}",
                )
        return {k: v[:rows] for k, v in outputs.items()} if padded > rows else outputs

    def pending_batches(self) -> int:
        """Batches formed or forming that no thread has started yet."""
        with self._cond:
            return sum(self._waiting.values())

    def drain(self) -> None:
        """Stops waiting for batches to fill: queued and later requests run at once. Used at
        shutdown, while the requests in flight finish."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self) -> None:
        """Runs every queued batch now, then stops the threads. Later submits get UNAVAILABLE."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
