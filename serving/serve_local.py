"""Runs the local model server with this repository's serving configs.

    python serving/serve_local.py [--model_base_path models/dnet] [extra server flags...]

Equivalent to ``python -m dnet_tf.serving.server_cli --model_name dnet --port 8500
--rest_api_port 8501 --enable_batching --batching_parameters_file serving/batching_parameters.txt
--monitoring_config_file serving/monitoring.config --model_base_path models/dnet``; flags given
here are appended and win over these defaults.
"""

import pathlib
import sys

from dnet_tf.serving.server_cli import run

HERE = pathlib.Path(__file__).resolve().parent
DEFAULTS = [
    "--model_name",
    "dnet",
    "--port",
    "8500",
    "--rest_api_port",
    "8501",
    "--model_base_path",
    str(HERE.parent / "models" / "dnet"),
    "--enable_batching",
    "--batching_parameters_file",
    str(HERE / "batching_parameters.txt"),
    "--monitoring_config_file",
    str(HERE / "monitoring.config"),
]

if __name__ == "__main__":
    sys.exit(run(DEFAULTS + sys.argv[1:]))
