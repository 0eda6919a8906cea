"""Thin entry point: training run directory -> <base_path>/<name>/<version>/ SavedModel.

    python export/export_saved_model.py --run_dir runs/default --base_path models --name dnet
(the logic lives in dnet_tf.export.saved_model; see --help for the flags).
"""

from dnet_tf.export.cli import run

if __name__ == "__main__":
    run()
