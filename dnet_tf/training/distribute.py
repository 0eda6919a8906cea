"""tf.distribute for training: one device, MirroredStrategy on one host, MultiWorkerMirrored
across hosts (TF_CONFIG). Nothing home-made: the strategies do the all-reduce.

Multi-worker use: start the same command on every host with TF_CONFIG set, e.g. on worker 0

  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
              "task": {"type": "worker", "index": 0}}' python -m dnet_tf.training.cli ...

Worker 0 is the chief: it writes the run directory's files. The others write their checkpoints
to a scratch folder (checkpoint saving must run on every worker) and nothing else. The strategy
must be created before any other TensorFlow op runs in the process.
"""

from __future__ import annotations

import json
import os
import pathlib

import tensorflow as tf

from dnet_tf.core import contracts

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def tf_config() -> dict:
    """TF_CONFIG as a dict ({} when unset). Raises ValueError on malformed JSON."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"environment variable TF_CONFIG is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError("environment variable TF_CONFIG must be a JSON object")
    return cfg


def num_workers_in_tf_config() -> int:
    """Workers (chief included) listed in TF_CONFIG's cluster; 0 when TF_CONFIG is unset."""
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the training strategy.

    Args:
      name: "auto" (multi_worker when TF_CONFIG lists more than one worker, else mirrored when
        more than one GPU is visible, else default), "default" (one device), "mirrored" (all
        local GPUs, or the CPU), "multi_worker" (MultiWorkerMirroredStrategy from TF_CONFIG).
    Returns:
      a tf.distribute.Strategy.
    Raises:
      ValueError: unknown name, or multi_worker without TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {list(STRATEGIES)}")
    if name == "auto":
        if num_workers_in_tf_config() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if not tf_config():
        raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _layers_of(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers_of(layer)


def synchronize_batch_norm(model) -> int:
    """Makes every BatchNormalization layer of ``model`` (nested models included) compute its
    batch statistics over the global batch, all-reduced across replicas.

    Needed with more than one replica: Keras' moving statistics are plain (non-aggregated)
    variables, so with per-replica statistics each replica would keep different moving
    averages, and the replicas' models would differ at inference. With global statistics every
    replica applies the same update. Returns the number of layers changed.
    """
    import keras

    n = 0
    for layer in _layers_of(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            n += 1
    return n


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task_id(strategy: tf.distribute.Strategy) -> int:
    """This worker's index (0 outside multi-worker training)."""
    if not is_multi_worker(strategy):
        return 0
    return int(strategy.cluster_resolver.task_id)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the run directory (the only one outside multi-worker)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type = resolver.task_type
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and not has_chief and resolver.task_id == 0


def checkpoint_dir(strategy: tf.distribute.Strategy, run_dir) -> pathlib.Path:
    """Where this worker saves checkpoints: run_dir/checkpoints on the chief, a per-worker
    scratch folder (run_dir/checkpoints/.worker-<id>) elsewhere."""
    base = pathlib.Path(run_dir) / contracts.CHECKPOINTS
    if is_chief(strategy):
        return base
    return base / f".worker-{task_id(strategy)}"
