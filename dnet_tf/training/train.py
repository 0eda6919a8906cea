"""train(run_dir, data, cfg): the paper's two-stage recipe over a resumable run directory.

Stages: (1) the classifier, ``cfg.train.classifier_steps`` steps on classifier crops;
(2) the localizer, its trunk (and embedding) copied from the classifier at its step 0, then
``cfg.train.localizer_steps`` steps on the weighted mask loss, all layers trained; (3) only when
``cfg.train.shared_head_steps`` > 0, after the run is complete: a class head on the localizer's
frozen trunk (training.shared_head), which can also be added to a finished run later.

Resumability: both models, both optimizers and the step counters live in one
tf.train.Checkpoint saved every ``steps_per_checkpoint`` steps and at the end of each stage
(CheckpointManager writes the checkpoint files first and the index last, so a kill mid-save
leaves the previous checkpoint in force). Started again with the same arguments, a killed run
restores the latest checkpoint and runs to the same final step counts. The run's files are
written atomically (run_dir.atomic_*), summary.json last; a run whose summary says complete is
not trained again.

Reproducibility: cfg.train.seed fixes the initial weights, dropout and the sample stream. A run
resumed at step k draws its samples from a stream seeded by (seed, stage, k): deterministic, but
not the stream an uninterrupted run would have continued with (tf.data iterator state is not
checkpointed, since the pipeline's state would be large and source-dependent).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable

import tensorflow as tf

from dnet_tf.config import DetectorConfig
from dnet_tf.training import distribute, tb
from dnet_tf.training import run_dir as rd
from dnet_tf.training.metrics import evaluate_classifier, evaluate_localizer
from dnet_tf.training.recipe import (
    classifier_example_loss,
    init_localizer_from_classifier,
    localizer_example_loss,
)
from dnet_tf.training.shared_head import train_shared_head, trained_steps
from dnet_tf.training.sources import DataSource, open_source
from dnet_tf.training.stage import RunContext, StagePlan, StageReport, data_seed, run_stage
from dnet_tf.training.state import STAGES, TrainingState

__all__ = ["STAGES", "StageReport", "data_seed", "evaluate_run", "heldout_evaluation", "train"]

# Crops of the validation split are drawn with this seed whatever the training seed, so runs are
# compared on the same held-out crops.
EVAL_SEED = 2013
EVAL_BATCH = 32


# Fields a run may change when resumed: the optional stage after the two networks, which reads
# them from the run directory and leaves them as they are (training.shared_head).
RESUMABLE_CHANGES = (("train", "shared_head_steps"), ("train", "shared_head_view"))


def _config_diff(a: DetectorConfig, b: DetectorConfig) -> list:
    da, db = a.to_dict(), b.to_dict()
    out = []
    for section in sorted(set(da) | set(db)):
        for key in sorted(set(da.get(section, {})) | set(db.get(section, {}))):
            va, vb = da.get(section, {}).get(key), db.get(section, {}).get(key)
            if va != vb and (section, key) not in RESUMABLE_CHANGES:
                out.append(f"{section}.{key}: {va!r} != {vb!r}")
    return out


def resolve_config(run_dir, cfg: DetectorConfig | None, num_classes: int) -> DetectorConfig:
    """The config a run uses: ``cfg`` with model.num_classes set from the data.

    Args:
      run_dir: the run directory; its config.json (if any) must agree with ``cfg``.
      cfg: requested config, or None to use the stored one.
      num_classes: classes in the data.
    Raises:
      ValueError: no config given and none stored, or the stored config differs (fields listed).
    """
    path = pathlib.Path(run_dir) / rd.CONFIG
    stored = rd.read_config(path) if path.is_file() else None
    if cfg is None:
        if stored is None:
            raise ValueError(f"{run_dir}: no config given and no {rd.CONFIG} to resume from")
        cfg = stored
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))
    cfg.validate()
    if stored is not None:
        diff = _config_diff(stored, cfg)
        if diff:
            raise ValueError(
                f"{path} was written by a run with a different config ("
                + "; ".join(diff)
                + "). Resume with the same settings or use a new "
                "run_dir."
            )
    return cfg


def train(
    run_dir,
    data,
    cfg: DetectorConfig | None = None,
    *,
    strategy: tf.distribute.Strategy | None = None,
    time_budget_s: float | None = None,
    progress: bool = True,
    eval_crops: int = 1024,
    log: Callable[[str], None] | None = None,
    init_weights: str | None = None,
) -> dict:
    """Trains (or resumes, or reports) a run.

    Args:
      run_dir: the run directory (created if needed).
      data: VOC root folder / TFRecord glob (read by dnet_tf.data) or a DataSource.
      cfg: the DetectorConfig; None resumes with run_dir/config.json. model.num_classes is set
        from the data's class list.
      strategy: a tf.distribute strategy whose scope builds the models (default: the default
        strategy). The global batch is cfg.train.batch_size, split over the replicas.
      time_budget_s: cap on the training loops' wall time summed over restarts; each stage gets a
        share proportional to its step count and ends early when it runs out (the summary says
        so). Not supported with multi-worker training (workers could disagree on when to stop).
      progress: show a progress bar (chief only).
      eval_crops: validation crops for the end-of-run mask IoU and classifier accuracy; 0 skips.
      log: line printer (default: print on the chief).
      init_weights: pretrained weights for a fresh run's classifier trunk: "imagenet", a run
        directory or a Keras weights file (dnet_tf.training.init_weights); ignored on resume.
    Returns:
      the summary dict, also written to run_dir/summary.json.
    Raises:
      ValueError: config mismatch with an existing run, bad batch size for the replicas, budget
        with multi-worker.
      FloatingPointError: the loss became NaN or infinite (the step is named).
    """
    run_dir = pathlib.Path(run_dir)
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    if log is None:
        log = (lambda msg: print(msg, flush=True)) if chief else (lambda msg: None)
    if time_budget_s is not None and distribute.is_multi_worker(strategy):
        raise ValueError(
            "time_budget_s is not supported with multi-worker training; set step counts"
        )
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s must be > 0, got {time_budget_s}")

    source, cfg = open_run(run_dir, data, cfg)

    def shared_head_stage() -> dict:  # the optional third stage, on the run's saved networks
        return train_shared_head(
            run_dir,
            source,
            cfg.train.shared_head_steps,
            view=cfg.train.shared_head_view,
            progress=progress,
            eval_crops=eval_crops,
            log=log,
        )

    if rd.is_complete(run_dir):
        summary = rd.read_summary(run_dir)
        if chief and cfg.train.shared_head_steps > trained_steps(summary):
            return shared_head_stage()
        log(
            f"run {run_dir} is complete (classifier {summary['steps']['classifier']} steps, "
            f"localizer {summary['steps']['localizer']} steps); nothing to do"
        )
        return summary
    if chief:
        write_run_files(run_dir, source, cfg)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ValueError(
            f"config field 'batch_size': {cfg.train.batch_size} is not divisible by the "
            f"{replicas} replicas"
        )

    state = TrainingState.build(cfg, strategy, run_dir)
    if not state.restore_latest(log) and init_weights:  # a fresh run: pretrained trunk first
        from dnet_tf.training.init_weights import init_classifier_weights

        log(init_classifier_weights(state.models["classifier"], init_weights, cfg.model))
    ctx = RunContext(cfg, strategy, chief, progress, log)
    reports = {}
    for plan in stage_plans(cfg, source, run_dir, time_budget_s):
        if plan.name == "localizer" and not bool(state.done["localizer"].numpy()):
            if state.step("localizer") == 0:
                copied = init_localizer_from_classifier(
                    state.models["localizer"], state.models["classifier"]
                )
                log(f"localizer initialised from the classifier: {', '.join(copied)}")
        reports[plan.name] = run_stage(plan, state, ctx)
    summary = finish_run(run_dir, state, reports, source, cfg, ctx, eval_crops)
    if chief and cfg.train.shared_head_steps > 0:
        summary = shared_head_stage()
    return summary


def open_run(run_dir, data, cfg: DetectorConfig | None):
    """The run's data and config, checked against what the run directory already holds.

    Returns:
      (DataSource, DetectorConfig with model.num_classes from the data).
    Raises:
      ValueError: the stored class list or config differs from the data's or the given one.
    """
    run_dir = pathlib.Path(run_dir)
    stored_names = None
    if (run_dir / rd.CLASS_NAMES).is_file():
        stored_names = rd.read_class_names(run_dir / rd.CLASS_NAMES)
    source: DataSource = open_source(data, class_names=stored_names)
    if stored_names is not None and tuple(source.class_names) != stored_names:
        raise ValueError(
            f"{run_dir / rd.CLASS_NAMES} lists {list(stored_names)} but the data has "
            f"{list(source.class_names)}"
        )
    return source, resolve_config(run_dir, cfg, len(source.class_names))


def write_run_files(run_dir: pathlib.Path, source: DataSource, cfg: DetectorConfig) -> None:
    """Writes the run directory's config, class list and dataset statistics (once each)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / rd.CONFIG).is_file():
        rd.atomic_write_text(run_dir / rd.CONFIG, cfg.to_json() + "\n")
    if not (run_dir / rd.CLASS_NAMES).is_file():
        rd.write_class_names(run_dir / rd.CLASS_NAMES, source.class_names)
    if not (run_dir / rd.DATASET_STATS).is_file():
        rd.atomic_write_json(run_dir / rd.DATASET_STATS, source.dataset_stats(cfg))


