"""Where a start of the image goes, phase by phase: `python3 scripts/cold_start.py [--runs N]`.

Runs the CPU image (`make image-cpu`) the way Vast does, one container at a time, and times three kinds
of start from `run` (or `start`) to the first answered rerank:
- cold: a new container on an empty /workspace (the bundled cross-encoder mounted read-only, as
  tests/test_image.py does; MODEL_NAME a directory, so there is no download to time);
- warm: Vast's restart of that container (same filesystem, same /workspace);
- baked (with --baked-image): a new container of an image built with a model baked in
  (`scripts/image.py build cpu --model ...`), on an empty /workspace, with the hub out of reach, so it
  proves that nothing is downloaded.
The phases come from the container's log as the engine timestamped each line (`logs -t`): our entrypoint,
supervisord, the launcher, and vLLM's own milestones. Prints one table per kind of start (the median of
the runs) and, with --json, every run's figures.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))
from image import Engine, detect_engine  # noqa: E402

IMAGE = "vllm-reranker:cpu"
TOKEN = "cold-start-token"
MODEL_MOUNT = "/models/ms-marco-MiniLM-L-12-v2"
QUERY = "What is deep learning?"
DOCUMENTS = ["I like pizza", "Deep learning is a type of machine learning", "The weather is nice today"]
READY_TIMEOUT = 900.0
POLL_SECONDS = 0.1

# (phase, the log line that ends it), in the order a start goes through them. A phase whose line does not
# appear (no download for a local model, no architecture inspection when vLLM's cache has it) is left out;
# its time falls to the next phase that appears. The engine's own start ends at the container's StartedAt.
ENGINE = "engine: `run`/`start` until the container's process starts"
MILESTONES: tuple[tuple[str, str], ...] = (
    ("ours: settings, facts, plan, supervisord's config", r"\[stack\] supervisorctl"),
    ("ours: supervisord up, the gateway and launcher spawned", r"spawned: 'vllm'"),
    ("ours: model download (a hub model not yet on /workspace)", r"\[download\] .* is ready in "),
    ("ours: the launcher's provisioning wait and preflight, vLLM exec'd", r"\[launcher\] starting vLLM: "),
    ("vLLM: API server's Python, torch and vLLM imported", r"non-default args"),
    ("vLLM: model class inspected (a subprocess, cached on /workspace)", r"Resolved architecture"),
    ("vLLM: engine core process started (imports torch and vLLM again)", r"Initializing a V1 LLM engine"),
    ("vLLM: worker process started (imports them again)", r"Starting to load model"),
    ("vLLM: weights loaded", r"Loading weights took"),
    ("vLLM: compile and warm-up", r"init engine \(profile"),
    ("vLLM: API server up", r"Starting vLLM server on|Application startup complete"),
)
OUR_PART_END = r"\[launcher\] starting vLLM: "
READY = "/health 200 (seen by polling every 0.1 s)"
ANSWERED = "first rerank answered"
OUR_PART = "our part: container process start to vLLM exec'd"
KNOWN_ANSWER = "known-answer check, after /health 200 (in the background)"


@dataclass
class Run:
    kind: str
    seconds_to_ready: float = 0.0
    seconds_to_answer: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds it took
    downloaded: bool = False


def _iso_seconds(stamp: str) -> float:
    """podman/docker `logs -t` timestamps (RFC 3339, nanoseconds) as seconds since the epoch."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp)
    if match is None:
        raise ValueError(stamp)
    whole = datetime.fromisoformat(match.group(1) + ("+00:00" if match.group(3) == "Z" else match.group(3)))
    return whole.timestamp() + float(match.group(2) or 0)


def _started_at(shown: str) -> float:
    """The engine's State.StartedAt: RFC 3339 (Docker) or `2026-12-01 23:53:12.123 +0000 UTC` (Podman)."""
    if re.match(r"\d{4}-\d\d-\d\dT", shown):
        return _iso_seconds(shown)
    day, clock, offset = shown.split()[:3]
    return _iso_seconds(f"{day}T{clock}{offset[:3]}:{offset[3:]}")


def timed_lines(engine: Engine, name: str, since: float) -> list[tuple[float, str]]:
    shown = subprocess.run(engine("logs", "-t", name), capture_output=True, text=True)
    lines = []
    for raw in (shown.stdout + shown.stderr).splitlines():
        stamp, _, text = raw.partition(" ")
        try:
            at = _iso_seconds(stamp)
        except ValueError:
            continue
        if at >= since:
            lines.append((at - since, text))
    return sorted(lines)


def phase_times(lines: list[tuple[float, str]], began: float, ready: float, answered: float) -> dict[str, float]:
    """Each milestone's time since `run`, then the phases as differences between consecutive ones. `began`:
    when the container's process started."""
    marks: list[tuple[str, float]] = [(ENGINE, began)]
    position = 0
    for phase, pattern in MILESTONES:
        found = next((i for i in range(position, len(lines)) if re.search(pattern, lines[i][1])), None)
        if found is not None:
            marks.append((phase, lines[found][0]))
            position = found
    marks += [(READY, ready), (ANSWERED, answered)]
    phases, previous = {}, 0.0
    for phase, at in marks:
        phases[phase] = max(0.0, at - previous)
        previous = max(previous, at)
    check = next((at for at, text in lines if "known-answer pairs ranked correctly" in text), None)
    if check is not None:
        phases[KNOWN_ANSWER] = max(0.0, check - ready)
    exec_at = next((at for at, text in lines if re.search(OUR_PART_END, text)), None)
    if exec_at is not None:
        phases[OUR_PART] = exec_at - began
    return phases


