"""Vast Serverless without vLLM: the workload measure, the worker's environment and readiness rules, the
certificate Vast signs, supervisord's worker program, and `reranker vast serverless ...` / `health
--serverless` against the stand-in of Vast's API (the real vastai SDK sends the bodies checked here).
The worker with a real vLLM behind it: test_serverless_worker.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fake_serverless import FakeRouter, StandInCa
from support.fake_vast import FakeVast, run_vast
from support.loopback import LoopbackServer, Reply, Request

from reranker_template.cli import main
from reranker_template.errors import Failure, UserError
from reranker_template.paths import local_paths
from reranker_template.serve import worker, worker_tls
from reranker_template.serve.status import Phase, QualityState, VllmStatus
from reranker_template.serve.supervisor import SupervisorConfig, render
from reranker_template.settings import load_settings
from reranker_template.workload import IMAGE_TOKENS, request_workload

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "fixtures" / "models" / "bge-reranker-v2-m3"


# --- the workload measure ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"query": "abcd" * 3, "documents": ["abcd" * 10, "abcd" * 20]}, (3 + 10) + (3 + 20)),
        ({"query": "q", "documents": [{"text": "abcd" * 5}]}, 1 + 5),
        ({"text_1": "abcd", "text_2": ["abcd" * 2, "abcd" * 3]}, (1 + 2) + (1 + 3)),
        ({"text_1": ["abcd", "abcd" * 2], "text_2": ["abcd", "abcd"]}, (1 + 1) + (2 + 1)),  # pairwise
        ({"queries": "abcd", "documents": ["abcd"]}, 2),
        (
            {"query": "q", "documents": [{"content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            1 + IMAGE_TOKENS,
        ),
        ({"query": "", "documents": []}, 1),  # never 0: the autoscaler divides by it
        ({"model": "m"}, 1),
    ],
)
def test_workload_is_about_the_tokens_of_every_pair(payload: dict[str, object], expected: int) -> None:
    assert request_workload(payload) == expected


def test_the_workers_benchmark_request_is_a_search_systems_rerank() -> None:
    import random

    body = worker.benchmark_request("m", random.Random(1))
    assert len(body["documents"]) == worker.BENCHMARK_DOCUMENTS
    assert 100 <= request_workload({"query": body["query"], "documents": body["documents"][:1]}) <= 250


# --- the worker's environment and readiness ---------------------------------------------------------------
VAST = {"CONTAINER_ID": "42", "PUBLIC_IPADDR": "1.2.3.4", "VAST_TCP_PORT_3000": "41000", "MASTER_TOKEN": "m"}


def test_worker_defaults_are_those_of_vasts_own_bootstrap() -> None:
    env = worker.read_worker_environment(VAST)
    assert (env.port, env.report_addr, env.use_ssl, env.unsecured) == (3000, "https://run.vast.ai", True, False)
    assert env.public_url == "https://1.2.3.4:41000"
    assert worker.sdk_variables(env)["VAST_TCP_PORT_3000"] == "41000"


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("VAST_TCP_PORT_3000", "-p 3000:3000"),
        ("PUBLIC_IPADDR", "-p 3000:3000"),
        ("CONTAINER_ID", "Vast sets"),
    ],
)
def test_a_template_without_what_vast_sets_says_what_to_change(missing: str, says: str) -> None:
    env = {k: v for k, v in VAST.items() if k != missing}
    with pytest.raises(UserError, match=f"{missing} is not set") as raised:
        worker.read_worker_environment(env)
    assert says in str(raised.value)


def test_the_worker_command_ends_with_one_line_and_status_2_when_vast_did_not_set_its_variables(capsys) -> None:
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CONTAINER_ID is not set" in err[0], err


@pytest.mark.slow
def test_a_worker_missing_its_port_tells_vast_why(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    router = FakeRouter("key").start()
    try:
        for name, value in {**VAST, "REPORT_ADDR": router.url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("VAST_TCP_PORT_3000")
        assert main(["worker"]) == 2
        [report] = router.reports
    finally:
        router.stop()
    assert report["id"] == 42 and report["mtoken"] == "m"
    assert "VAST_TCP_PORT_3000 is not set" in report["error_msg"] and "-p 3000:3000" in report["error_msg"]
    assert "VAST_TCP_PORT_3000 is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "ready", "failure"),
    [
        (VllmStatus(Phase.DOWNLOADING), False, None),
        (VllmStatus(Phase.READY, quality_check=QualityState.PENDING), False, None),
        (VllmStatus(Phase.READY, quality_check=QualityState.PASSED), True, None),
        (VllmStatus(Phase.READY, quality_check=QualityState.SKIPPED), True, None),
        (VllmStatus(Phase.FAILED, reason="weights do not fit", load_failures=1), False, None),  # retried
        (VllmStatus(Phase.FAILED, reason="weights do not fit", load_failures=2), False, "weights do not fit"),
        (
            VllmStatus(Phase.READY, quality_check=QualityState.FAILED, quality_detail="scores reversed"),
            False,
            "the known-answer check failed: scores reversed",
        ),
    ],
)
def test_readiness_follows_the_launchers_status(status: VllmStatus, ready: bool, failure: str | None) -> None:
    assert worker.is_ready(status) is ready
    assert worker.readiness_failure(status) == failure


def test_supervisord_runs_the_worker_only_in_serverless_mode(tmp_path: Path) -> None:
    assert load_settings({"MASTER_TOKEN": "x"}).serverless
    assert load_settings({"SERVERLESS": "true"}).serverless
    assert not load_settings({"MASTER_TOKEN": "x", "SERVERLESS": "false"}).serverless
    assert not load_settings({}).serverless
    paths = local_paths({"RERANKER_STATE_DIR": str(tmp_path)})
    plain = render(SupervisorConfig(python="/py", paths=paths))
    serverless = render(SupervisorConfig(python="/py", paths=paths, worker_python="/opt/worker/bin/python"))
    assert "[program:worker]" not in plain
    assert "[program:worker]\ncommand=/opt/worker/bin/python -m reranker_template.cli worker" in serverless
    assert f"directory={paths.state_dir}" in serverless


# --- the TLS certificate Vast signs ---------------------------------------------------------------------
class SigningConsole:
    """Vast's console signing CSRs with a stand-in CA; `answers` scripts failures first."""

    def __init__(self, answers: list[int] | None = None, garbage: bool = False) -> None:
        self.ca = StandInCa()
        self.answers = list(answers or [])
        self.garbage = garbage
        self.seen: list[Request] = []
        self.server = LoopbackServer(self.serve)

    def serve(self, request: Request) -> Reply:
        self.seen.append(request)
        if self.answers:
            return Reply(self.answers.pop(0), b"busy")
        if self.garbage:
            return Reply(200, StandInCa().pem())  # a certificate, but not for the worker's key
        return Reply(200, self.ca.sign(request.body))


