"""Where a detector comes from: a training run directory or an exported SavedModel on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from dnet_tf.core import contracts
from dnet_tf.inference.module import DetectorModule


def module_from_run(run_dir, inference_overrides: dict | None = None):
    """Builds the DetectorModule of a run directory (``dnet_tf.training.run_dir``).

    Args:
      run_dir: a complete run directory.
      inference_overrides: InferenceConfig fields to replace (e.g. {"max_refine": 10}).
    Returns:
      (module, dataset_stats dict; {} when the run has no dataset_stats.json).
    """
    from dnet_tf.training.run_dir import load_run

    run = load_run(run_dir)
    config = run.config
    if inference_overrides:
        config = dataclasses.replace(
            config, inference=dataclasses.replace(config.inference, **inference_overrides)
        )
    stats_path = pathlib.Path(run_dir) / contracts.DATASET_STATS
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    module = DetectorModule(
        run.localizer,
        run.classifier,
        run.class_names,
        run.aspect_ratios,
        config,
        class_head=run.class_head,
    )
    return module, stats


def resolve_saved_model_dir(path: str | os.PathLike) -> pathlib.Path | None:
    """A SavedModel directory for ``path``: itself, or its newest integer version subdirectory
    (None when there is neither)."""
    path = pathlib.Path(path)
    if (path / contracts.SAVED_MODEL_PB).exists():
        return path
    versions = sorted(
        (contracts.parse_version(p.name), p)
        for p in path.glob("*")
        if contracts.parse_version(p.name) is not None and (p / contracts.SAVED_MODEL_PB).exists()
    )
    return versions[-1][1] if versions else None


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training run directory (it holds config.json)."""
    return (pathlib.Path(path) / contracts.CONFIG).is_file()
