#!/usr/bin/env bash
# The Beam batch pipeline's tests, in their own environment .venv-beam (made once, reused):
# apache-beam caps protobuf below 7, while the serving stack's generated code (grpc health
# checking, TF Serving's APIs) needs protobuf 7, so the two cannot share one environment.
DNET_VENV=.venv-beam DNET_EXTRAS=beam DNET_INSTALL="pytest>=8,<10" \
  source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -c "import apache_beam" || { echo "apache-beam did not install in .venv-beam" >&2; exit 1; }
exec python -m pytest -q tests/test_batch_beam.py "$@"
