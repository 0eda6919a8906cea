"""The paper's separate classifier against the class head on the localizer's trunk, interleaved.

    python bench/shared_head.py --run runs/shared --data data/synthetic --split val \\
        --images 20 --repeats 3

The run needs shared_head.keras (TrainConfig.shared_head_steps > 0, or ``dnet_tf.training.cli
--shared_head_steps N`` on a finished run). "separate": the classifier on each first-stage box,
then the localizer on the kept ones' refinement crops (two network evaluations per candidate);
"shared": one joint forward on each refinement crop (one per candidate). Both graphs are the run
directory's, timed image by image in turn (A, B, A, B, ...); the table gives the median seconds
per image, the ratio to "separate" and the mean network evaluations per image. "coarse
refinement" is the compact configuration (``paper_coarse_refinement``: the separate classifier and
a coarser refinement search).
Writes bench/results/shared_head.json.
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.selection_latency import run  # noqa: E402

SETTINGS = {
    "separate": {"classifier": "separate"},
    "shared": {"classifier": "shared"},
    # the compact configuration's coarser refinement search (config "paper_coarse_refinement")
    "coarse refinement": {"refine_canvas": 32, "refine_stride": 2.0},
}


def main(argv=None) -> int:
    return run("shared_head", SETTINGS, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
