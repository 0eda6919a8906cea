"""A small Prometheus exporter for the local server (text exposition format 0.0.4).

Metric names follow TF Serving's where one exists, so dashboards built on a TF Serving
deployment (``--monitoring_config_file`` with ``prometheus_config { enable: true }``) read this
server too:

  :tensorflow:serving:request_count{model_name, status}           counter
  :tensorflow:serving:request_latency{model_name, API, entrypoint} histogram, microseconds
  :tensorflow:serving:batch_size{model_name}                      histogram of rows per batch run

plus one of its own, ``dnet_serving_inflight_requests{entrypoint}`` (a gauge of requests being
handled), which tests and load runs use to see that requests are in flight.

The model_name label takes only the names of served models (``set_served_models``); any other
name a client sends counts under UNKNOWN_MODEL_LABEL, so clients cannot grow the series without
bound.
"""

from __future__ import annotations

import bisect
import collections
import threading

# Latency buckets in microseconds: 1 ms .. ~60 s.
_LATENCY_BUCKETS_US = tuple(int(1000 * 2 ** (i / 2)) for i in range(0, 32))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN_MODEL_LABEL = "__unknown__"  # the model_name of requests naming no served model


def _labels(names, values) -> str:
    def esc(v):
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{n}="{esc(v)}"' for n, v in zip(names, values)) + "}"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """Thread-safe counters, gauges and histograms rendered in Prometheus text format."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = collections.Counter()  # (model, status) -> n
        self._latency: dict[tuple, _Histogram] = {}
        self._batch: dict[tuple, _Histogram] = {}
        self._inflight = collections.Counter()  # entrypoint -> n
        self._served: frozenset | None = None  # None: every name is its own label

    def set_served_models(self, names) -> None:
        """The model names that get their own label; others count as UNKNOWN_MODEL_LABEL."""
        self._served = frozenset(str(n) for n in names)

    def _model_label(self, model: str) -> str:
        served = self._served
        return model if served is None or model in served else UNKNOWN_MODEL_LABEL

    def request_started(self, entrypoint: str) -> None:
        with self._lock:
            self._inflight[entrypoint] += 1

    def request_finished(
        self, entrypoint: str, model: str, api: str, status: str, seconds: float
    ) -> None:
        model = self._model_label(model)
        with self._lock:
            self._inflight[entrypoint] -= 1
            self._requests[(model, status)] += 1
            h = self._latency.setdefault((model, api, entrypoint), _Histogram(_LATENCY_BUCKETS_US))
            h.observe(seconds * 1e6)

    def batch_run(self, model: str, rows: int) -> None:
        model = self._model_label(model)
        with self._lock:
            self._batch.setdefault((model,), _Histogram(_BATCH_BUCKETS)).observe(rows)

    def inflight(self, entrypoint: str | None = None) -> int:
        with self._lock:
            if entrypoint is None:
                return sum(self._inflight.values())
            return self._inflight[entrypoint]

    def render(self) -> str:
        """The exposition text (``text/plain; version=0.0.4``)."""
        out = []
        with self._lock:
            name = ":tensorflow:serving:request_count"
            out += [f"# TYPE {name} counter"]
            out += [
                f"{name}{_labels(('model_name', 'status'), k)} {v}"
                for k, v in sorted(self._requests.items())
            ]
            self._render_hist(
                out,
                ":tensorflow:serving:request_latency",
                ("model_name", "API", "entrypoint"),
                self._latency,
            )
            self._render_hist(out, ":tensorflow:serving:batch_size", ("model_name",), self._batch)
            name = "dnet_serving_inflight_requests"
            out += [f"# TYPE {name} gauge"]
            for ep in ("GRPC", "REST"):
                out.append(f"{name}{_labels(('entrypoint',), (ep,))} {self._inflight[ep]}")
        return "\n".join(out) + "\n"

    @staticmethod
    def _render_hist(out, name, label_names, hists) -> None:
        out.append(f"# TYPE {name} histogram")
        for key, h in sorted(hists.items()):
            cumulative = 0
            for bound, n in zip(list(h.buckets) + ["+Inf"], h.counts):
                cumulative += n
                out.append(
                    f"{name}_bucket{_labels(label_names + ('le',), key + (bound,))} {cumulative}"
                )
            out.append(f"{name}_sum{_labels(label_names, key)} {h.sum}")
            out.append(f"{name}_count{_labels(label_names, key)} {h.count}")
