"""One stage of the recipe (classifier or localizer): its training loop over a TrainingState."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from dnet_tf.config import DetectorConfig
from dnet_tf.training import tb
from dnet_tf.training.recipe import classifier_example_loss, make_train_step
from dnet_tf.training.state import TrainingState


@dataclasses.dataclass
class StageReport:
    """What one stage did in this process."""

    name: str
    start_step: int
    end_step: int
    target_steps: int
    stopped_by_time_budget: bool = False
    samples_per_s: float | None = None  # steady state, first (tracing) step excluded
    last_loss: float | None = None


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """What a stage trains and until when.

    Attributes:
      name: "classifier" or "localizer"; index: its position in the recipe (seeds the data).
      target: steps to reach; deadline: training seconds (summed over restarts) after which it
        stops early, or None.
      dataset_fn: (split, cfg, batch, seed) -> tf.data.Dataset of (images, targets).
      example_loss: per-example loss of the stage.
      log_dir: its TensorBoard folder.
    """

    name: str
    index: int
    target: int
    deadline: float | None
    dataset_fn: Callable
    example_loss: Callable
    log_dir: pathlib.Path


@dataclasses.dataclass(frozen=True)
class RunContext:
    """How the run is executed: config, strategy, whether this worker is the chief, output."""

    cfg: DetectorConfig
    strategy: tf.distribute.Strategy
    chief: bool
    progress: bool
    log: Callable[[str], None]


def outputs_classes(plan: StagePlan) -> bool:
    """Whether the stage's model gives class probabilities (its accuracy is logged)."""
    return plan.example_loss is classifier_example_loss


def data_seed(seed: int, stage: int, start_step: int) -> int:
    """Seed of the sample stream of a stage entered at start_step (31-bit, deterministic)."""
    return int(np.random.SeedSequence([seed, stage, start_step]).generate_state(1)[0] % 2**31)


def run_stage(plan: StagePlan, state: TrainingState, ctx: RunContext) -> StageReport:
    """Trains ``plan.name``'s model from its checkpointed step to the target or the deadline.

    Checkpoints every ``cfg.train.steps_per_checkpoint`` steps and at the end; marks the stage
    done (and budget-stopped when the deadline ended it).
    Raises:
      FloatingPointError: the loss became NaN or infinite (the step is named).
    """
    cfg, name = ctx.cfg, plan.name
    step_var, elapsed = state.steps[name], state.elapsed
    start = int(step_var.numpy())
    report = StageReport(name=name, start_step=start, end_step=start, target_steps=plan.target)
    if bool(state.done[name].numpy()):
        return report
    batch = cfg.train.batch_size
    seed = data_seed(cfg.train.seed, plan.index, start)

    def dataset_for_replica(input_ctx: tf.distribute.InputContext):
        return plan.dataset_fn(
            "train",
            cfg,
            input_ctx.get_per_replica_batch_size(batch),
            seed + input_ctx.input_pipeline_id,
        )

    iterator = iter(ctx.strategy.distribute_datasets_from_function(dataset_for_replica))
    step_fn = make_train_step(
        ctx.strategy, state.models[name], state.optimizers[name], plan.example_loss, batch
    )
    if ctx.chief:
        writer = tf.summary.create_file_writer(str(plan.log_dir))
    else:
        writer = tf.summary.create_noop_writer()
    bar = tqdm(
        total=plan.target,
        initial=start,
        desc=name,
        unit="step",
        mininterval=1.0,
        disable=not (ctx.progress and ctx.chief),
    )
    elapsed0, t0 = float(elapsed.numpy()), time.perf_counter()
    timed_steps, timed_s = 0, 0.0
    step = start
    with writer.as_default():
        while step < plan.target:
            if plan.deadline is not None and elapsed0 + time.perf_counter() - t0 >= plan.deadline:
                report.stopped_by_time_budget = True
                state.budget_stopped[name].assign(True)
                ctx.log(f"{name}: time budget reached at step {step} of {plan.target}")
                break
            ts = time.perf_counter()
            loss, correct = step_fn(iterator)
            loss = float(loss)
            dt = time.perf_counter() - ts
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{name} loss is {loss} at step {step + 1}; lower "
                    "train.learning_rate or check the data"
                )
            step += 1
            step_var.assign(step)
            if step > start + 1:  # the first step traces the graph
                timed_steps, timed_s = timed_steps + 1, timed_s + dt
            report.last_loss = loss
            if step % cfg.train.steps_per_log == 0 or step == plan.target:
                tb.scalar("loss", loss, step=step)
                if outputs_classes(plan):
                    tb.scalar("accuracy", float(correct) / batch, step=step)
                if timed_s > 0:
                    tb.scalar("samples_per_s", timed_steps * batch / timed_s, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if step % cfg.train.steps_per_checkpoint == 0 and step < plan.target:
                elapsed.assign(elapsed0 + time.perf_counter() - t0)
                state.save()
    bar.close()
    elapsed.assign(elapsed0 + time.perf_counter() - t0)
    state.done[name].assign(True)
    state.save()
    report.end_step = step
    if timed_s > 0:
        report.samples_per_s = round(timed_steps * batch / timed_s, 2)
    if step > start:
        ctx.log(
            f"{name}: steps {start} -> {step} of {plan.target}, last loss "
            f"{report.last_loss:.4g}, {report.samples_per_s} samples/s"
        )
    return report
