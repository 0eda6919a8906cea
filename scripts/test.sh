#!/usr/bin/env bash
# Runs the default test suite (slow tests excluded; add `-m slow` to run them).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -q "$@"
