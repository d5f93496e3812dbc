"""Loopback stand-ins for what cannot exist here: Vast's API, and the gateway of a rented instance.

`FakeVast` serves, with Vast's wire conventions, the endpoint behind each call of
`reranker_template.vast.api.VastApi` (`ROUTES`, one per Protocol method: a test checks they match), so
the tests run the real vastai SDK against it. It records every request so tests can assert exact bodies.
`FakeGateway` answers GET /health from a script (503 loading ... then 200 ready).
Both are `support.loopback.LoopbackServer`s.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from reranker_template.cli import main
from support import loopback

API_KEY = "test-vast-key"
USER_ID = 4242


@dataclass
class Request:
    """A request as Vast's handlers see it: the query's values and the body decoded from JSON."""

    method: str
    path: str
    query: dict[str, Any]
    body: Any
    headers: dict[str, str]

    @classmethod
    def parse(cls, raw: loopback.Request) -> Request:
        try:
            body = json.loads(raw.body) if raw.body else None
        except ValueError:
            body = raw.body.decode(errors="replace")
        query: dict[str, Any] = {}
        for key, value in parse_qsl(raw.query, keep_blank_values=True):
            try:
                query[key] = json.loads(value)
            except ValueError:
                query[key] = value
        return cls(raw.method, raw.path, query, body, dict(raw.headers))


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _JsonServer:
    """A loopback server whose `handle(Request) -> Reply` answers in JSON; keeps every request."""

    def __init__(self, host: str = loopback.LOOPBACK) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = loopback.LoopbackServer(self._serve, host=host)  # "0.0.0.0": containers reach it too

    def _serve(self, raw: loopback.Request) -> loopback.Reply:
        request = Request.parse(raw)
        with self.lock:
            self.requests.append(request)
        reply = self.handle(request)
        if isinstance(reply.body, bytes):  # a file, e.g. Vast's root certificate
            return loopback.Reply(reply.status, reply.body, reply.headers)
        # The vastai SDK insists on exactly this content type (Reply.json sends it).
        return loopback.Reply.json(reply.body, reply.status, reply.headers)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> _JsonServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def handle(self, request: Request) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError

    def seen(self, method: str, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and (path is None or r.path == path)]


class FakeGateway(_JsonServer):
    """The instance's gateway: /health answers from `script` (the last entry repeats)."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]] | None = None) -> None:
        super().__init__()
        self.script = list(script or [(503, {"status": "loading", "phase": "downloading"}), (200, {"status": "ready"})])

    def handle(self, request: Request) -> Reply:
        if request.path != "/health":
            return Reply(404, {"error": "not found"})
        with self.lock:
            status, body = self.script[0] if len(self.script) == 1 else self.script.pop(0)
        return Reply(status, body)


def default_offers() -> list[dict[str, Any]]:
    base = {
        "verified": True,
        "external": False,
        "rentable": True,
        "rented": False,
        "static_ip": True,
        "direct_port_count": 20,
        "reliability2": 0.99,
        "compute_cap": 890,
        "num_gpus": 1,
        "cuda_max_good": 12.8,
        "disk_space": 200.0,
        "public_ipaddr": "203.0.113.7",
    }
    rows = [
        dict(id=9001, gpu_name="RTX 4090", gpu_ram=24564.0, dph_total=0.35, geolocation="Sweden, SE"),
        dict(id=9002, gpu_name="RTX 3090", gpu_ram=24576.0, dph_total=0.22, geolocation="Texas, US"),
        dict(id=9003, gpu_name="RTX A4000", gpu_ram=16376.0, dph_total=0.12, geolocation="Quebec, CA"),
        dict(id=9004, gpu_name="H100 SXM", gpu_ram=81559.0, dph_total=2.10, geolocation="Virginia, US"),
        dict(
            id=9005, gpu_name="GTX 1080 Ti", gpu_ram=11264.0, dph_total=0.08, geolocation="Poland, PL", compute_cap=610
        ),
        dict(id=9006, gpu_name="RTX 3060", gpu_ram=12288.0, dph_total=0.07, geolocation="Spain, ES"),
        dict(id=9007, gpu_name="RTX 4090", gpu_ram=24564.0, dph_total=0.60, geolocation="Ohio, US", num_gpus=2),
        dict(id=9008, gpu_name="RTX 3090", gpu_ram=24576.0, dph_total=0.15, geolocation="Nowhere", reliability2=0.80),
    ]
    return [{**base, **row} for row in rows]


