"""The run directory: everything a trained run leaves for inference, export and evaluation.

Layout (team contract):
  config.json          DetectorConfig.to_json()
  class_names.txt      one class name per line, in class-id order (id 0 = first line)
  dataset_stats.json   {"aspect_ratios": [10 floats, w / h, ascending], ...}
  localizer.keras      final localizer (input [B, S, S, 3] float32 0..255 -> [B, d, d, 5, C])
  classifier.keras     final classifier (-> [B, C + 1] softmax, 0 = background)
  shared_head.keras    optional: the class head on the localizer's trunk (features -> [B, C + 1];
                       TrainConfig.shared_head_steps > 0, training.shared_head)
  checkpoints/         training state (tf.train.CheckpointManager)
  logs/                TensorBoard event files, one folder per stage
  summary.json         written last: {"complete": true, steps, throughput, mask IoU, ...}

Every file is written under a temporary name in the same folder and moved into place with
os.replace, so a process killed at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from collections.abc import Sequence

import keras

from dnet_tf.config import DetectorConfig

# The file names are contracts shared with export and evaluation: defined in dnet_tf.core.
from dnet_tf.core.contracts import (  # noqa: F401 (rd.CONFIG, ...)
    CHECKPOINTS,
    CLASS_NAMES,
    CLASSIFIER,
    CONFIG,
    DATASET_STATS,
    LOCALIZER,
    LOGS,
    SHARED_HEAD,
    SUMMARY,
)


@dataclasses.dataclass
class RunArtifacts:
    """What inference needs from a trained run.

    Attributes:
      config: the run's DetectorConfig (model.num_classes == len(class_names)).
      class_names: tuple of str, class id k (0-based) = class_names[k].
      aspect_ratios: tuple of float, w / h of the box-search shapes, ascending.
      localizer, classifier: the loaded Keras models.
      class_head: the shared head (models.shared_head) when the run has shared_head.keras,
        else None.
    """

    config: DetectorConfig
    class_names: tuple
    aspect_ratios: tuple
    localizer: keras.Model
    classifier: keras.Model
    class_head: keras.Model | None = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` via a temporary file and os.replace."""
    _atomic_write_bytes(pathlib.Path(path), text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Writes ``obj`` as indented, key-sorted JSON via a temporary file and os.replace."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_model(model: keras.Model, path) -> None:
    """Saves a Keras model as a .keras file under a temporary name, then os.replace."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras wants the ".keras" suffix on the file it writes.
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_class_names(path, class_names: Sequence[str]) -> None:
    """Writes class_names.txt: one name per line, in class-id order.

    Raises:
      ValueError: an empty list, a name that is empty, has surrounding spaces or a line break, or
        a duplicate name.
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_names: the list is empty")
    for n in names:
        if not n or n != n.strip() or "\n" in n or "\r" in n:
            raise ValueError(f"class_names: invalid class name {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names: duplicate names in {names}")
    atomic_write_text(path, "".join(n + "\n" for n in names))


def read_class_names(path) -> tuple:
    """Reads class_names.txt. Returns a tuple of str. Raises ValueError on an empty file."""
    path = pathlib.Path(path)
    names = tuple(
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    if not names:
        raise ValueError(f"{path}: no class names")
    return names


def read_config(path) -> DetectorConfig:
    """Reads and validates config.json. Raises ValueError naming the file on bad content."""
    path = pathlib.Path(path)
    try:
        return DetectorConfig.from_json(path.read_text(encoding="utf-8")).validate()
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {e}") from e


def read_aspect_ratios(path) -> tuple:
    """Reads the "aspect_ratios" field of dataset_stats.json: positive floats, ascending.

    Raises:
      ValueError: missing field, non-positive or unsorted values (naming the file and field).
    """
    path = pathlib.Path(path)
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    ratios = stats.get("aspect_ratios") if isinstance(stats, dict) else None
    if not isinstance(ratios, list) or not ratios:
        raise ValueError(f"{path}: field 'aspect_ratios' must be a non-empty list of numbers")
    try:
        ratios = tuple(float(r) for r in ratios)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: field 'aspect_ratios' must hold numbers: {e}") from e
    if any(r <= 0 for r in ratios) or list(ratios) != sorted(ratios):
        raise ValueError(
            f"{path}: field 'aspect_ratios' must be positive and ascending, got {ratios}"
        )
    return ratios


def read_summary(run_dir) -> dict | None:
    """The run's summary.json as a dict, or None when the run has not finished."""
    path = pathlib.Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_complete(run_dir) -> bool:
    """True when training finished: summary.json says complete and both models exist."""
    run_dir = pathlib.Path(run_dir)
    summary = read_summary(run_dir)
    return bool(summary and summary.get("complete")) and all(
        (run_dir / f).is_file() for f in (LOCALIZER, CLASSIFIER)
    )


def load_run(run_dir) -> RunArtifacts:
    """Loads a trained run.

    Args:
      run_dir: folder written by dnet_tf.training.train.
    Returns:
      RunArtifacts(config, class_names, aspect_ratios, localizer, classifier, class_head).
    Raises:
      FileNotFoundError: a required file is missing (named in the message).
      ValueError: inconsistent content, e.g. class count != config.model.num_classes, or model
        output shapes that disagree with the config.
    """
    run_dir = pathlib.Path(run_dir)
    for name in (CONFIG, CLASS_NAMES, DATASET_STATS, LOCALIZER, CLASSIFIER):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"run directory {run_dir}: missing {name} (was training run to completion?)"
            )
    config = read_config(run_dir / CONFIG)
    class_names = read_class_names(run_dir / CLASS_NAMES)
    if len(class_names) != config.model.num_classes:
        raise ValueError(
            f"{run_dir / CLASS_NAMES}: {len(class_names)} names but config.json has "
            f"model.num_classes = {config.model.num_classes}"
        )
    aspect_ratios = read_aspect_ratios(run_dir / DATASET_STATS)
    # Importing the package registers the custom layers ("dnet_tf>...") for deserialisation.
    import dnet_tf.models  # noqa: F401

    localizer = keras.saving.load_model(run_dir / LOCALIZER, compile=False)
    classifier = keras.saving.load_model(run_dir / CLASSIFIER, compile=False)
    m = config.model
    want_loc = (m.mask_size, m.mask_size, 5, m.num_classes)
    if tuple(localizer.output_shape[1:]) != want_loc:
        raise ValueError(
            f"{run_dir / LOCALIZER}: output shape {localizer.output_shape[1:]} "
            f"!= {want_loc} from config.json"
        )
    if tuple(classifier.output_shape[1:]) != (m.num_classes + 1,):
        raise ValueError(
            f"{run_dir / CLASSIFIER}: output shape {classifier.output_shape[1:]} "
            f"!= ({m.num_classes + 1},) from config.json"
        )
    class_head = None
    if (run_dir / SHARED_HEAD).is_file():
        class_head = keras.saving.load_model(run_dir / SHARED_HEAD, compile=False)
        if tuple(class_head.output_shape[1:]) != (m.num_classes + 1,):
            raise ValueError(
                f"{run_dir / SHARED_HEAD}: output shape {class_head.output_shape[1:]} "
                f"!= ({m.num_classes + 1},) from config.json"
            )
    return RunArtifacts(
        config=config,
        class_names=class_names,
        aspect_ratios=aspect_ratios,
        localizer=localizer,
        classifier=classifier,
        class_head=class_head,
    )
