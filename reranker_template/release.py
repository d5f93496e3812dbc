"""Versions and names that several files must agree on (tests/test_consistency.py checks them).

The vLLM version is the one place the project pins vLLM: the CPU build the tests run (pyproject's
`cpu` extra) and the CUDA image the Dockerfile starts FROM must both be this version.
"""

VLLM_VERSION = "0.32.0"
PACKAGE_VERSION = "0.1.0"
IMAGE_REPOSITORY = "ghcr.io/reranker-template/vllm-reranker"
IMAGE_TAG = f"{PACKAGE_VERSION}-vllm{VLLM_VERSION}"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