def _matches(offer: dict[str, Any], filters: dict[str, Any]) -> bool:
    for name, condition in filters.items():
        if name in ("order", "type", "limit", "allocated_storage") or not isinstance(condition, dict):
            continue
        value = offer.get(name)
        for op, want in condition.items():
            if value is None:
                return False
            if op == "eq" and value != want:
                return False
            if op == "neq" and value == want:
                return False
            if op in ("gte", "lte", "gt", "lt"):
                number, limit = float(value), float(want)
                if not {"gte": number >= limit, "lte": number <= limit, "gt": number > limit, "lt": number < limit}[op]:
                    return False
            if op == "in" and value not in want:
                return False
    return True


# The endpoint the vastai SDK calls for each VastApi method: (HTTP method, path pattern).
ROUTES: dict[str, tuple[str, str]] = {
    "search_offers": ("POST", r"/api/v0/bundles/"),
    "create_instance": ("PUT", r"/api/v0/asks/(\d+)/"),
    "show_instance": ("GET", r"/api/v0/instances/(\d+)/"),
    "destroy_instance": ("DELETE", r"/api/v0/instances/(\d+)/"),
    "show_instances": ("GET", r"/api/v1/instances/"),
    "show_user": ("GET", r"/api/v0/users/current/?"),
    "search_templates": ("GET", r"/api/v0/template/"),
    "create_template": ("POST", r"/api/v0/template/"),
    "update_template": ("PUT", r"/api/v1/template/"),
    # Vast Serverless: endpoints ("endptjobs"), worker groups ("autojobs") and the autoscaler's views,
    # which the SDK asks at VAST_URL when that is not Vast's own console.
    "show_endpoints": ("GET", r"/api/v0/endptjobs/"),
    "fetch_endpoint": ("GET", r"/api/v0/endptjobs/(\d+)/"),
    "create_endpoint": ("POST", r"/api/v0/endptjobs/"),
    "update_endpoint": ("PUT", r"/api/v0/endptjobs/(\d+)/"),
    "delete_endpoint": ("DELETE", r"/api/v0/endptjobs/(\d+)/"),
    "show_workergroups": ("GET", r"/api/v0/autojobs/"),
    "create_workergroup": ("POST", r"/api/v0/autojobs/"),
    "update_workergroup": ("PUT", r"/api/v0/autojobs/(\d+)/"),
    "delete_workergroup": ("DELETE", r"/api/v0/autojobs/(\d+)/"),
    "get_endpoint_workers": ("POST", r"/get_endpoint_workers/"),
    "get_endpt_logs": ("POST", r"/get_endpoint_logs/"),
}
# Calls of the serverless client that are no VastApi method (the client SDK's own).
CLIENT_ROUTES = {"fetch_endpoint"}


class ServerlessRoutes:
    """FakeVast's serverless endpoints (a mixin: state lives in FakeVast.__init__)."""

    endpoints: dict[int, dict[str, Any]]
    workergroups: dict[int, dict[str, Any]]
    workers: dict[int, list[dict[str, Any]]]
    logs: dict[str, str]
    serial: int

    def _new_id(self) -> int:
        self.serial += 1
        return self.serial

    def _show_endpoints(self, request: Request) -> Reply:
        return Reply(200, {"success": True, "results": [dict(row) for row in self.endpoints.values()]})

    def _fetch_endpoint(self, request: Request, endpoint_id: str) -> Reply:
        row = self.endpoints.get(int(endpoint_id))
        return Reply(200, {"success": True, "result": row}) if row else Reply(404, {"success": False, "msg": "no"})

    def _create_endpoint(self, request: Request) -> Reply:
        endpoint_id = self._new_id()
        body = {k: v for k, v in dict(request.body).items() if k != "client_id"}
        row = {**body, "id": endpoint_id, "api_key": f"endpoint-key-{endpoint_id}", "user_id": USER_ID}
        self.endpoints[endpoint_id] = {**row, "created_at": time.time(), "endpoint_state": "active"}
        return Reply(200, {"success": True, "result": endpoint_id})

    def _update_endpoint(self, request: Request, endpoint_id: str) -> Reply:
        row = self.endpoints[int(endpoint_id)]
        row.update({k: v for k, v in dict(request.body).items() if k not in ("client_id", "endptjob_id")})
        return Reply(200, {"success": True})

    def _delete_endpoint(self, request: Request, endpoint_id: str) -> Reply:
        self.endpoints.pop(int(endpoint_id))
        return Reply(200, {"success": True})

    def _show_workergroups(self, request: Request) -> Reply:
        return Reply(200, {"success": True, "results": [dict(row) for row in self.workergroups.values()]})

    def _create_workergroup(self, request: Request) -> Reply:
        group_id = self._new_id()
        body = {k: v for k, v in dict(request.body).items() if k != "client_id"}
        self.workergroups[group_id] = {**body, "id": group_id}
        return Reply(200, {"success": True, "id": group_id})

    def _update_workergroup(self, request: Request, group_id: str) -> Reply:
        self.workergroups[int(group_id)].update(dict(request.body))
        return Reply(200, {"success": True})

    def _delete_workergroup(self, request: Request, group_id: str) -> Reply:
        self.workergroups.pop(int(group_id))
        return Reply(200, {"success": True})

    def _get_endpoint_workers(self, request: Request) -> Reply:
        return Reply(200, list(self.workers.get(int(request.body["id"]), [])))

    def _get_endpt_logs(self, request: Request) -> Reply:
        return Reply(200, dict(self.logs))