def stage_plans(
    cfg: DetectorConfig, source: DataSource, run_dir: pathlib.Path, time_budget_s: float | None
) -> list[StagePlan]:
    """The recipe's two stages in order, with their step targets and time-budget deadlines.

    The budget is split in proportion to the step targets: the classifier must stop at its
    share; the localizer may use whatever is left of the whole budget.
    """
    targets = {"classifier": cfg.train.classifier_steps, "localizer": cfg.train.localizer_steps}
    total = max(1, sum(targets.values()))
    deadlines = {"classifier": None, "localizer": None}
    if time_budget_s is not None:
        deadlines = {
            "classifier": time_budget_s * targets["classifier"] / total,
            "localizer": float(time_budget_s),
        }
    losses = {"classifier": classifier_example_loss, "localizer": localizer_example_loss(cfg.loss)}
    datasets = {"classifier": source.classifier_dataset, "localizer": source.localizer_dataset}
    return [
        StagePlan(
            name=name,
            index=index,
            target=targets[name],
            deadline=deadlines[name],
            dataset_fn=datasets[name],
            example_loss=losses[name],
            log_dir=run_dir / rd.LOGS / name,
        )
        for index, name in enumerate(STAGES)
    ]


def finish_run(run_dir, state: TrainingState, reports: dict, source, cfg, ctx, eval_crops):
    """The run's summary; on the chief also the final models, the held-out evaluation and
    summary.json (written last: it marks the run complete)."""
    run_dir = pathlib.Path(run_dir)
    targets = {n: r.target_steps for n, r in reports.items()}
    summary = {
        "complete": True,
        "steps": {n: state.step(n) for n in STAGES},
        "target_steps": targets,
        "stopped_by_time_budget": any(bool(v.numpy()) for v in state.budget_stopped.values()),
        "training_wall_s": round(float(state.elapsed.numpy()), 2),
        "samples_per_s": {n: reports[n].samples_per_s for n in STAGES},
        "batch_size": cfg.train.batch_size,
        "replicas": ctx.strategy.num_replicas_in_sync,
        "data": source.describe(),
        **source.data_report(),
    }
    if not ctx.chief:
        return summary
    localizer, classifier = state.models["localizer"], state.models["classifier"]
    rd.atomic_save_model(localizer, run_dir / rd.LOCALIZER)
    rd.atomic_save_model(classifier, run_dir / rd.CLASSIFIER)
    if eval_crops > 0 and source.has_split("val"):
        summary.update(heldout_evaluation(localizer, classifier, source, cfg, eval_crops))
        total = max(1, sum(targets.values()))
        with tf.summary.create_file_writer(str(run_dir / rd.LOGS / "eval")).as_default():
            tb.scalar("val_mask_iou", summary["val_mask_iou"]["mean_iou"], step=total)
            tb.scalar("val_classifier_accuracy", summary["val_classifier"]["accuracy"], step=total)
    rd.atomic_write_json(run_dir / rd.SUMMARY, summary)
    ctx.log(format_summary(summary))
    return summary


