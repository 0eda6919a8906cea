"""Version directories under a model base path and the version policy that picks the served ones.

TF Serving's file-system source treats every directory ``<base_path>/<N>/`` whose name is a
non-negative integer (ASCII digits only, fitting an int64) as version N; anything else
(``.tmp-3-...`` staging directories written by an atomic export, stray files) is ignored. The
policy (``ServableVersionPolicy`` in
file_system_storage_path_source.proto) chooses among the versions found: the latest N (default
N = 1), all, or a specific list.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable

from dnet_tf.core.contracts import MAX_VERSION, parse_version  # noqa: F401 (re-exported)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def scan_versions(base_path: str | os.PathLike) -> dict[int, pathlib.Path]:
    """Version number -> directory, for each numeric child directory holding a SavedModel.

    A version directory appears only once it holds saved_model.pb(txt); with an atomic export
    (write a staging directory, then rename) that means it is complete.

    Returns:
      dict, empty when base_path does not exist.
    """
    base = pathlib.Path(base_path)
    found: dict[int, pathlib.Path] = {}
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        version = parse_version(entry.name)
        try:
            if version is None or not entry.is_dir():
                continue
        except OSError:  # vanished or unreadable while scanning: not a version this time
            continue
        path = pathlib.Path(entry.path)
        if any((path / f).is_file() for f in SAVED_MODEL_FILES):
            found[version] = path
    return found


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions found are served.

    kind: "latest" (the ``num_versions`` highest), "all", or "specific" (those in ``versions``).
    """

    kind: str = "latest"
    num_versions: int = 1  # for "latest"; >= 1
    versions: tuple[int, ...] = ()  # for "specific"

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(
                f"version policy: kind must be latest, all or specific, got {self.kind!r}"
            )
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(
                f"version policy: latest.num_versions must be >= 1, got {self.num_versions}"
            )
        if self.kind == "specific" and not self.versions:
            raise ValueError("version policy: specific.versions must list at least one version")

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve among ``available``."""
        available = sorted(set(int(v) for v in available))
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(available) & set(self.versions)
        return set(available[-self.num_versions :])

    @classmethod
    def from_proto(cls, policy) -> VersionPolicy:
        """From a FileSystemStoragePathSourceConfig.ServableVersionPolicy message."""
        which = policy.WhichOneof("policy_choice")
        if which is None or which == "latest":
            n = policy.latest.num_versions if which == "latest" else 0
            return cls("latest", num_versions=n or 1)  # TF Serving treats an unset count as 1
        if which == "all":
            return cls("all")
        return cls("specific", versions=tuple(int(v) for v in policy.specific.versions))