def wait_and_ask(gateway: str, started: float) -> tuple[float, float]:
    """Seconds from `started` to /health 200 and to the first answered rerank (the right document first)."""
    deadline = started + READY_TIMEOUT
    while True:
        if time.time() > deadline:
            raise SystemExit(f"not ready within {READY_TIMEOUT:.0f} s")
        try:
            if requests.get(gateway + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(POLL_SECONDS)
    ready = time.time() - started
    body = {"query": QUERY, "documents": DOCUMENTS}
    answer = requests.post(gateway + "/v1/rerank", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    answer.raise_for_status()
    top = answer.json()["results"][0]["index"]
    if top != 1:
        raise SystemExit(f"the first answer ranked document {top} first, not 1: {answer.text}")
    return ready, time.time() - started


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, engine: Engine, model_dir: Path, scratch: Path, env: Sequence[str] = ()) -> None:
        self.engine = engine
        self.model_dir = model_dir
        self.scratch = scratch
        self.env = list(env)  # --env KEY=VALUE: settings for every container (VLLM_ARGS=-O2: vLLM's compile)

    def run_container(self, name: str, image: str, *, mount_model: bool, extra_env: Sequence[str] = ()) -> str:
        workspace = self.scratch / name
        workspace.mkdir()
        port = free_port()
        env = [f"OPEN_BUTTON_TOKEN={TOKEN}", "CONTAINER_ID=4242", *self.env, *extra_env]
        options = ["-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", f"{workspace}:/workspace"]
        options += ["--shm-size=1g"]
        if mount_model:
            options += ["-v", f"{self.model_dir}:{MODEL_MOUNT}:ro"]
            env.append(f"MODEL_NAME={MODEL_MOUNT}")
        options += [flag for item in env for flag in ("-e", item)]
        subprocess.run(self.engine("rm", "-f", name), capture_output=True)
        started = subprocess.run(self.engine("run", *self.engine.run_flags, *options, image), capture_output=True)
        if started.returncode != 0:
            raise SystemExit(f"{image} did not start: {started.stderr.decode()}")
        return f"http://127.0.0.1:{port}"

    def measure(self, kind: str, name: str, gateway: str, started: float) -> Run:
        ready, answered = wait_and_ask(gateway, started)
        lines = timed_lines(self.engine, name, started)
        shown = subprocess.run(self.engine("inspect", "--format", "{{.State.StartedAt}}", name), capture_output=True)
        began = _started_at(shown.stdout.decode().strip()) - started
        run = Run(kind, ready, answered, phase_times(lines, began, ready, answered))
        run.downloaded = any("downloading " in text for _, text in lines)
        return run

    def cold_and_warm(self, index: int, image: str) -> list[Run]:
        name = f"cold-start-{index}"
        started = time.time()
        gateway = self.run_container(name, image, mount_model=True)
        cold = self.measure("cold", name, gateway, started)
        subprocess.run(self.engine("stop", "-t", "30", name), capture_output=True)
        started = time.time()
        subprocess.run(self.engine("start", name), capture_output=True, check=True)
        warm = self.measure("warm", name, gateway, started)
        subprocess.run(self.engine("rm", "-f", name), capture_output=True)
        return [cold, warm]

    def baked(self, index: int, image: str) -> Run:
        name = f"cold-start-baked-{index}"
        started = time.time()
        unreachable = ["HF_ENDPOINT=http://127.0.0.1:9"]  # a download attempt would fail, not pass unnoticed
        gateway = self.run_container(name, image, mount_model=False, extra_env=unreachable)
        run = self.measure("baked", name, gateway, started)
        subprocess.run(self.engine("rm", "-f", name), capture_output=True)
        return run


def table(runs: list[Run], kind: str) -> list[str]:
    chosen = [run for run in runs if run.kind == kind]
    if not chosen:
        return []
    order: list[str] = []
    for run in chosen:
        order += [phase for phase in run.phases if phase not in order]
    lines = [f"### {kind} start ({len(chosen)} run(s), median seconds)", "", "| phase | seconds |", "| --- | --- |"]
    for phase in order:
        values = [run.phases[phase] for run in chosen if phase in run.phases]
        lines.append(f"| {phase} | {statistics.median(values):.2f} |")
    ready = statistics.median(run.seconds_to_ready for run in chosen)
    answered = statistics.median(run.seconds_to_answer for run in chosen)
    lines.append(f"| **to /health 200 / to the first answer** | **{ready:.1f} / {answered:.1f}** |")
    downloads = sum(run.downloaded for run in chosen)
    lines += ["", f"runs that downloaded the model: {downloads} of {len(chosen)}", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="starts of each kind (default: %(default)s)")
    parser.add_argument("--image", default=IMAGE, help="the image for cold and warm starts (default: %(default)s)")
    parser.add_argument("--baked-image", help="an image with a model baked in (scripts/image.py build cpu --model)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every container, e.g. VLLM_ARGS=-O2 for vLLM's default compile (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="also print every run's figures as JSON")
    args = parser.parse_args(argv)

    from reranker_template.serve.bundled_model import ensure_built

    engine = detect_engine({})
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        model_dir = ensure_built(Path(scratch) / "models").path
        bench = Bench(engine, model_dir, Path(scratch), args.env)
        for index in range(args.runs):
            print(f"run {index + 1} of {args.runs}: cold, then warm ...", file=sys.stderr, flush=True)
            runs += bench.cold_and_warm(index, args.image)
            if args.baked_image:
                print(f"run {index + 1} of {args.runs}: baked ...", file=sys.stderr, flush=True)
                runs.append(bench.baked(index, args.baked_image))
    for kind in ("cold", "warm", "baked"):
        print("\n".join(table(runs, kind)))
    if args.json:
        print(json.dumps([run.__dict__ for run in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
