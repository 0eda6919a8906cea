"""The optional third stage: a class head on the localizer's frozen trunk (models.shared_head).

It runs on what the first two stages left in the run directory (localizer.keras,
classifier.keras), so it can be added to a finished run without retraining either network:

  1. the head's embedding and output layer start from the classifier's;
  2. ``TrainConfig.shared_head_steps`` steps of cross-entropy on the classifier sampler's
     labelled boxes, shown as the boxes or as their refinement crops (``shared_head_view``),
     through the localizer's trunk in inference mode (its weights and BatchNormalization
     statistics unchanged), only the head's variables updated;
  3. the head is saved as shared_head.keras; summary.json and config.json record the stage.

Resumable like the other stages: the head, its optimizer and the counters are checkpointed under
checkpoints/shared_head/ (apart from the first two stages' checkpoint, whose layout stays as it
was); asked for more steps later, the stage continues from where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Callable

import tensorflow as tf

from dnet_tf.models.shared_head import (
    build_class_head,
    build_head_trainer,
    init_head_from_classifier,
    localizer_trunk,
)
from dnet_tf.training import run_dir as rd
from dnet_tf.training.metrics import evaluate_classifier
from dnet_tf.training.recipe import classifier_example_loss, make_optimizer
from dnet_tf.training.sources import open_source
from dnet_tf.training.stage import RunContext, StagePlan, run_stage
from dnet_tf.training.state import STAGES, TrainingState

STAGE = "shared_head"
# Its index in the recipe (seeds its sample stream), after STAGES.
STAGE_INDEX = len(STAGES)


def trained_steps(summary: dict | None) -> int:
    """Shared-head steps a run's summary records (0 when it has none)."""
    return int(((summary or {}).get("steps") or {}).get(STAGE, 0))


def train_shared_head(
    run_dir,
    data,
    steps: int,
    *,
    view: str | None = None,
    progress: bool = True,
    eval_crops: int = 1024,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains (or resumes, or extends) the shared head of a complete run to ``steps`` steps.

    Args:
      run_dir: a complete run directory (training.run_dir.load_run reads it).
      data: its dataset (path or DataSource); the run's class list is used.
      steps: the stage's target, >= 1 (TrainConfig.shared_head_steps).
      view: TrainConfig.shared_head_view for this call; None keeps the run's.
      eval_crops: validation crops for the head's accuracy in the summary; 0 skips.
    Returns:
      the updated summary dict (also written to run_dir/summary.json).
    Raises:
      ValueError: steps < 1 (naming the config field), an incomplete run.
      FloatingPointError: the loss became NaN or infinite.
    """
    if int(steps) < 1:
        raise ValueError(f"config field 'shared_head_steps': must be >= 1 here, got {steps}")
    log = log or (lambda msg: print(msg, flush=True))
    run_dir = pathlib.Path(run_dir)
    arts = rd.load_run(run_dir)
    train_cfg = dataclasses.replace(arts.config.train, shared_head_steps=int(steps))
    if view is not None:
        train_cfg = dataclasses.replace(train_cfg, shared_head_view=view)
    cfg = dataclasses.replace(arts.config, train=train_cfg).validate()
    source = open_source(data, class_names=arts.class_names)

    keras_seed = cfg.train.seed + STAGE_INDEX
    tf.keras.utils.set_random_seed(keras_seed)
    head = build_class_head(cfg.model, localizer_trunk(arts.localizer).output.shape[1:])
    trainer = build_head_trainer(arts.localizer, head)
    optimizer = make_optimizer(cfg.train)
    optimizer.build(trainer.trainable_variables)
    state = TrainingState.of(
        {STAGE: trainer},
        {STAGE: optimizer},
        run_dir / rd.CHECKPOINTS / STAGE,
        checkpointed={STAGE: head},
    )
    if not state.restore_latest(log):
        copied = init_head_from_classifier(head, arts.classifier)
        log(f"shared head initialised from the classifier: {', '.join(copied) or 'nothing'}")
    if state.step(STAGE) < steps:  # asked for more than an earlier call trained
        state.done[STAGE].assign(False)
    plan = StagePlan(
        name=STAGE,
        index=STAGE_INDEX,
        target=int(steps),
        deadline=None,
        dataset_fn=functools.partial(source.classifier_dataset, view=cfg.train.shared_head_view),
        example_loss=classifier_example_loss,
        log_dir=run_dir / rd.LOGS / STAGE,
    )
    ctx = RunContext(cfg, tf.distribute.get_strategy(), True, progress, log)
    report = run_stage(plan, state, ctx)
    rd.atomic_save_model(head, run_dir / rd.SHARED_HEAD)

    summary = rd.read_summary(run_dir) or {}
    summary.setdefault("steps", {})[STAGE] = state.step(STAGE)
    summary.setdefault("target_steps", {})[STAGE] = int(steps)
    if report.samples_per_s is not None:
        summary.setdefault("samples_per_s", {})[STAGE] = report.samples_per_s
    if eval_crops > 0 and source.has_split("val"):
        from dnet_tf.training.train import EVAL_BATCH, EVAL_SEED  # the run's held-out crops

        n_batches = max(1, math.ceil(eval_crops / EVAL_BATCH))
        tf.random.set_seed(EVAL_SEED)
        cls_ds = source.classifier_dataset(
            "val", cfg, EVAL_BATCH, EVAL_SEED, view=cfg.train.shared_head_view
        )
        summary["val_shared_head"] = evaluate_classifier(trainer, cls_ds, n_batches)
        c = summary["val_shared_head"]
        log(
            f"  val shared-head accuracy: {c['accuracy']:.3f} (background "
            f"{c['background_accuracy']:.3f}, objects {c['object_accuracy']:.3f}, n={c['num']})"
        )
    rd.atomic_write_text(run_dir / rd.CONFIG, cfg.to_json() + "\n")
    rd.atomic_write_json(run_dir / rd.SUMMARY, summary)
    return summary
