# syntax=docker/dockerfile:1
# The reranker image: a vLLM base plus our gateway, launcher and supervisord.
# `reranker boot` (the ENTRYPOINT) renders supervisord's config and runs provisioning, vLLM on
# 127.0.0.1:18000 and the authenticated gateway on 0.0.0.0:8000.
#
# Two variants, one file: BASE_IMAGE picks the base and everything after FROM is the same.
#   CUDA (the default, what Vast rents):  make image      -> vllm/vllm-openai:v${VLLM_VERSION} + this file
#   CPU (laptops, CPU servers, CI):        make image-cpu  -> images/vllm-cpu/Dockerfile + this file
# tests/test_image.py builds the CPU variant and runs it the way Vast runs a container; the tag workflow
# (.github/workflows/image.yml) builds and pushes both.

ARG VLLM_VERSION=0.32.0
ARG BASE_IMAGE=vllm/vllm-openai:v${VLLM_VERSION}
FROM ${BASE_IMAGE}

ARG VLLM_VERSION
# A package mirror, a local wheel folder or a proxy's CA bundle, passed through to pip when a build needs
# them (scripts/image.py passes the host's); unset by default, and never kept in the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
LABEL org.opencontainers.image.title="vllm-reranker" \
      org.opencontainers.image.description="vLLM serving rerankers behind token auth (/v1/rerank, /v1/score)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.vllm.version="${VLLM_VERSION}"

# /workspace is the persistent volume on Vast: model downloads and vLLM's compile caches live there,
# so a restarted instance neither downloads nor compiles again.
# Downloads use hf_xet (huggingface_hub's default transport where the hub serves Xet storage) in its
# high-performance mode: a rented box's only job at start is this download.
ENV HF_HOME=/workspace/.cache/huggingface \
    VLLM_CACHE_ROOT=/workspace/.cache/vllm \
    TRITON_CACHE_DIR=/workspace/.cache/triton \
    HF_XET_HIGH_PERFORMANCE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# OpenSSH, for `ssh -L 18000:localhost:18000`: Vast's entrypoint mode (our template's runtype) starts no
# SSH server, so the image runs its own, and only when SSH_PUBLIC_KEY is set (reranker_template/serve/sshd.py:
# key-only, local forwarding only). The package's host keys go: each instance generates its own at first
# boot and keeps them in the state directory on /workspace.
# The version is left to the base image's Ubuntu release on purpose: a network daemon must get its
# security fixes, and the base itself is pinned by VLLM_VERSION.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub \
    && mkdir -p /run/sshd

# The Vast Serverless worker (supervisord runs it only when Vast's MASTER_TOKEN or SERVERLESS=true is set)
# gets its own environment: the vastai SDK pins pillow, cryptography and others at versions vLLM does not
# use, and they must not replace vLLM's. The environment sees the system's packages (vLLM's and, after
# the next layers, ours) and its own come first. The SDK goes in without its dependencies, which are mostly
# for the `vastai` CLI (a PDF library for invoices alone is 80 MB); what its worker and client import is
# listed, with the SDK's own version bounds. setuptools supplies `distutils`, which the SDK imports and
# Python 3.12 no longer ships. Before our code, so a code change does not reinstall it.
ENV RERANKER_WORKER_PYTHON=/opt/reranker-worker/bin/python
RUN python3 -m venv --without-pip --system-site-packages /opt/reranker-worker \
    && python3 -m pip --python /opt/reranker-worker/bin/python install --no-cache-dir --no-deps "vastai==1.9.1" \
    && python3 -m pip --python /opt/reranker-worker/bin/python install --no-cache-dir \
        "pycryptodome>=3.20,<4" "pycares==4.11.0" aiodns "anyio>=4.4,<5" python-dateutil "setuptools<81" \
    && /opt/reranker-worker/bin/python -c "from vastai import Worker, CoroutineServerless"

# The repository goes to /opt/reranker (provisioning/ examples stay beside the package); the supervisord
# templates ship inside the package (reranker_template/serve/conf/), so any install finds them.
COPY . /opt/reranker

# Everything the base image already has is pinned as a constraint, so installing our package
# (supervisor, aiohttp, ...) can never replace the vLLM, torch or CUDA libraries vLLM was built with;
# a conflict fails the build instead of shipping a broken image. The package is byte-compiled here (an
# editable install is not), so a first start does not spend its time compiling it. The last two commands are smoke
# tests: the CLI imports, and the vLLM inside is the version we pinned.
RUN python3 -m pip list --format=freeze > /tmp/base-constraints.txt \
    && python3 -m pip install --no-cache-dir --constraint /tmp/base-constraints.txt --editable /opt/reranker \
    && rm /tmp/base-constraints.txt \
    && python3 -m compileall -q /opt/reranker/reranker_template \
    && reranker --help > /dev/null \
    && python3 -c "import sys, vllm; sys.exit(0 if vllm.__version__.startswith('${VLLM_VERSION}') else 'vllm ' + vllm.__version__ + ' is not ${VLLM_VERSION}')" \
    && mkdir -p /workspace /var/log/portal

# A model baked in at build time, for serverless worker groups and hosts with slow links (README, "Bake a
# model into the image"): `docker build --build-arg MODEL_NAME=BAAI/bge-reranker-v2-m3 .` downloads the
# files vLLM loads into /opt/reranker-models (outside the /workspace volume) and makes it the image's default
# MODEL_NAME; a container serves it from there and downloads nothing. MODEL_REVISION pins a commit;
# HF_ENDPOINT a hub mirror. Without MODEL_NAME (the default) this adds nothing. Gated models cannot be baked
# (no token is passed into the build, so none can leak into a layer).
ARG MODEL_NAME=""
ARG MODEL_REVISION=""
ARG HF_ENDPOINT=""
RUN if [ -n "${MODEL_NAME}" ]; then \
        HF_ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}" \
        reranker bake "${MODEL_NAME}" ${MODEL_REVISION:+--revision "${MODEL_REVISION}"}; \
    fi
ENV MODEL_NAME=${MODEL_NAME}

WORKDIR /workspace

# 8000: the authenticated gateway (publish this one: `-p 8000:8000`).
# 22: our sshd, running only when SSH_PUBLIC_KEY is set (publish it too: `-p 22:22`).
# 3000: the Vast Serverless worker, only in serverless mode (`reranker vast serverless up` publishes it).
# 18000: vLLM itself, bound to 127.0.0.1 only, for SSH tunnels (`ssh -L 18000:localhost:18000`);
# documented here, never published.
EXPOSE 8000 22 3000 18000

# 200 once vLLM is ready, 503 while it downloads or loads (a big model can take many minutes, hence
# the long start period); copes with ENABLE_HTTPS's self-signed certificate and GATEWAY_PORT.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30m --retries=3 \
    CMD ["python3", "-m", "reranker_template.serve.healthcheck"]

ENTRYPOINT ["reranker", "boot"]
