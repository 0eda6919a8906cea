"""Which model versions are loaded, and the request-side lookup of a model spec.

The manager polls each model's base path. A version the policy wants is loaded completely
(SavedModel load + warmup) outside any lock, then published by replacing the model's version
table with a new dict in one assignment; versions the policy no longer wants leave in the same
swap. A request resolves its spec against the table it finds and keeps a reference to the
``ServableVersion`` for its whole run, so an unload never breaks a request in flight — the same
"availability preserving" order TF Serving uses (load the new version before unloading the old).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from tensorflow_serving.apis import get_model_status_pb2

from dnet_tf.serving.config_files import ModelSource
from dnet_tf.serving.errors import invalid_argument, not_found
from dnet_tf.serving.servable import ServableVersion
from dnet_tf.serving.versions import scan_versions

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(frozen=True)
class VersionState:
    """What GetModelStatus reports for one version."""

    version: int
    state: int  # ModelVersionStatus.State value: LOADING, AVAILABLE or END
    error: str = ""  # non-empty when the load failed


def _default_loader(name: str, version: int, path, warmup: bool) -> ServableVersion:
    servable = ServableVersion(name, version, path)
    if warmup:
        n = servable.warmup()
        if n:
            log.info("model %s version %d: replayed %d warmup request(s)", name, version, n)
    return servable


class ModelManager:
    """Loads, swaps and unloads model versions; resolves model specs for requests.

    Args:
      sources: the models to serve.
      poll_seconds: seconds between base-path scans (--file_system_poll_wait_seconds); 0 disables
        polling after the initial load.
      warmup: replay assets.extra/tf_serving_warmup_requests before a version is served.
      loader: (name, version, path, warmup) -> ServableVersion; replaceable in tests.
      on_change: called with the model name after each swap.
      max_load_retries, load_retry_interval_seconds: a version whose load failed is tried again
        up to this many times, this many seconds apart, as TF Serving does (its
        --max_num_load_retries, --load_retry_interval_micros; defaults 5 and 60 s); the polls in
        between skip it. Once they are spent it waits for its directory to change (mtime), which
        starts a fresh round.
      clock: monotonic seconds; replaceable in tests.
    """

    def __init__(
        self,
        sources: Sequence[ModelSource],
        poll_seconds: float = 1.0,
        warmup: bool = True,
        loader: Callable[..., ServableVersion] = _default_loader,
        on_change: Callable[[str], None] | None = None,
        max_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in {names}")
        if not sources:
            raise ValueError(
                "no model to serve: give --model_name/--model_base_path or --model_config_file"
            )
        self._sources = {s.name: s for s in sources}
        self._poll_seconds = float(poll_seconds)
        self._warmup = warmup
        self._loader = loader
        self._on_change = on_change
        self._tables: dict[str, dict[int, ServableVersion]] = {s.name: {} for s in sources}
        self._states: dict[str, dict[int, VersionState]] = {s.name: {} for s in sources}
        self._max_load_retries = int(max_load_retries)
        self._retry_seconds = float(load_retry_interval_seconds)
        self._clock = clock
        self._failed: dict[str, dict[int, _FailedLoad]] = {s.name: {} for s in sources}
        self._writer_lock = threading.Lock()  # serialises scans/swaps; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loading

    def poll_once(self) -> None:
        """Scans every base path once and applies the version policy (loads first, then unloads)."""
        with self._writer_lock:
            for source in self._sources.values():
                self._sync_model(source)

    def _sync_model(self, source: ModelSource) -> None:
        found = scan_versions(source.base_path)
        if not found:
            if self._tables[source.name]:
                log.warning(
                    "model %s: no versions under %s; keeping the loaded ones",
                    source.name,
                    source.base_path,
                )
            else:
                log.warning(
                    "model %s: no servable versions found under %s", source.name, source.base_path
                )
            return
        wanted = source.policy.select(found)
        current = self._tables[source.name]
        loaded: dict[int, ServableVersion] = {}
        for version in sorted(wanted - set(current), reverse=True):  # newest first
            path = found[version]
            mtime = _mtime(path)
            failed = self._failed[source.name].get(version)
            if failed is not None and not failed.due(mtime, self._clock(), self._max_load_retries):
                continue  # failed before: wait for the next retry, or for the directory to change
            self._set_state(source.name, VersionState(version, State.LOADING))
            t0 = time.monotonic()
            try:
                loaded[version] = self._loader(source.name, version, path, self._warmup)
            except Exception as e:  # noqa: BLE001 - a broken version must not stop the server
                log.error(
                    "model %s version %d failed to load from %s: %s", source.name, version, path, e
                )
                retries = failed.retries + 1 if failed and failed.mtime == mtime else 0
                self._failed[source.name][version] = _FailedLoad(
                    mtime, retries, self._clock() + self._retry_seconds
                )
                self._set_state(source.name, VersionState(version, State.END, f"load failed: {e}"))
                continue
            self._failed[source.name].pop(version, None)
            log.info(
                "model %s version %d loaded in %.2f s", source.name, version, time.monotonic() - t0
            )
        if not loaded and set(current) <= wanted:
            return
        table = {v: s for v, s in current.items() if v in wanted}
        table.update(loaded)
        if not table and current:
            # Nothing new could be loaded and the policy dropped everything: keep serving.
            return
        self._tables[source.name] = table  # the atomic swap: readers see the old or the new dict
        for v in loaded:
            self._set_state(source.name, VersionState(v, State.AVAILABLE))
        for v in set(current) - set(table):
            log.info("model %s version %d unloaded", source.name, v)
            self._set_state(source.name, VersionState(v, State.END))
        if self._on_change:
            self._on_change(source.name)

    def _set_state(self, name: str, state: VersionState) -> None:
        states = dict(self._states[name])
        states[state.version] = state
        self._states[name] = states

    def start(self) -> None:
        """Initial synchronous load, then a background poller (when poll_seconds > 0)."""
        self.poll_once()
        if self._poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(
                target=self._poll_loop, name="model-version-poller", daemon=True
            )
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling whatever one scan hit
                log.exception("version poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------ lookups

    @property
    def model_names(self) -> list[str]:
        return sorted(self._sources)

    def ready(self) -> bool:
        """True when every model has at least one available version."""
        return all(self._tables[n] for n in self._sources)

    def loaded_versions(self, name: str) -> list[int]:
        return sorted(self._tables.get(name, {}))

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableVersion:
        """The servable for a request's model spec.

        Args:
          name: model name. version: a specific version, or None. label: a version label, or None
            (at most one of version/label). With neither, the newest loaded version.
        Raises:
          ServingError NOT_FOUND for an unknown model or a version not loaded; INVALID_ARGUMENT
          for an unknown label (TF Serving's codes and wording).
        """
        table = self._tables.get(name)
        if label:
            if name not in self._sources:
                raise not_found(f"Servable not found for request: Latest({name})")
            mapped = self._sources[name].label_map.get(label)
            if mapped is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = mapped
        if version is None:
            if not table:
                raise not_found(f"Servable not found for request: Latest({name})")
            return table[max(table)]
        if not table or version not in table:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return table[version]

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionState]:
        """Version states for GetModelStatus (all known versions, or the one asked for).

        Raises:
          ServingError NOT_FOUND when the model or version is unknown; INVALID_ARGUMENT for an
          unknown label.
        """
        if name not in self._sources:
            raise not_found(f"Could not find any versions of model {name}")
        states = self._states[name]
        if label:
            mapped = self._sources[name].label_map.get(label)
            if mapped is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = mapped
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True)]


@dataclasses.dataclass(frozen=True)
class _FailedLoad:
    """A version whose load failed: its directory's mtime then, retries made, next retry time."""

    mtime: float
    retries: int
    next_try: float

    def due(self, mtime: float, now: float, max_retries: int) -> bool:
        if mtime != self.mtime:
            return True  # rewritten since: a fresh round of tries
        return self.retries < max_retries and now >= self.next_try


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