class FakeVast(_JsonServer, ServerlessRoutes):
    """Vast's API as the vastai SDK sees it. Tests set `script`, `taken`, `credit` or `inject(...)`."""

    def __init__(self, gateway_port: int = 0, host: str = loopback.LOOPBACK) -> None:
        super().__init__(host)
        self.offers = default_offers()
        self.taken: set[int] = set()  # offers search still shows but someone else rents first
        self.credit = 25.0
        self.instances: dict[int, dict[str, Any]] = {}
        self.scripts: dict[int, list[dict[str, Any]]] = {}
        # What successive show-instance calls see for a new instance (the last entry repeats).
        self.script: list[dict[str, Any]] = [
            {"actual_status": "created"},
            {"actual_status": "loading", "status_msg": "pulling image"},
            {"actual_status": "running", "status_msg": "success, running"},
        ]
        self.gateway_port = gateway_port
        self.ssh_host_port = 41022  # what Vast maps to 22/tcp when the create request publishes it
        self.templates: list[dict[str, Any]] = []
        self.template_serial = 0
        self.injected: list[tuple[str, str, Reply]] = []
        self.next_id = 30000001
        self.endpoints: dict[int, dict[str, Any]] = {}
        self.workergroups: dict[int, dict[str, Any]] = {}
        self.workers: dict[int, list[dict[str, Any]]] = {}  # by endpoint id: what get_endpoint_workers lists
        self.logs: dict[str, str] = {"info0": "", "info1": "worker 777: loaded\n", "trace": "", "debug": ""}
        self.serial = 100
        self.root_certificate = b""  # PEM of the CA that signs workers' certificates (tests set it)
        self.sign_certificate: Callable[[bytes], bytes] | None = None  # CSR -> certificate (tests set it)

    def inject(self, method: str, path_pattern: str, reply: Reply, times: int = 1) -> None:
        """The next `times` requests matching method and path regex get `reply` instead."""
        self.injected.extend([(method, path_pattern, reply)] * times)

    def handle(self, request: Request) -> Reply:
        if request.method == "GET" and request.path == "/static/jvastai_root.cer":  # public, as on Vast
            return Reply(200, self.root_certificate)
        if request.method == "POST" and request.path == "/api/v0/sign_cert/" and self.sign_certificate:
            csr = request.body.encode() if isinstance(request.body, str) else b""
            return Reply(200, self.sign_certificate(csr))
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return Reply(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
        with self.lock:
            for i, (method, pattern, reply) in enumerate(self.injected):
                if method == request.method and re.fullmatch(pattern, request.path):
                    del self.injected[i]
                    return reply
        for name, (method, pattern) in ROUTES.items():
            match = re.fullmatch(pattern, request.path)
            if method == request.method and match:
                route: Callable[..., Reply] = getattr(self, f"_{name}")
                with self.lock:
                    return route(request, *match.groups())
        return Reply(404, {"success": False, "error": "not_found", "msg": f"no route {request.method} {request.path}"})

    # offers
    def _search_offers(self, request: Request) -> Reply:
        body = request.body or {}
        rows = [o for o in self.offers if _matches(o, body)]
        for field_name, direction in reversed(body.get("order") or []):
            rows.sort(key=lambda o: o.get(field_name) or 0, reverse=direction == "desc")
        if body.get("limit"):
            rows = rows[: int(body["limit"])]
        return Reply(200, {"offers": rows})

    def _create_instance(self, request: Request, offer_id: str) -> Reply:
        offer = next((o for o in self.offers if o["id"] == int(offer_id)), None)
        if offer is None or offer["id"] in self.taken:
            return Reply(
                400,
                {"success": False, "error": "no_such_ask", "msg": f"Instance type by id {offer_id} is not available."},
            )
        if offer["dph_total"] > self.credit:
            return Reply(
                400,
                {
                    "success": False,
                    "error": "insufficient_credit",
                    "msg": "Your account lacks credit; see the billing page.",
                },
            )
        self.offers.remove(offer)
        instance_id = self.next_id
        self.next_id += 1
        body = request.body or {}
        self.instances[instance_id] = {
            "id": instance_id,
            "actual_status": None,
            "intended_status": "running",
            "status_msg": "",
            "public_ipaddr": "127.0.0.1",
            "ports": {},
            "ssh_host": "ssh7.vast.example",
            "ssh_port": 20544,
            "start_date": time.time(),
            "gpu_name": offer["gpu_name"],
            "num_gpus": offer["num_gpus"],
            "dph_total": offer["dph_total"],
            "label": body.get("label"),
            "image_uuid": body.get("image"),
            "extra_env": [[k, v] for k, v in (body.get("env") or {}).items() if not k.startswith("-")],
            "published": [k for k in (body.get("env") or {}) if k.startswith("-p ")],
        }
        self.scripts[instance_id] = [dict(step) for step in self.script]
        return Reply(200, {"success": True, "new_contract": instance_id})

    # instances
    def _advance(self, instance_id: int) -> dict[str, Any]:
        row = self.instances[instance_id]
        script = self.scripts.get(instance_id) or []
        if script:
            row.update(script[0] if len(script) == 1 else script.pop(0))
        if row.get("actual_status") == "running":
            row["ports"] = {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.gateway_port)}]}
            if "-p 22:22" in row.get("published", []):
                row["ports"]["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": str(self.ssh_host_port)}]
        return row

    def _show_instance(self, request: Request, instance_id: str) -> Reply:
        if int(instance_id) not in self.instances:
            return Reply(200, {"instances": None})
        return Reply(200, {"instances": dict(self._advance(int(instance_id)))})

    def _show_instances(self, request: Request) -> Reply:
        return Reply(200, {"instances": [dict(row) for row in self.instances.values()], "next_token": None})

    def _destroy_instance(self, request: Request, instance_id: str) -> Reply:
        if self.instances.pop(int(instance_id), None) is None:
            return Reply(
                404, {"success": False, "error": "no_such_instance", "msg": f"Instance {instance_id} not found."}
            )
        return Reply(200, {"success": True})

    # users and templates
    def _show_user(self, request: Request) -> Reply:
        return Reply(200, {"id": USER_ID, "username": "tester", "credit": self.credit, "api_key": API_KEY})

    def _search_templates(self, request: Request) -> Reply:
        filters = request.query.get("select_filters") or {}
        rows = [t for t in self.templates if _matches(t, filters)]
        return Reply(200, {"success": True, "templates": rows})

    def _save_template(self, body: dict[str, Any], template_id: int) -> dict[str, Any]:
        self.template_serial += 1
        template = {**body, "id": template_id, "hash_id": f"hash{self.template_serial:04d}", "creator_id": USER_ID}
        self.templates.append(template)
        return template

    def _create_template(self, request: Request) -> Reply:
        template = self._save_template(dict(request.body), 500 + self.template_serial)
        return Reply(200, {"success": True, "template": template})

    def _update_template(self, request: Request) -> Reply:
        body = dict(request.body)
        old = next(
            (t for t in self.templates if t["id"] == body.get("id") and t["hash_id"] == body.get("hash_id")), None
        )
        if old is None:
            return Reply(404, {"success": False, "error": "not_found", "msg": "no such template"})
        self.templates.remove(old)
        body.pop("hash_id")
        return Reply(200, {"success": True, "template": self._save_template(body, old["id"])})


def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeVast) -> dict[str, str]:
    """HOME and XDG dirs in tmp_path (the vastai package writes there), VAST_URL at the fake; the environment."""
    values = {
        "HOME": tmp_path / "home",
        "XDG_CONFIG_HOME": tmp_path / "config",
        "XDG_CACHE_HOME": tmp_path / "cache",
        "XDG_DATA_HOME": tmp_path / "data",
        "XDG_STATE_HOME": tmp_path / "state",
        "HF_HOME": tmp_path / "hf",
    }
    for name, path in values.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("VAST_URL", fake.url + "/")  # a trailing slash must not break the URLs
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    monkeypatch.setenv("VASTAI_NO_UPDATE_CHECK", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MODEL_NAME", raising=False)
    return dict(os.environ)


def run_vast(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`reranker vast ARGV` in this process: (exit code, stdout, stderr)."""
    code = main(["vast", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_records(env: dict[str, str]) -> dict[str, Any]:
    """What launch recorded in instances.json, by instance id (as text)."""
    data = json.loads((Path(env["XDG_CONFIG_HOME"]) / "reranker" / "instances.json").read_text())
    return dict(data["instances"])
