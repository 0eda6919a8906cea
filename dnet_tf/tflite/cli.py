"""Convert a training run's networks to TFLite and report size, error, mAP and latency per variant.

    python -m dnet_tf.tflite.cli --run_dir runs/default --out runs/default/tflite \\
        [--data data/synthetic] [--variants float32,float16,dynamic_int8,int8] \\
        [--eval_images N] [--saved_model models/dnet/1] [--nowhole_pipeline]

Writes the edge bundle (localizer_<variant>.tflite, classifier_<variant>.tflite, config.json,
class_names.txt, dataset_stats.json) and report.json / report.md into --out; see
``dnet_tf.tflite.report``. The whole-pipeline conversion attempt uses --saved_model when given,
else exports the run to a temporary directory first (it takes minutes; --nowhole_pipeline skips it).
Exit status: 0 on success, 2 on bad arguments or inputs (the message names the problem).
"""

from __future__ import annotations

import json
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "run_dir", None, "Training run directory (config.json, class_names.txt, *.keras)."
)
flags.DEFINE_string("out", None, "Output directory of the .tflite files and the report.")
flags.DEFINE_string(
    "data",
    "data/synthetic",
    "VOC dataset root: calibration (train), held-out crops (val), mAP (test).",
)
flags.DEFINE_list(
    "variants", ["float32", "float16", "dynamic_int8", "int8"], "TFLite variants to build."
)
flags.DEFINE_integer(
    "eval_images", None, "Evaluate mAP on the first N images of the split only.", lower_bound=1
)
flags.DEFINE_string("eval_split", "test", "Split for the mAP.")
flags.DEFINE_integer(
    "calibration_crops", 256, "int8 calibration crops per network (train split).", lower_bound=1
)
flags.DEFINE_integer(
    "held_out_crops",
    256,
    "Held-out crops per network for the output errors (val split).",
    lower_bound=1,
)
flags.DEFINE_integer("latency_repeats", 20, "Timed calls per latency figure.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Crop sampling seed.")
flags.DEFINE_bool(
    "whole_pipeline", True, "Also try converting the exported SavedModel's signatures whole."
)
flags.DEFINE_string(
    "saved_model",
    None,
    "SavedModel version directory for the whole-pipeline attempt "
    "(default: export the run to a temporary directory).",
)
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.mark_flag_as_required("run_dir")
flags.mark_flag_as_required("out")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from dnet_tf.config import from_flags
    from dnet_tf.tflite.report import ReportOptions, build_report

    try:
        options = from_flags(ReportOptions, FLAGS, variants=tuple(FLAGS.variants)).validate()
        with tempfile.TemporaryDirectory(prefix="dnet_tflite_export_") as tmp:
            saved_model = FLAGS.saved_model
            if FLAGS.whole_pipeline and saved_model is None:
                from dnet_tf.export.saved_model import export_run

                saved_model = str(export_run(FLAGS.run_dir, tmp, "dnet", 1))
            report = build_report(
                FLAGS.run_dir,
                FLAGS.out,
                FLAGS.data,
                options,
                whole_pipeline_saved_model=saved_model if FLAGS.whole_pipeline else None,
            )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {v: report["map"][v]["voc07_map"] for v in ["keras"] + list(options.variants)}
    print(json.dumps({"out": FLAGS.out, "voc07_map": summary}, indent=2))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
