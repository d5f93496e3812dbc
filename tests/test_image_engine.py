"""scripts/image.py's rules for the container engine and the flags a machine needs (pure, no engine run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support.lint_tools import REPO


@pytest.fixture(scope="module")
def image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_script", REPO / "scripts" / "image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_docker_when_its_daemon_answers_else_podman_and_a_forced_choice_wins(image: ModuleType) -> None:
    assert image.choose_engine_name(None, docker_answers=True, podman_installed=True) == "docker"
    assert image.choose_engine_name(None, docker_answers=False, podman_installed=True) == "podman"
    assert image.choose_engine_name("podman", docker_answers=True, podman_installed=True) == "podman"
    with pytest.raises(image.ImageError, match="CONTAINER_ENGINE='kubectl': use docker or podman"):
        image.choose_engine_name("kubectl", docker_answers=True, podman_installed=True)
    with pytest.raises(image.ImageError, match="apt-get install podman runc"):
        image.choose_engine_name(None, docker_answers=False, podman_installed=False)


def test_a_stock_machine_gets_no_podman_flags(image: ModuleType) -> None:
    flags = image.podman_flags(
        cgroup_hybrid=False, runc_installed=True, hard_nofile=1048576, hard_nproc=4194304, pid_max=4194304
    )
    assert flags == ((), (), ())


def test_a_sandboxed_host_gets_runc_and_limits_it_can_set(image: ModuleType) -> None:
    """This machine: hybrid cgroups (crun refuses), nofile 20000, and nproc capped by pid_max 32768."""
    global_flags, run_flags, reasons = image.podman_flags(
        cgroup_hybrid=True, runc_installed=True, hard_nofile=20000, hard_nproc=96364, pid_max=32768
    )
    assert global_flags == ("--runtime", "runc")
    assert run_flags == ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
    assert len(reasons) == 2


def test_pip_settings_are_mounted_only_when_they_point_at_local_files(image: ModuleType, tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    flags, _ = image.pip_passthrough({"cert": str(cert), "find-links": f"{wheels} https://example.org/links"})
    assert flags == (
        *("-v", f"{cert}:{image.BUILD_CA_PATH}:ro", "--build-arg", f"PIP_CERT={image.BUILD_CA_PATH}"),
        *("-v", f"{wheels}:{wheels}:ro", "--build-arg", f"PIP_FIND_LINKS={wheels}"),
    )
    assert image.pip_passthrough({"cert": str(tmp_path / "missing.crt")}) == ((), ())


def test_a_baked_build_passes_the_model_and_tags_the_image_with_its_name(image: ModuleType) -> None:
    bake = image.Bake("BAAI/bge-reranker-v2-m3", revision="v1")
    assert bake.slug == "bge-reranker-v2-m3"
    assert bake.build_flags() == [
        "--build-arg",
        "MODEL_NAME=BAAI/bge-reranker-v2-m3",
        "--build-arg",
        "MODEL_REVISION=v1",
    ]
    # A hub mirror on this machine's loopback is reachable from the build only on the host's network.
    local = image.Bake("org/Some_Model", hf_endpoint="http://127.0.0.1:8080").build_flags()
    assert local[-4:] == ["--build-arg", "HF_ENDPOINT=http://127.0.0.1:8080", "--network", "host"]
    remote = image.Bake("org/m", hf_endpoint="https://hf-mirror.example").build_flags()
    assert "--network" not in remote