def heldout_evaluation(
    localizer,
    classifier,
    source: DataSource,
    cfg: DetectorConfig,
    crops: int = 1024,
    split: str = "val",
) -> dict:
    """Full-mask IoU and classifier accuracy on crops of a held-out split.

    The crops depend only on (source, split, cfg, crops): the input pipeline's shuffles also
    read TensorFlow's global seed, which is therefore reset to EVAL_SEED first, so the same
    run evaluated here, at the end of training or from its run directory, scores the same crops.
    Args:
      localizer, classifier: Keras models of the run.
      crops: number of crops for each network (rounded up to a multiple of EVAL_BATCH).
    Returns:
      {"val_mask_iou": MaskIoU dict, "val_classifier": accuracy dict, "eval_crops": int}.
    """
    n_batches = max(1, math.ceil(crops / EVAL_BATCH))
    tf.random.set_seed(EVAL_SEED)
    loc_ds = source.localizer_dataset(split, cfg, EVAL_BATCH, EVAL_SEED)
    out = {"val_mask_iou": evaluate_localizer(localizer, loc_ds, n_batches).to_dict()}
    tf.random.set_seed(EVAL_SEED)
    cls_ds = source.classifier_dataset(split, cfg, EVAL_BATCH, EVAL_SEED)
    out["val_classifier"] = evaluate_classifier(classifier, cls_ds, n_batches)
    out["eval_crops"] = n_batches * EVAL_BATCH
    return out


