"""Training command: the paper's recipe over a resumable run directory.

  python -m dnet_tf.training.cli --run_dir runs/x --data data/synthetic
      [--config paper|mobilenet_v3_small|paper_full|...]
      [--classifier_steps N --localizer_steps N --batch_size B --seed S]
      [--time_budget_s T] [--backbone NAME --head dense|conv --width W --input_size S --mask_size D]
      [--init_weights imagenet|RUN_DIR|FILE.keras|FILE.weights.h5]

Started again with the same command after a crash or a kill, it resumes from the latest
checkpoint; on a finished run it only reports that the run is complete. Without --config, a run
directory that already has a config.json resumes with it. Exit status: 0 on success, 2 on bad
arguments or data (the message names the problem).

Thin over dnet_tf.training.train.train.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

from absl import flags

from dnet_tf.config import NAMED_CONFIGS, DetectorConfig, named_config
from dnet_tf.constants import VOC_CLASSES
from dnet_tf.core import policy
from dnet_tf.training import distribute

# Own FlagValues, not absl's global one: other commands of the package define flags of the same
# names (--run_dir, --data), and a process (a test run) may import several of them.
FLAGS = flags.FlagValues()
_F = {"flag_values": FLAGS}
flags.DEFINE_string(
    "run_dir", None, "Run directory (created if needed; resumed if it exists).", **_F
)
flags.DEFINE_string("data", "data/synthetic", "VOC root folder or TFRecord glob.", **_F)
flags.DEFINE_enum(
    "source",
    "pipeline",
    ["pipeline", "toy"],
    "'pipeline': read --data with dnet_tf.data; 'toy': in-memory rectangles "
    "(no files; for smoke tests and throughput checks).",
    **_F,
)
flags.DEFINE_enum(
    "on_error",
    "fail",
    ["fail", "skip"],
    "A bad annotation or image file: stop naming the file (fail), or drop that image with a "
    "warning and count it in summary.json (skip).",
    **_F,
)
flags.DEFINE_string(
    "classes",
    None,
    "Class list: comma-separated names, or 'voc' for the 20 Pascal VOC classes; "
    "default: the run directory's class_names.txt, else the sorted names in the "
    "data.",
    **_F,
)
flags.DEFINE_enum(
    "config",
    None,
    sorted(NAMED_CONFIGS),
    "Named config; default: the run directory's config.json, else 'paper'.",
    **_F,
)
flags.DEFINE_integer(
    "classifier_steps", None, "Classifier-stage steps (TrainConfig).", lower_bound=0, **_F
)
flags.DEFINE_integer(
    "localizer_steps", None, "Localizer-stage steps (TrainConfig).", lower_bound=0, **_F
)
flags.DEFINE_integer(
    "shared_head_steps",
    None,
    "Steps of the optional third stage, a class head on the localizer's trunk (TrainConfig); "
    "can be added to a complete run.",
    lower_bound=0,
    **_F,
)
flags.DEFINE_enum(
    "shared_head_view",
    None,
    list(policy.CLASSIFIER_VIEWS),
    "What the shared head's training crops show of each labelled box: the box, or its "
    "refinement crop as at inference (TrainConfig).",
    **_F,
)
flags.DEFINE_integer("batch_size", None, "Global batch size (TrainConfig).", lower_bound=1, **_F)
flags.DEFINE_integer("seed", None, "Random seed (TrainConfig).", lower_bound=0, **_F)
flags.DEFINE_float("learning_rate", None, "Learning rate (TrainConfig).", **_F)
flags.DEFINE_enum("optimizer", None, ["adagrad", "adam", "sgd"], "Optimizer (TrainConfig).", **_F)
flags.DEFINE_integer(
    "steps_per_checkpoint", None, "Steps between checkpoints (TrainConfig).", lower_bound=1, **_F
)
flags.DEFINE_string("backbone", None, "Backbone (ModelConfig): paper or mobilenet_v3_small.", **_F)
flags.DEFINE_enum("head", None, ["dense", "conv"], "Mask head (ModelConfig).", **_F)
flags.DEFINE_float("width", None, "Channel multiplier (ModelConfig).", **_F)
flags.DEFINE_integer("input_size", None, "Network input side in px (ModelConfig).", **_F)
flags.DEFINE_integer("mask_size", None, "Mask side d (ModelConfig).", **_F)
flags.DEFINE_float(
    "time_budget_s", None, "Cap on training wall time over all restarts, seconds.", **_F
)
flags.DEFINE_enum(
    "strategy",
    "auto",
    list(distribute.STRATEGIES),
    "tf.distribute strategy; 'auto' uses TF_CONFIG when it lists several workers.",
    **_F,
)
flags.DEFINE_integer(
    "eval_crops", 1024, "Validation crops for the end-of-run summary; 0 skips.", lower_bound=0, **_F
)
flags.DEFINE_bool("progress", True, "Show a progress bar.", **_F)
flags.DEFINE_string(
    "init_weights",
    None,
    "Pretrained weights for a fresh run's classifier trunk (and so the localizer's): "
    "'imagenet' (backbones keras.applications has weights for), an earlier run directory, "
    "a .keras model or a trunk's .weights.h5 file. Ignored when resuming.",
    **_F,
)

_TRAIN_FLAGS = (
    "classifier_steps",
    "localizer_steps",
    "shared_head_steps",
    "shared_head_view",
    "batch_size",
    "seed",
    "learning_rate",
    "optimizer",
    "steps_per_checkpoint",
)
_MODEL_FLAGS = ("backbone", "head", "width", "input_size", "mask_size")


def config_from_flags(stored: DetectorConfig | None) -> DetectorConfig:
    """The named (or stored, or paper) config with the explicitly given flags applied."""
    if FLAGS.config:
        cfg = named_config(FLAGS.config)
    elif stored is not None:
        cfg = stored
    else:
        cfg = named_config("paper")
    train_over = {k: getattr(FLAGS, k) for k in _TRAIN_FLAGS if getattr(FLAGS, k) is not None}
    model_over = {k: getattr(FLAGS, k) for k in _MODEL_FLAGS if getattr(FLAGS, k) is not None}
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **train_over),
        model=dataclasses.replace(cfg.model, **model_over),
    )


def class_names_from_flag(value: str | None):
    """--classes -> tuple of names, or None when not given."""
    if value is None or not value.strip():
        return None
    if value.strip() == "voc":
        return VOC_CLASSES
    names = tuple(n.strip() for n in value.split(","))
    if any(not n for n in names):
        raise ValueError(f"--classes {value!r}: empty class name")
    return names


def main(argv) -> int:
    """Runs the command on already-parsed FLAGS; returns the exit status."""
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        return 2
    if not FLAGS.run_dir:
        print("error: --run_dir is required", file=sys.stderr)
        return 2
    try:
        # The strategy first: MultiWorkerMirroredStrategy must exist before other TF ops run.
        strategy = distribute.make_strategy(FLAGS.strategy)
        from dnet_tf.training import run_dir as rd
        from dnet_tf.training.sources import PipelineSource, ToySource
        from dnet_tf.training.train import train

        run_dir = pathlib.Path(FLAGS.run_dir)
        stored = rd.read_config(run_dir / rd.CONFIG) if (run_dir / rd.CONFIG).is_file() else None
        cfg = config_from_flags(stored)
        names = class_names_from_flag(FLAGS.classes)
        if names is None and (run_dir / rd.CLASS_NAMES).is_file():
            names = rd.read_class_names(run_dir / rd.CLASS_NAMES)
        if FLAGS.source == "toy":
            data = ToySource(class_names=names or ("a", "b"))
        else:
            if not pathlib.Path(FLAGS.data).exists() and not any(c in FLAGS.data for c in "*?["):
                raise FileNotFoundError(
                    f"--data {FLAGS.data}: no such folder or file (generate the "
                    "embedded dataset with: python -m dnet_tf.data.cli "
                    "make-synthetic --out data/synthetic)"
                )
            data = PipelineSource(FLAGS.data, class_names=names, on_error=FLAGS.on_error)
        train(
            run_dir,
            data,
            cfg,
            strategy=strategy,
            time_budget_s=FLAGS.time_budget_s,
            progress=FLAGS.progress,
            eval_crops=FLAGS.eval_crops,
            init_weights=FLAGS.init_weights,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(argv=None) -> None:
    """Console-script entry point (dnet-train): parses the flags, runs, exits with the status."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "-help") for a in argv[1:]):
        print(__doc__)
        print(FLAGS.get_help())
        sys.exit(0)
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(rest))


if __name__ == "__main__":
    run()
