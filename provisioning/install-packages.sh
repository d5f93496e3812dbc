#!/bin/bash
# PROVISIONING_SCRIPT example: install extra Debian/Ubuntu and Python packages at first boot.
#
#   APT_PACKAGES   e.g. "htop nvtop" (installed with apt-get)
#   PIP_PACKAGES   e.g. "sentence-transformers==5.1.0 rank-bm25" (installed with pip)
#
# Python packages are installed with every package already in the image pinned as a constraint,
# so they cannot replace the vLLM, torch or CUDA libraries the image was built with: a package that
# would need another version fails here, with a message, instead of breaking vLLM later.
# Edit the two defaults below if you host your own copy of this script.
set -euo pipefail

apt_packages="${APT_PACKAGES:-}"
pip_packages="${PIP_PACKAGES:-}"

if [ -n "$apt_packages" ]; then
    echo "apt-get install: $apt_packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install -y --no-install-recommends $apt_packages
    rm -rf /var/lib/apt/lists/*
fi

if [ -n "$pip_packages" ]; then
    echo "pip install: $pip_packages"
    constraints="$(mktemp)"
    trap 'rm -f "$constraints"' EXIT
    python3 -m pip list --format=freeze > "$constraints"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    python3 -m pip install --no-cache-dir --constraint "$constraints" $pip_packages
fi

if [ -z "$apt_packages" ] && [ -z "$pip_packages" ]; then
    echo "APT_PACKAGES and PIP_PACKAGES are empty: nothing to install"
fi
