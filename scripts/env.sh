#!/usr/bin/env bash
# Creates (once) the virtual environment under the repo and installs the package into it.
# Sourced by the other scripts; idempotent: reinstalls only when pyproject.toml changed.
# DNET_VENV / DNET_INSTALL choose another environment and what goes into it (test_beam.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/${DNET_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
STAMP="$VENV/.dnet_tf_installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "[setup] installing dnet-tf and its dependencies (a few minutes the first time)"
  # shellcheck disable=SC2086  # DNET_INSTALL is a list of requirements
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[${DNET_EXTRAS:-dev}]" ${DNET_INSTALL:-}
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$ROOT"