@pytest.mark.slow
def test_the_worker_gets_a_certificate_for_its_own_key(tmp_path: Path) -> None:
    console = SigningConsole(answers=[503])  # one failure first: retried
    with console.server:
        cert = worker_tls.ensure_certificate(console.server.url, 42, tmp_path)
    request = console.seen[-1]
    assert request.method == "POST" and request.target == "/api/v0/sign_cert/?instance_id=42"
    assert request.headers["Content-Type"] == "application/octet-stream"
    key = (tmp_path / "instance.key").read_bytes()
    assert worker_tls.certificate_matches(cert.read_bytes(), key)
    assert (tmp_path / "instance.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_a_certificate_for_another_key_is_refused(tmp_path: Path) -> None:
    console = SigningConsole(garbage=True)
    with console.server, pytest.raises(Failure, match="not a certificate for this worker's key"):
        worker_tls.ensure_certificate(console.server.url, 42, tmp_path)
    assert not (tmp_path / "instance.crt").exists()


# --- reranker vast serverless ... ------------------------------------------------------------------------
@pytest.mark.slow
def test_up_creates_template_endpoint_and_worker_group_then_updates_them(env, fake: FakeVast, capsys) -> None:
    argv = ["serverless", "up", "--endpoint", "search", "--model", str(MODEL), "--json"]
    code, out, err = run_vast(capsys, *argv)
    assert code == 0, err
    [template] = fake.seen("POST", "/api/v0/template/")
    assert "-p 3000:3000" in template.body["env"] and f"-e MODEL_NAME={MODEL}" in template.body["env"]
    assert "-e SERVERLESS=true" in template.body["env"]
    [endpoint] = fake.seen("POST", "/api/v0/endptjobs/")
    assert endpoint.body == {
        "client_id": "me",
        "endpoint_name": "search",
        "cold_workers": 1,
        "max_workers": 4,
        "min_load": 0.0,
        "min_cold_load": 0.0,
        "target_util": 0.8,
        "cold_mult": 2.5,
        "target_queue_time": 5.0,
        "max_queue_time": 30.0,
        "inactivity_timeout": None,
        "autoscaler_instance": "prod",
    }
    [group] = fake.seen("POST", "/api/v0/autojobs/")
    result = json.loads(out)
    assert group.body["endpoint_id"] == result["endpoint_id"] and group.body["template_hash"] == result["template_hash"]
    assert group.body["gpu_ram"] == 16.0
    assert group.body["search_params"].startswith("verified=True external=False rentable=True rented=False")
    assert "gpu_ram>=16.0" in group.body["search_params"] and "num_gpus=1" in group.body["search_params"]
    # Again, with another policy: the same endpoint and group are updated, nothing new is created.
    code, _, err = run_vast(capsys, *argv, "--max-workers", "8")
    assert code == 0, err
    assert len(fake.seen("POST", "/api/v0/endptjobs/")) == 1 and len(fake.seen("POST", "/api/v0/autojobs/")) == 1
    [update] = fake.seen("PUT", f"/api/v0/endptjobs/{result['endpoint_id']}/")
    assert update.body["max_workers"] == 8
    assert len(fake.seen("PUT", f"/api/v0/autojobs/{result['workergroup_id']}/")) == 1
    assert len(fake.endpoints) == 1 and len(fake.workergroups) == 1


@pytest.mark.slow
def test_status_scale_logs_and_health_of_an_endpoint(env, fake: FakeVast, capsys) -> None:
    code, out, err = run_vast(capsys, "serverless", "up", "--endpoint", "search", "--model", str(MODEL), "--json")
    endpoint_id = json.loads(out)["endpoint_id"]
    fake.workers[endpoint_id] = [
        {"id": 9001, "status": "idle", "loaded_at": 1.0, "cur_load": 0.0, "measured_perf": 5200.0},
        {"id": 9002, "status": "error", "loaded_at": 0.0, "error_msg": "vLLM's port 18000 is already in use"},
    ]
    code, out, err = run_vast(capsys, "serverless", "status", "search")
    assert code == 0, err
    assert "2 worker(s), 1 with errors" in out and "measured 5200 units/s" in out
    assert "ERROR: vLLM's port 18000 is already in use" in out
    code, out, err = run_vast(capsys, "serverless", "scale", "search", "--max-workers", "6", "--json")
    assert code == 0, err
    [put] = fake.seen("PUT", f"/api/v0/endptjobs/{endpoint_id}/")
    assert put.body["max_workers"] == 6 and put.body["cold_workers"] == 1 and put.body["target_util"] == 0.8
    code, out, err = run_vast(capsys, "serverless", "logs", "search")
    assert code == 0 and "worker 777: loaded" in out
    assert main(["health", "--serverless", "search"]) == 0
    assert "ready (2 worker(s): 1 error, 1 idle)" in capsys.readouterr().out
    fake.workers[endpoint_id] = [{"id": 9001, "status": "loading", "loaded_at": 0.0}]
    assert main(["health", "--serverless", "search"]) == 1
    assert "not ready (1 worker(s): 1 loading)" in capsys.readouterr().out


def instance_row(instance_id: int) -> dict[str, object]:
    """A running instance as Vast lists it (the fields the SDK's listing reads)."""
    return {"id": instance_id, "actual_status": "running", "start_date": 0.0, "extra_env": []}


@pytest.mark.slow
def test_down_deletes_group_and_endpoint_and_destroys_every_instance(env, fake: FakeVast, capsys) -> None:
    code, out, err = run_vast(capsys, "serverless", "up", "--endpoint", "search", "--model", str(MODEL), "--json")
    endpoint_id = json.loads(out)["endpoint_id"]
    fake.instances[9001] = instance_row(9001)
    fake.instances[9005] = instance_row(9005)  # another of the user's instances
    fake.workers[endpoint_id] = [{"id": 9001, "status": "idle", "loaded_at": 1.0}]
    code, out, err = run_vast(capsys, "serverless", "down", "search", "--yes")
    assert code == 0, err
    assert "destroyed instance(s): 9001; none of its instances is left" in out
    assert fake.endpoints == {} and fake.workergroups == {}
    assert set(fake.instances) == {9005}
    code, _, err = run_vast(capsys, "serverless", "status", "search")
    assert code == 2 and "reranker vast serverless up --endpoint search" in err


@pytest.mark.slow
def test_down_says_which_instance_is_still_billing(env, fake: FakeVast, capsys) -> None:
    from support.fake_vast import Reply as VastReply

    code, out, _ = run_vast(capsys, "serverless", "up", "--endpoint", "search", "--model", str(MODEL), "--json")
    endpoint_id = json.loads(out)["endpoint_id"]
    fake.instances[9001] = instance_row(9001)
    fake.workers[endpoint_id] = [{"id": 9001, "status": "idle", "loaded_at": 1.0}]
    fake.inject("DELETE", r"/api/v0/instances/9001/", VastReply(200, {"success": True}))  # says yes, keeps it
    code, _, err = run_vast(capsys, "serverless", "down", "search", "--yes")
    assert code == 1 and "9001 are still listed" in err and "reranker vast destroy" in err


@pytest.mark.slow
def test_up_refuses_impossible_policies_and_names(env, fake: FakeVast, capsys) -> None:
    code, _, err = run_vast(capsys, "serverless", "up", "--endpoint", "a b", "--model", str(MODEL))
    assert code == 2 and "letters, digits" in err
    code, _, err = run_vast(
        capsys,
        "serverless",
        "up",
        "--endpoint",
        "s",
        "--model",
        str(MODEL),
        "--cold-workers",
        "5",
        "--max-workers",
        "2",
    )
    assert code == 2 and "more than --max-workers" in err
    assert fake.seen("POST") == []


@pytest.mark.slow
def test_up_with_bake_runs_the_baked_image_and_says_so(env, fake: FakeVast, capsys) -> None:
    baked = "me/reranker:bge-baked"
    argv = ["serverless", "up", "--endpoint", "search", "--model", str(MODEL), "--bake", baked]
    code, out, err = run_vast(capsys, *argv)
    assert code == 0, err
    [template] = fake.seen("POST", "/api/v0/template/")
    assert (template.body["image"], template.body["tag"]) == ("me/reranker", "bge-baked")
    assert f"-e MODEL_NAME={MODEL}" in template.body["env"]  # the baked copy is served when the names match
    assert "baked into the image" in template.body["desc"]
    assert f"image {baked}: {MODEL} baked in, so workers download nothing at start" in out
    code, _, err = run_vast(capsys, *argv, "--image", "other/image:1")
    assert code == 2 and err.strip() == "reranker: --bake IMAGE and --image IMAGE both name the image to run: give one"
