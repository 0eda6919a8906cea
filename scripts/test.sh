#!/usr/bin/env bash
# Runs the default test suite (slow tests excluded; add `-m slow` to run them), then the Beam
# pipeline's tests in their own environment.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# Lint and format first (ruff, configured in pyproject.toml): a failure names the file and line.
python -m ruff check --quiet .
python -m ruff format --check --quiet .
python -m pytest -q "$@"
# The default run also runs the Beam pipeline's tests in their own environment (test_beam.sh).
if [ "$#" -eq 0 ]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/test_beam.sh"
fi
