"""Export a training run as a versioned SavedModel for TF Serving.

python -m dnet_tf.export.cli --run_dir runs/default --base_path models --name dnet [--version N]
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "run_dir", None, "Training run directory (config.json, class_names.txt, *.keras)."
)
flags.DEFINE_string(
    "base_path", "models", "Model base path; the model goes to <base_path>/<name>/<version>."
)
flags.DEFINE_string("name", "dnet", "Model name, as TF Serving's --model_name.")
flags.DEFINE_integer("version", None, "Integer version; default: 1 + the newest existing version.")
flags.DEFINE_bool("overwrite", False, "Replace an existing version directory.")
flags.DEFINE_string(
    "inference_overrides",
    None,
    "JSON object of InferenceConfig fields fixed into the graph, e.g. '{\"max_detections\": 50}'.",
)
flags.mark_flag_as_required("run_dir")


def main(argv):
    del argv
    from dnet_tf.export.saved_model import export_run

    overrides = json.loads(FLAGS.inference_overrides) if FLAGS.inference_overrides else None
    try:
        path = export_run(
            FLAGS.run_dir, FLAGS.base_path, FLAGS.name, FLAGS.version, FLAGS.overwrite, overrides
        )
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
