"""Detect on image files with an exported model or a run directory; writes JSON and PNGs.

python -m dnet_tf.inference.cli --model models/dnet --out detections/ img1.jpg img2.png
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", None, "SavedModel version dir, model dir (newest version) or run directory."
)
flags.DEFINE_string("out", "detections", "Directory for <image>.json and <image>.png.")
flags.DEFINE_bool("draw", True, "Write a PNG with the boxes drawn next to each JSON.")
flags.mark_flag_as_required("model")


def main(argv):
    from dnet_tf.inference.detector import load_detector

    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image files after the flags")
    detector = load_detector(FLAGS.model)
    try:
        results = detector.detect_files(paths, out_dir=FLAGS.out, draw=FLAGS.draw)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for res in results:
        print(res.detections.to_json(indent=None))
    print(f"wrote {len(results)} JSON/PNG pair(s) to {FLAGS.out}", file=sys.stderr)
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