def evaluate_run(run_dir, data=None, crops: int = 1024) -> dict:
    """heldout_evaluation of a finished run directory (the same crops as its summary.json).

    Args:
      run_dir: a complete run directory.
      data: its dataset (path or DataSource); the run's class list is used.
    """
    arts = rd.load_run(run_dir)
    source = open_source(data, class_names=arts.class_names)
    return heldout_evaluation(arts.localizer, arts.classifier, source, arts.config, crops)


def format_summary(summary: dict) -> str:
    """Human-readable end-of-run summary (the CLI prints it)."""
    lines = [
        f"training complete: classifier {summary['steps']['classifier']} steps, localizer "
        f"{summary['steps']['localizer']} steps, {summary['training_wall_s']} s of training"
        + (" (stopped by the time budget)" if summary.get("stopped_by_time_budget") else "")
    ]
    sps = summary.get("samples_per_s", {})
    lines.append(
        "  throughput (samples/s, this process): " + ", ".join(f"{k} {v}" for k, v in sps.items())
    )
    if "val_mask_iou" in summary:
        m = summary["val_mask_iou"]
        lines.append(
            f"  val full-mask IoU: {m['mean_iou']:.3f} over {m['num_positive']} positive "
            f"(crop, class) pairs; false-positive rate {m['false_positive_rate']:.3f} over "
            f"{m['num_negative']} negative pairs"
        )
    if "val_classifier" in summary:
        c = summary["val_classifier"]
        lines.append(
            f"  val classifier accuracy: {c['accuracy']:.3f} (background "
            f"{c['background_accuracy']:.3f}, objects {c['object_accuracy']:.3f}, n={c['num']})"
        )
    return "\n".join(lines)
