"""python -m dnet_tf.batch: detections for every image of a glob or TFRecord set, on Beam.

    python -m dnet_tf.batch --model models/dnet --input_glob 'photos/*.jpg' --output out/
    python -m dnet_tf.batch --model gs://b/models/dnet/3 --input_tfrecord 'gs://b/val-*' \\
        --output gs://b/dets/ --runner DataflowRunner --project P --region R --temp_location ...

Every other flag is one of Beam's standard PipelineOptions, so any runner (DirectRunner,
DataflowRunner, FlinkRunner, SparkRunner ...) runs it unchanged. Without --runner it runs on the
DirectRunner in multi_processing mode with one worker per CPU (--direct_num_workers to change).
Prints the job's counters as one JSON object when it ends.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from dnet_tf.batch.pipeline import NAMESPACE, build_pipeline


class DetectOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--model", required=True, help="SavedModel version or model dir")
        parser.add_argument("--input_glob", help="image files (JPEG/PNG/GIF/BMP), a glob")
        parser.add_argument("--input_tfrecord", help="TF OD API TFRecord files, a glob")
        parser.add_argument("--output", required=True, help="output prefix (dir/ or dir/name-)")
        parser.add_argument("--batch_size", type=int, default=8, help="images per model call")
        parser.add_argument("--min_score", type=float, default=0.0)
        parser.add_argument(
            "--write_tfrecord",
            action="store_true",
            help="also write TFRecords with the TF OD API detection keys",
        )
        parser.add_argument("--max_image_bytes", type=int, default=64 << 20)
        parser.add_argument("--num_shards", type=int, default=0, help="0: the runner chooses")


def default_args(argv: Sequence[str]) -> list[str]:
    """argv with the local defaults added: the DirectRunner, multi-process, a worker per CPU."""
    argv = list(argv)
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    if "--runner" not in given:
        argv.append("--runner=DirectRunner")
        if "--direct_running_mode" not in given:
            argv.append("--direct_running_mode=multi_processing")
        if "--direct_num_workers" not in given:
            argv.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return argv


def run(argv: Sequence[str] | None = None) -> dict:
    """Runs the job to completion; returns {counter name: value} of the namespace's counters."""
    options = PipelineOptions(default_args(sys.argv[1:] if argv is None else argv))
    opts = options.view_as(DetectOptions)
    if (opts.input_glob is None) == (opts.input_tfrecord is None):
        raise SystemExit("error: give exactly one of --input_glob and --input_tfrecord")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        opts.model,
        opts.output,
        input_glob=opts.input_glob,
        input_tfrecord=opts.input_tfrecord,
        batch_size=opts.batch_size,
        min_score=opts.min_score,
        write_tfrecord=opts.write_tfrecord,
        max_image_bytes=opts.max_image_bytes,
        num_shards=opts.num_shards,
    )
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    counters: dict[str, int] = {}
    for c in query["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(c.committed or 0)
    return counters


def main() -> int:
    print(json.dumps(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
