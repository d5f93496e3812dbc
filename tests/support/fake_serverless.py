"""A loopback stand-in for Vast Serverless's autoscaler and router (run.vast.ai), which cannot exist here.

It does what the real one does for our worker and our client, with a key pair made here so that the
worker checks signatures for real (no UNSECURED):
- GET /pubkey/: the public key workers verify routes with;
- POST /worker_status/ and /delete_requests/: a worker's reports, kept in `reports`;
- POST /route/: a client asking for a worker. Until a worker has reported itself loaded (loadtime > 0,
  no error) the answer has no URL (the client polls); then it is the worker's URL, signed as Vast signs
  it (PKCS#1 v1.5, SHA-256, over json.dumps({"url": url}, indent=4, sort_keys=True)).
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.loopback import LOOPBACK, LoopbackServer, Reply, Request

ENDPOINT = "rerank-test"


class FakeRouter:
    def __init__(self, endpoint_key: str, endpoint: str = ENDPOINT, host: str = LOOPBACK) -> None:
        self.endpoint = endpoint
        self.endpoint_key = endpoint_key
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.reports: list[dict[str, Any]] = []
        self.routes: list[dict[str, Any]] = []  # the bodies clients sent to /route/
        self.changed = threading.Condition()
        self.reqnum = 0
        self.detours: list[str] = []  # worker URLs handed out (once each) before the ready worker's
        self.server = LoopbackServer(self._serve, host=host)  # "0.0.0.0": containers reach it too

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FakeRouter:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, url: str) -> str:
        message = json.dumps({"url": url}, indent=4, sort_keys=True).encode()
        return base64.b64encode(self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()

    def ready_worker(self) -> dict[str, Any] | None:
        """The last report of a worker that is loaded and has no error."""
        with self.changed:
            for report in reversed(self.reports):
                if report.get("loadtime", 0) > 0 and not report.get("error_msg"):
                    return report
        return None

    def wait_for_report(self, accept: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first report `accept` takes, waiting for new ones up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((r for r in self.reports if accept(r)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    break
                self.changed.wait(remaining)
        if found is None:
            raise TimeoutError(f"no such worker report within {timeout:.0f} s; last: {self.reports[-1:]}")
        return found

    def _route(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.routes.append(body)
            self.reqnum += 1
            reqnum = self.reqnum
        request_idx = body.get("request_idx") or reqnum
        worker = self.ready_worker()
        if worker is None:
            return {"endpoint": self.endpoint, "status": {"loading": 1}, "request_idx": request_idx}
        with self.changed:
            url = self.detours.pop(0) if self.detours else worker["url"]
        return {
            "endpoint": self.endpoint,
            "url": url,
            "cost": body.get("cost"),
            "reqnum": reqnum,
            "request_idx": request_idx,
            "signature": self.sign(url),
            "__request_id": f"req-{reqnum}",
        }

    def _serve(self, request: Request) -> Reply:
        if request.method == "GET" and request.path == "/pubkey/":
            return Reply(200, self.public_pem(), {"Content-Type": "text/plain"})
        if request.method != "POST":
            return Reply.json({"error": "not found"}, 404)
        body = request.json() if request.body else {}
        if request.path == "/worker_status/":
            with self.changed:
                self.reports.append(body)
                self.changed.notify_all()
            return Reply.json({"success": True})
        if request.path == "/delete_requests/":
            return Reply.json({"success": True})
        if request.path == "/route/":
            if request.headers.get("Authorization") != f"Bearer {self.endpoint_key}":
                return Reply.json({"error": "bad endpoint key"}, 401)
            return Reply.json(self._route(body))
        return Reply.json({"error": "not found"}, 404)


class StandInCa:
    """A certificate authority made here, standing in for Vast's: its certificate is what the console
    serves at /static/jvastai_root.cer, and it signs workers' CSRs (the console's /api/v0/sign_cert/)."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test Vast root")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr_pem: bytes, address: str = "127.0.0.1") -> bytes:
        """A certificate for the CSR's key, for the instance's public `address` (as Vast's console knows it)."""
        import ipaddress

        from cryptography import x509

        csr = x509.load_pem_x509_csr(csr_pem)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)
