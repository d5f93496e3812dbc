"""Preflight: a model that cannot be served is refused before anything is downloaded, with one sentence.

The verdicts (plan/preflight.py) are pure and tested directly; the observations are made for real against the
loopback hub (tests/support/fake_hub.py: missing, private and gated repositories, revisions, tokens) through
the three places a user meets them: `reranker plan`, the launcher of a running stack (FATAL before any
download, the sentence in /health) and `reranker vast launch` (nothing rented). One test serves a gated
model with HF_TOKEN through the whole stack. vLLM's model table (plan/vllm_models.py) is compared with the
installed vLLM's registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_hub import REVISION, FakeHub
from support.stack_runner import RERANKER, RunningStack, http_get, http_post_json, minilm_dir, start_stack
from support.tmpfs import small_filesystem

from reranker_template.facts.hub import HubAnswer, HubRepo
from reranker_template.facts.model import inspect_local
from reranker_template.plan.preflight import (
    GIB,
    Advice,
    download_bytes,
    judge_architecture,
    judge_disk,
    judge_hub,
    judge_tokenizer,
)
from reranker_template.plan.vllm_models import Runner, runner_for
from reranker_template.serve.preflight import planned_argv
from reranker_template.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "models"
GATED = "org/gated-minilm"
PRIVATE = "me/private-minilm"
PUBLIC = "sentence-transformers/all-MiniLM-L6-v2"
GOOD_TOKEN = "hf_granted"  # the fake hub's account that accepted GATED's licence and owns PRIVATE
OTHER_TOKEN = "hf_someone_else"


# --- The verdicts ------------------------------------------------------------------------------------------


def test_vllm_serves_the_families_we_have_presets_for() -> None:
    scoring = [
        "BertForSequenceClassification",  # ms-marco cross-encoders
        "XLMRobertaForSequenceClassification",  # bge-reranker-v2-m3
        "ModernBertForSequenceClassification",
        "Qwen3ForSequenceClassification",  # Qwen3-Reranker through the preset's --hf-overrides: converted
        "GemmaForSequenceClassification",
        "GteNewForSequenceClassification",
        "JinaVLForRanking",
        "BertModel",  # embedding models
        "HF_ColBERT",
    ]
    assert {arch: runner_for(arch) for arch in scoring} == dict.fromkeys(scoring, Runner.POOLING)
    assert runner_for("Qwen3ForCausalLM") is Runner.GENERATE
    assert runner_for("DebertaV2ForSequenceClassification") is None  # no vLLM implementation


def qwen3_reranker() -> tuple[Settings, dict[str, object]]:
    info = inspect_local(str(FIXTURES / "Qwen3-Reranker-0.6B"))
    return Settings(model_name="Qwen/Qwen3-Reranker-0.6B"), dict(info.config)


def test_a_causal_lm_is_a_reranker_only_with_its_preset() -> None:
    settings, config = qwen3_reranker()
    info = inspect_local(str(FIXTURES / "Qwen3-Reranker-0.6B"))
    with_preset = judge_architecture(settings.model_name, config, planned_argv(settings, info))
    assert with_preset.ok and "Qwen3ForSequenceClassification" in with_preset.message
    bare = Settings(model_name="Qwen/Qwen3-Reranker-0.6B", preset="none")
    without = judge_architecture(bare.model_name, config, planned_argv(bare, info))
    assert not without.ok
    assert without.message.startswith("Qwen/Qwen3-Reranker-0.6B is a text-generation model (Qwen3ForCausalLM)")
    assert "RERANKER_PRESET=embedding" in without.message
    assert judge_architecture("m", config, ["--runner", "pooling"]).ok


def test_custom_code_needs_trust_remote_code_and_unknown_classes_are_refused() -> None:
    config = {"architectures": ["NewForSequenceClassification"], "auto_map": {"AutoConfig": "configuration.NewConfig"}}
    refused = judge_architecture("Alibaba-NLP/x", config, [])
    assert not refused.ok and "--trust-remote-code" in refused.message
    assert judge_architecture("Alibaba-NLP/x", config, ["--trust-remote-code"]).ok
    # The gte preset maps it to vLLM's implementation.
    overrides = ["--hf-overrides", '{"architectures":["GteNewForSequenceClassification"]}', "--trust-remote-code"]
    assert judge_architecture("Alibaba-NLP/x", config, overrides).ok
    plain = {"architectures": ["DebertaV2ForSequenceClassification"]}
    refused = judge_architecture("mixedbread-ai/mxbai-rerank-base-v1", plain, [], transformers_serves=False)
    assert not refused.ok and refused.message.startswith("vLLM 0.32.0 cannot serve mixedbread-ai/mxbai-rerank-base-v1")
    assert judge_architecture("m", plain, [], transformers_serves=True).ok
    unknown = judge_architecture("m", plain, [], transformers_serves=None)
    assert unknown.ok and unknown.message.startswith("not checked")


def test_tokenizer_files() -> None:
    assert judge_tokenizer("m", ["config.json", "vocab.txt", "model.safetensors"], []).ok
    missing = judge_tokenizer("m", ["config.json", "model.safetensors", "1_Pooling/config.json"], [])
    assert not missing.ok and "--tokenizer" in missing.message
    assert judge_tokenizer("m", ["config.json"], ["--tokenizer", "bert-base-uncased"]).ok


def test_disk_needs_the_download_and_a_margin() -> None:
    files = {"model.safetensors": 3 * GIB, "model.onnx": 3 * GIB, "config.json": 1000, "onnx/model.onnx": GIB}
    need = download_bytes(files, cached={"config.json"}, ignore=["*.onnx", "onnx/*"])
    assert need == 3 * GIB  # ONNX copies are never downloaded, the cached config.json is not again
    assert judge_disk(need, 5 * GIB, "/data", Advice()).ok
    tight = judge_disk(need, 3 * GIB + GIB // 2, "/data", Advice(bigger_disk="rent a bigger disk with --disk {gb}"))
    assert not tight.ok
    assert tight.message == (
        "the model's files need 3.0 GiB (and 1.0 GiB to spare) but only 3.5 GiB is free in /data: "
        "rent a bigger disk with --disk 5"
    )
    assert judge_disk(0, 10, "/data", Advice()).ok  # everything cached already


def test_hub_answers_become_sentences() -> None:
    def sentence(answer: HubAnswer, **fields: object) -> str:
        verdict = judge_hub(HubRepo(model="org/m", answer=answer, **fields), Advice())  # type: ignore[arg-type]
        assert not verdict.ok
        return verdict.message

    assert sentence(HubAnswer.NOT_FOUND).startswith("no model org/m on the hub: check the name")
    gated = sentence(HubAnswer.GATED)
    assert "accept its licence at https://huggingface.co/org/m" in gated and "set HF_TOKEN" in gated
    assert "HF_TOKEN's account has no access yet" in sentence(HubAnswer.GATED, token_given=True)
    assert "no revision 'v9'" in sentence(HubAnswer.NO_REVISION, revision="v9")
    assert "refused HF_TOKEN" in sentence(HubAnswer.BAD_TOKEN)
    assert judge_hub(HubRepo(model="org/m", answer=HubAnswer.UNREACHABLE), Advice()).ok  # cannot tell: go on


# --- vLLM's model table, against the installed vLLM ------------------------------------------------------


@pytest.mark.slow  # imports vLLM in a child interpreter
def test_the_model_table_is_the_installed_vllms() -> None:
    code = (
        "import json\n"
        "from vllm.config.model import _SUFFIX_TO_DEFAULTS\n"
        "from vllm.model_executor.models import registry as r\n"
        "pooling = set(r._EMBEDDING_MODELS) | set(r._SEQUENCE_CLASSIFICATION_MODELS) | set(r._LATE_INTERACTION_MODELS)"
        " | set(r._REWARD_MODELS) | set(r._TOKEN_CLASSIFICATION_MODELS)\n"
        "print(json.dumps({'all': sorted(r.ModelRegistry.get_supported_archs()), 'pooling': sorted(pooling),"
        " 'suffixes': [[s, runner] for s, (runner, _) in _SUFFIX_TO_DEFAULTS]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = json.loads(result.stdout.strip().splitlines()[-1])
    from reranker_template.plan import vllm_models

    assert set(installed["all"]) == vllm_models.REGISTERED, "regenerate plan/vllm_models.py for this vLLM"
    assert set(installed["pooling"]) == vllm_models.POOLING
    assert [[s, str(r)] for s, r in vllm_models.SUFFIX_DEFAULTS] == installed["suffixes"]


# --- `reranker plan` against the loopback hub ----------------------------------------------------------------


def hub() -> FakeHub:
    repos = {PUBLIC: minilm_dir(), GATED: minilm_dir(), PRIVATE: minilm_dir()}
    tokens = {GOOD_TOKEN: [GATED, PRIVATE], OTHER_TOKEN: []}
    return FakeHub(repos, gated=[GATED], private=[PRIVATE], tokens=tokens, tags=["v1"])


def plan(tmp_path: Path, hub_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VLLM_", "RERANKER_", "MODEL_NAME"))}
    base.update(HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub_url, **env)
    return subprocess.run([RERANKER, "plan"], env=base, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a loopback hub and `reranker plan` as a process, six times
def test_reranker_plan_stops_on_what_the_hub_says(tmp_path: Path) -> None:
    with hub() as fake:
        typo = plan(tmp_path, fake.url, MODEL_NAME="sentence-transformers/all-MiniLM-L6-v3")
        gated = plan(tmp_path, fake.url, MODEL_NAME=GATED)
        other = plan(tmp_path, fake.url, MODEL_NAME=GATED, HF_TOKEN=OTHER_TOKEN)
        private = plan(tmp_path, fake.url, MODEL_NAME=PRIVATE)
        revision = plan(tmp_path, fake.url, MODEL_NAME=PUBLIC, VLLM_ARGS="--revision v2")
        granted = plan(tmp_path, fake.url, MODEL_NAME=GATED, HF_TOKEN=GOOD_TOKEN, VLLM_ARGS="--revision v1")
    assert typo.returncode == 2
    assert typo.stderr.strip() == (
        "reranker: no model sentence-transformers/all-MiniLM-L6-v3 on the hub: check the name (a private model also "
        "needs a token: set HF_TOKEN to a token of an account that can read it)"
    )
    assert gated.returncode == 2 and f"accept its licence at {fake.url}/{GATED}, then set HF_TOKEN" in gated.stderr
    assert other.returncode == 2 and "HF_TOKEN's account has no access yet" in other.stderr
    assert private.returncode == 2 and f"no model {PRIVATE} on the hub" in private.stderr
    assert revision.returncode == 2 and "has no revision 'v2'" in revision.stderr
    assert granted.returncode == 0, granted.stderr
    checks = granted.stdout.split("\npreflight\n")[1]
    assert f"ok hub: {GATED} found (revision v1 = {REVISION[:12]}" in checks and "access granted" in checks
    assert "ok architecture: BertModel" in checks and "ok tokenizer:" in checks and "disk" in checks


# --- The launcher: FATAL before the download, the sentence in /health -----------------------------------------


def wait_fatal(stack: RunningStack, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while "FATAL" not in stack.supervisorctl("status", "vllm") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "FATAL" in stack.supervisorctl("status", "vllm"), stack.log_text()[-4000:]
    code, body = http_get(stack.gateway_url + "/health")
    health: dict[str, object] = json.loads(body)
    assert code == 503 and health["status"] == "failed", health
    assert "starting vLLM" not in stack.log_text()  # stopped before vLLM, and before any download
    return health


def hub_env(hub_url: str, hf_home: Path, **more: str) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home), **more}


@pytest.mark.slow  # the stack (no vLLM: it is never started) against the loopback hub
def test_gated_model_without_a_token_stops_the_launcher(tmp_path: Path) -> None:
    with hub() as fake:
        stack = start_stack(tmp_path, GATED, wait=False, extra_env=hub_env(fake.url, tmp_path / "hf"))
        try:
            health = wait_fatal(stack)
        finally:
            stack.stop()
        assert health["reason"] == (
            f"{GATED} is gated: accept its licence at {fake.url}/{GATED}, then set HF_TOKEN to a token of an account "
            "that can read it"
        )
        assert not any("/resolve/" in r and ".safetensors" in r for r in fake.requests)


@pytest.mark.slow  # mounts a small filesystem for the Hugging Face cache, runs the stack (no vLLM)
def test_a_cache_volume_too_small_stops_the_launcher(tmp_path: Path) -> None:
    with hub() as fake, small_filesystem(tmp_path / "small", 64) as small:
        stack = start_stack(tmp_path / "run", PUBLIC, wait=False, extra_env=hub_env(fake.url, small / "hf"))
        try:
            health = wait_fatal(stack)
        finally:
            stack.stop()
    reason = str(health["reason"])
    assert reason.startswith("the model's files need 8"), reason  # all-MiniLM-L6-v2: 87 MiB
    assert "MiB (and 1.0 GiB to spare) but only 64 MiB is free in " in reason, reason
    assert reason.endswith("free space there or point HF_HOME at a bigger volume")


@pytest.mark.vllm
def test_a_gated_model_is_served_with_its_token(tmp_path: Path, vllm_cache_root: Path) -> None:
    with hub() as fake:
        env = hub_env(fake.url, tmp_path / "hf", HF_TOKEN=GOOD_TOKEN, QUALITY_CHECK="false")
        stack = start_stack(tmp_path, GATED, served_name="gated", extra_env=env, cache_root=vllm_cache_root)
        try:
            body = {"model": "gated", "query": "green tea", "documents": ["basketball", "green tea is healthy"]}
            code, answer = http_post_json(stack.gateway_url + "/v1/rerank", body, token=stack.token)
            log = stack.log_text()
        finally:
            stack.stop()
    assert code == 200 and answer["results"][0]["index"] == 1, answer
    assert f"preflight: ok hub: {GATED} found" in log and "access granted" in log
    assert GOOD_TOKEN not in log  # the token is used, never logged


# --- `reranker vast launch`: nothing is rented for a model that cannot start ------------------------------


@pytest.mark.slow  # the fake Vast API, the loopback hub and `reranker vast launch` as a process
def test_vast_launch_checks_the_model_before_renting(tmp_path: Path) -> None:
    from support.fake_vast import API_KEY, FakeVast

    vast = FakeVast().start()
    try:
        with hub() as fake:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VAST", "MODEL_NAME"))}
            env.update(
                HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), HF_HOME=str(tmp_path / "hf"),
                HF_ENDPOINT=fake.url, VAST_URL=vast.url, VAST_API_KEY=API_KEY, VASTAI_NO_UPDATE_CHECK="1",
                HF_TOKEN=GOOD_TOKEN,  # this machine's token: the instance does not get it
            )  # fmt: skip

            def launch(*args: str) -> subprocess.CompletedProcess[str]:
                command = [RERANKER, "vast", "launch", "9001", "--yes", "--no-ssh", "--no-wait", *args]
                return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

            gated = launch("--model", GATED)
            small = launch("--model", PUBLIC, "--disk", "0.5")
            rented = launch("--model", GATED, "--env", f"HF_TOKEN={GOOD_TOKEN}")
    finally:
        vast.stop()
    assert gated.returncode == 2, gated.stderr
    assert "pass it to the instance with --env HF_TOKEN=hf_..." in gated.stderr.splitlines()[-1]
    assert small.returncode == 2 and "rent a bigger disk with --disk 2" in small.stderr.splitlines()[-1]
    assert rented.returncode == 0, rented.stderr
    assert "preflight: ok hub:" in rented.stderr and "preflight: ok disk:" in rented.stderr
    assert len(vast.seen("PUT", "/api/v0/asks/9001/")) == 1  # only the launch that passed rented
