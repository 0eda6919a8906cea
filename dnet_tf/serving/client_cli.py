"""Command-line client for the detector behind TF Serving or the local server.

    python -m dnet_tf.serving.client_cli predict street.jpg park.png \
        [--server localhost:8500 | --rest_url http://localhost:8501] [--model_name dnet] \
        [--version 3 | --version_label stable] [--min_score 0.3] [--json out.json] [--draw_dir out/]
    python -m dnet_tf.serving.client_cli metadata [--server ...]
    python -m dnet_tf.serving.client_cli status   [--server ...]

``predict`` prints the detections (class names, scores, pixel boxes ymin/xmin/ymax/xmax) as JSON;
with --draw_dir it also writes <image stem>.detections.png with the boxes drawn. Exit code 0 on
success, 1 when the server answered with an error (its status code is printed), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

from google.protobuf import json_format

from dnet_tf.core.detections import to_json
from dnet_tf.serving.client import (
    DEFAULT_SIGNATURE,
    DetectorClient,
    RestDetectorClient,
    RetryPolicy,
    ServingCallError,
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--server", default="localhost:8500", help="gRPC host:port (default localhost:8500)"
    )
    where.add_argument(
        "--rest_url", help="use REST at this base URL instead, e.g. http://localhost:8501"
    )
    common.add_argument("--model_name", default="dnet", help="model name (default dnet)")
    which = common.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: the newest served)")
    which.add_argument("--version_label", help="model version label, e.g. stable")
    common.add_argument(
        "--signature_name", default=DEFAULT_SIGNATURE, help="signature (default serving_default)"
    )
    common.add_argument(
        "--timeout", type=float, default=30.0, help="deadline of each call, seconds (default 30)"
    )
    common.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries after UNAVAILABLE, with exponential backoff (default 3)",
    )
    p = argparse.ArgumentParser(
        prog="dnet-client",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", parents=[common], help="detect objects in images")
    pred.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, BMP)")
    pred.add_argument(
        "--min_score", type=float, default=0.0, help="leave out detections below this score"
    )
    pred.add_argument("--json", dest="json_path", help="also write the JSON to this file")
    pred.add_argument(
        "--draw_dir", help="write <stem>.detections.png with boxes drawn into this directory"
    )
    sub.add_parser(
        "metadata", parents=[common], help="print the served signatures (GetModelMetadata)"
    )
    sub.add_parser(
        "status", parents=[common], help="print the model's version states (GetModelStatus)"
    )
    return p


def make_client(args):
    retry = RetryPolicy(max_attempts=max(1, args.retries + 1))
    kwargs = dict(
        model_name=args.model_name,
        version=args.version,
        version_label=args.version_label,
        signature_name=args.signature_name,
        timeout_s=args.timeout,
        retry=retry,
    )
    if args.rest_url:
        return RestDetectorClient(args.rest_url, **kwargs)
    return DetectorClient(args.server, **kwargs)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dnet-client``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with make_client(args) as client:
            if args.command == "predict":
                results = client.detect(args.images, min_score=args.min_score)
                text = to_json(results)
                print(text)
                if args.json_path:
                    pathlib.Path(args.json_path).write_text(text + "\n")
                if args.draw_dir:
                    out_dir = pathlib.Path(args.draw_dir)
                    out_dir.mkdir(parents=True, exist_ok=True)
                    for path, result in zip(args.images, results):
                        target = out_dir / f"{pathlib.Path(path).stem}.detections.png"
                        target.write_bytes(result.draw(pathlib.Path(path).read_bytes()))
                        print(f"wrote {target}", file=sys.stderr)
            elif args.command == "metadata":
                sigs = client.get_model_metadata()
                print(
                    json.dumps(
                        {
                            k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                            for k, v in sorted(sigs.items())
                        },
                        indent=2,
                    )
                )
            else:
                print(json.dumps(client.get_model_status(), indent=2))
    except ServingCallError as e:
        print(f"dnet-client: server error {e.code.name}: {e.details}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        print(f"dnet-client: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
