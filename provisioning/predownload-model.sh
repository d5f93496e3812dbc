#!/bin/bash
# PROVISIONING_SCRIPT example: download the model into the Hugging Face cache before vLLM starts.
#
# The cache is HF_HOME (/workspace/.cache/huggingface in the image, on the persistent volume), so a
# restarted instance starts at once. The launcher would download the model itself; doing it here
# also fetches extra models (PRELOAD_MODELS) you plan to switch to with MODEL_NAME later.
#
#   MODEL_NAME       the served model (a hub id; a local path needs nothing)
#   PRELOAD_MODELS   more hub ids, separated by spaces or commas (optional)
#   HF_TOKEN         needed for gated or private models (set it in your Vast account's env vars)
set -euo pipefail

models="${MODEL_NAME:-Qwen/Qwen3-Reranker-0.6B} ${PRELOAD_MODELS:-}"
models="${models//,/ }"

for model in $models; do
    case "$model" in
        /* | ./* | ../* | "~"*)
            echo "$model is a local path: nothing to download"
            continue
            ;;
    esac
    echo "downloading $model into ${HF_HOME:-the default Hugging Face cache}"
    # Same file filter as the stack's own download, so the launcher finds the snapshot complete.
    python3 - "$model" <<'PY'
import os
import sys

from huggingface_hub import snapshot_download

try:
    from reranker_template.serve.download import IGNORE_PATTERNS
except ImportError:  # running outside the image: skip formats vLLM never loads
    IGNORE_PATTERNS = ["*.onnx", "onnx/*", "*.gguf", "openvino/*", "*.h5", "*.msgpack"]

path = snapshot_download(sys.argv[1], token=os.environ.get("HF_TOKEN") or None, ignore_patterns=IGNORE_PATTERNS)
print(f"{sys.argv[1]} is in {path}")
PY
done
