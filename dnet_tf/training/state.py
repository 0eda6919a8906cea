"""The training state of a run: both models, their optimizers and the counters, checkpointed.

Everything here lives in one ``tf.train.Checkpoint`` saved by a ``CheckpointManager`` (which
writes the checkpoint files first and the index last, so a kill mid-save leaves the previous
checkpoint in force). Restored, a killed run continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from dnet_tf.config import DetectorConfig
from dnet_tf.models.classifier import build_classifier
from dnet_tf.models.localizer import build_localizer
from dnet_tf.training import distribute
from dnet_tf.training.recipe import make_optimizer

STAGES = ("classifier", "localizer")


@dataclasses.dataclass
class TrainingState:
    """Models, optimizers and per-stage counters of a run, with their checkpoint.

    Attributes:
      models, optimizers: {stage name: keras.Model / keras.Optimizer}: STAGES for a run
        (``build``), the shared head for its own stage (training.shared_head).
      steps: {stage: tf.Variable int64}, optimisation steps done.
      done: {stage: tf.Variable bool}, the stage finished (target or time budget).
      budget_stopped: {stage: tf.Variable bool}, it ended at the time budget (kept across
        restarts, for the summary).
      elapsed: tf.Variable float64, training-loop wall seconds summed over restarts.
      manager: the tf.train.CheckpointManager of all of the above.
    """

    models: dict
    optimizers: dict
    steps: dict
    done: dict
    budget_stopped: dict
    elapsed: tf.Variable
    manager: tf.train.CheckpointManager

    @classmethod
    def build(cls, cfg: DetectorConfig, strategy: tf.distribute.Strategy, run_dir):
        """Fresh models (seeded by cfg.train.seed) under ``strategy``'s scope, and the manager
        of ``run_dir``'s checkpoints (not restored yet: see ``restore_latest``)."""
        keras.utils.set_random_seed(cfg.train.seed)
        with strategy.scope():
            classifier = build_classifier(cfg.model)
            localizer = build_localizer(cfg.model)
            optimizers = {
                "classifier": make_optimizer(cfg.train),
                "localizer": make_optimizer(cfg.train),
            }
            optimizers["classifier"].build(classifier.trainable_variables)
            optimizers["localizer"].build(localizer.trainable_variables)
        models = {"classifier": classifier, "localizer": localizer}
        if strategy.num_replicas_in_sync > 1:
            for model in models.values():
                distribute.synchronize_batch_norm(model)
        return cls.of(models, optimizers, distribute.checkpoint_dir(strategy, run_dir))

    @classmethod
    def of(cls, models: dict, optimizers: dict, directory, checkpointed: dict | None = None):
        """The state of the stages named by ``models``' keys, checkpointed under ``directory``.

        Args:
          models, optimizers: {stage: keras.Model / built keras.Optimizer}.
          checkpointed: {stage: the object saved for that stage} where it is not the model
            itself (e.g. only the trained head of a model whose other layers are frozen).
        """
        names = tuple(models)
        saved = {**models, **(checkpointed or {})}

        def flags(kind, **kw):
            return {n: tf.Variable(trainable=False, name=f"{n}_{kind}", **kw) for n in names}

        steps = flags("step", initial_value=0, dtype=tf.int64)
        done = flags("done", initial_value=False)
        budget_stopped = flags("budget_stopped", initial_value=False)
        elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_s")
        ckpt = tf.train.Checkpoint(
            **{n: saved[n] for n in names},
            **{f"{n}_optimizer": optimizers[n] for n in names},
            **{f"{n}_step": steps[n] for n in names},
            **{f"{n}_done": done[n] for n in names},
            **{f"{n}_budget_stopped": budget_stopped[n] for n in names},
            elapsed_s=elapsed,
        )
        manager = tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=2)
        return cls(models, optimizers, steps, done, budget_stopped, elapsed, manager)

    def restore_latest(self, log: Callable[[str], None]) -> bool:
        """Restores the newest checkpoint, if any (every saved object must match)."""
        latest = self.manager.latest_checkpoint
        if not latest:
            return False
        self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
        log(f"resumed from {latest}: " + ", ".join(f"{n} step {self.step(n)}" for n in self.steps))
        return True

    def step(self, stage: str) -> int:
        return int(self.steps[stage].numpy())

    def save(self) -> None:
        """Checkpoints everything, numbered by the total steps done."""
        self.manager.save(checkpoint_number=sum(self.step(n) for n in self.steps))
