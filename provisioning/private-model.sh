#!/bin/bash
# PROVISIONING_SCRIPT example: fetch a private (or gated) model with HF_TOKEN into a directory on
# the persistent volume, then serve that directory.
#
#   HF_TOKEN          a read token of an account that can see the model. Put it in your Vast
#                     account's environment variables (not in the template: templates can be public).
#   PRIVATE_MODEL     the hub id, e.g. my-org/my-reranker
#   PRIVATE_MODEL_DIR where it goes (default /workspace/models/<name>)
#
# Then set MODEL_NAME to the same directory, e.g. MODEL_NAME=/workspace/models/my-reranker: the stack
# serves it with no hub access at all. The token is never printed.
set -euo pipefail

: "${PRIVATE_MODEL:?set PRIVATE_MODEL to the hub id of your model, e.g. my-org/my-reranker}"
if [ -z "${HF_TOKEN:-}" ]; then
    echo "HF_TOKEN is not set: a private model needs a token (huggingface.co/settings/tokens)" >&2
    exit 1
fi
target="${PRIVATE_MODEL_DIR:-/workspace/models/${PRIVATE_MODEL##*/}}"

if [ -f "$target/config.json" ]; then
    echo "$PRIVATE_MODEL is already in $target"
    exit 0
fi
mkdir -p "$target"
echo "downloading $PRIVATE_MODEL into $target"
python3 - "$PRIVATE_MODEL" "$target" <<'PY'
import os
import sys

from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

model, target = sys.argv[1], sys.argv[2]
try:
    snapshot_download(model, local_dir=target, token=os.environ["HF_TOKEN"], ignore_patterns=["*.onnx", "onnx/*", "*.gguf"])
except (GatedRepoError, RepositoryNotFoundError):
    sys.exit(f"{model}: not found or not allowed with this HF_TOKEN (check the id and that the token can read it)")
print(f"{model} is in {target}; serve it with MODEL_NAME={target}")
PY
