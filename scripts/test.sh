#!/usr/bin/env bash
# Runs the default test suite (slow tests excluded; add `-m slow` to run them).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# Lint and format first (ruff, configured in pyproject.toml): a failure names the file and line.
python -m ruff check --quiet .
python -m ruff format --check --quiet .
exec python -m pytest -q "$@"
