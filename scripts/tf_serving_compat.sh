#!/usr/bin/env bash
# Which TensorFlow (so TF Serving) releases load an export: for each version, installs
# tensorflow-cpu==VERSION into a throwaway directory under $COMPAT_DIR (default
# /tmp/tf-serving-compat; pip --target, no dependencies, nothing else touched)
# and runs dnet_tf.export.c_api_loader with that release's libtensorflow_cc.so.2 (the C++
# LoadSavedModel TF Serving X.Y is built on): load, warm-up replay, the given images as one batch,
# undecodable bytes -> INVALID_ARGUMENT. Each release's outputs are compared with those of the
# TensorFlow installed for the project's own Python (the reference).
#
#   scripts/tf_serving_compat.sh MODEL_VERSION_DIR [IMAGE ...] -- 2.20.0 2.19.0 2.18.0
#
# The loader runs under the project's Python (PYTHON, default python3), which supplies the
# generated protos and NumPy; only the C libraries come from each release. Prints one line per
# release and writes $COMPAT_DIR/results.json. Set CLEAN=1 to delete each install after its run.
set -euo pipefail

PYTHON=${PYTHON:-python3}
COMPAT_DIR=${COMPAT_DIR:-/tmp/tf-serving-compat}
model=${1:?usage: $0 MODEL_VERSION_DIR [IMAGE ...] -- VERSION ...}
shift
images=()
while [[ $# -gt 0 && "$1" != "--" ]]; do images+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || { echo "no versions given after --" >&2; exit 2; }
mkdir -p "$COMPAT_DIR"
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=3

run_loader() {  # run_loader NAME [--tf_lib_dir DIR]
  local name=$1; shift
  "$PYTHON" -m dnet_tf.export.c_api_loader --model "$model" --check_bad_bytes \
    --save_outputs "$COMPAT_DIR/$name.npz" "$@" "${images[@]}" \
    > "$COMPAT_DIR/$name.json" 2> "$COMPAT_DIR/$name.log"
}

run_loader reference || { echo "reference run failed, see $COMPAT_DIR/reference.log" >&2; exit 1; }
for v in "${versions[@]}"; do
  site="$COMPAT_DIR/tf-$v"
  rm -f "$COMPAT_DIR/tf-$v.json" "$COMPAT_DIR/tf-$v.npz"
  if [[ ! -f "$site/.installed" ]]; then
    rm -rf "$site"
    # --no-deps: only the wheel's C libraries are used; --target keeps it out of every env.
    # WHEEL_PYTHON=3.10 fetches the wheel built for that Python: releases older than the
    # project's Python have none for it, and the C libraries do not depend on the interpreter.
    wheel_py=()
    [[ -n "${WHEEL_PYTHON:-}" ]] && wheel_py=(--python-version "$WHEEL_PYTHON" --only-binary=:all:)
    if ! "$PYTHON" -m pip install -q --no-deps --target "$site" "${wheel_py[@]}" "tensorflow-cpu==$v" \
        > "$COMPAT_DIR/tf-$v.install.log" 2>&1; then
      echo "tensorflow-cpu==$v: not installable, see $COMPAT_DIR/tf-$v.install.log" >&2; continue
    fi
    touch "$site/.installed"
  fi
  run_loader "tf-$v" --tf_lib_dir "$site/tensorflow" || true  # the summary below tells
  if [[ "${CLEAN:-0}" == 1 ]]; then rm -rf "$site"; fi
done

"$PYTHON" - "$COMPAT_DIR" "${versions[@]}" <<'PY'
import json, pathlib, sys
import numpy as np
out = pathlib.Path(sys.argv[1]); versions = sys.argv[2:]
ref = json.loads((out / "reference.json").read_text())
ref_arrays = np.load(out / "reference.npz", allow_pickle=True) if (out / "reference.npz").exists() else None
rows = []
for v in versions:
    rep_path = out / f"tf-{v}.json"
    row = {"requested": v, "loaded": False}
    text = rep_path.read_text().strip() if rep_path.exists() else ""
    if text:
        rep = json.loads(text.splitlines()[-1])
        row.update(loaded=True, tf_version=rep["tf_version"], warmup_records=rep["warmup_records"],
                   bad_bytes_code=rep.get("bad_bytes_code"))
        npz = out / f"tf-{v}.npz"
        if ref_arrays is not None and npz.exists():
            got = np.load(npz, allow_pickle=True)
            diffs = [float(np.max(np.abs(got[k].astype(float) - ref_arrays[k].astype(float))))
                     for k in ref_arrays.files if ref_arrays[k].dtype != object]
            row["max_abs_diff_vs_reference"] = max(diffs, default=0.0)
            row["class_names_equal"] = all((got[k] == ref_arrays[k]).all()
                                           for k in ref_arrays.files if ref_arrays[k].dtype == object)
    else:
        log = out / f"tf-{v}.log"
        lines = [l for l in log.read_text().splitlines() if l.strip()] if log.exists() else []
        row["error"] = next((l for l in reversed(lines) if "Error" in l or "TF_Code" in l),
                            lines[-1] if lines else "not run")[:400]
    rows.append(row)
    print(json.dumps(row))
(out / "results.json").write_text(json.dumps({"reference_tf": ref["tf_version"], "releases": rows}, indent=2))
PY
