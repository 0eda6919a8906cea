#!/usr/bin/env bash
# The main job on the embedded default dataset.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m dnet_tf.main "$@"
