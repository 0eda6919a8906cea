"""Thin entry point: training run directory -> TFLite networks (four variants) + report.

    python export/convert_tflite.py --run_dir runs/default --out runs/default/tflite \\
        --data data/synthetic
(the logic lives in dnet_tf.tflite; see --help for the flags).
"""

from dnet_tf.tflite.cli import run

if __name__ == "__main__":
    run()
