"""The serverless worker's TLS certificate, signed by Vast, and the error report to Vast's autoscaler.

Vast's router hands clients `https://<ip>:<port>` and clients trust only Vast's root CA, so a worker
with USE_SSL=true (the default) needs a certificate Vast signed for it: we make a key and a CSR, POST
the CSR to `<console>/api/v0/sign_cert/?instance_id=<CONTAINER_ID>` (what Vast's start_server.sh does
with openssl and curl), check that the answer is a certificate for our key, and write both where the
SDK's server reads them (/etc/instance.key, /etc/instance.crt). A certificate for another key, or none,
is an error: serving TLS with it would fail every client's handshake.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from reranker_template.errors import Failure
from reranker_template.fileio import atomic_write

log = logging.getLogger("reranker.worker")

CERT_DIR = Path("/etc")
SIGN_ATTEMPTS = 5
TIMEOUT_SECONDS = 30.0


def make_key_and_csr() -> tuple[bytes, bytes]:
    """A new RSA key and a CSR like start_server.sh's (CN pyworker.vast.ai, SAN IP 0.0.0.0), as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, "pyworker.vast.ai"),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("0.0.0.0"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def certificate_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether `cert_pem` is a PEM certificate for the private key `key_pem`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    return bool(cert.public_key().public_bytes(pem, public) == key.public_key().public_bytes(pem, public))


def _session(attempts: int) -> Any:
    """requests with urllib3's Retry: connection errors and 429/5xx retried with backoff (1, 2, 4 s ...)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=attempts - 1,
        backoff_factor=1.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST too: signing the same CSR twice is harmless
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def ensure_certificate(console_url: str, container_id: int, directory: Path = CERT_DIR) -> Path:
    """Get a Vast-signed certificate for a new key into `directory`; returns the certificate's path."""
    import requests

    key_pem, csr_pem = make_key_and_csr()
    url = f"{console_url.rstrip('/')}/api/v0/sign_cert/?instance_id={container_id}"
    try:
        response = _session(SIGN_ATTEMPTS).post(
            url, data=csr_pem, headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT_SECONDS
        )
    except requests.RequestException as exc:
        raise Failure(f"cannot reach Vast to sign the worker's TLS certificate ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise Failure(f"Vast refused to sign the worker's TLS certificate: HTTP {response.status_code}")
    if not certificate_matches(response.content, key_pem):
        raise Failure("Vast's answer to the certificate request is not a certificate for this worker's key")
    atomic_write(directory / "instance.key", key_pem)
    cert = directory / "instance.crt"
    atomic_write(cert, response.content, mode=0o644)
    log.info("TLS certificate signed by Vast for instance %d", container_id)
    return cert


def report_error(report_addr: str, container_id: int, master_token: str, url: str, message: str) -> None:
    """Tell Vast's autoscaler this worker cannot start (as start_server.sh does), best effort."""
    import requests

    body = {"id": container_id, "mtoken": master_token, "version": "reranker", "error_msg": message, "url": url}
    for address in report_addr.split(","):
        try:
            requests.post(f"{address.rstrip('/')}/worker_status/", json=body, timeout=10).raise_for_status()
            return
        except requests.RequestException as exc:
            log.warning("could not report the error to %s: %s", address, type(exc).__name__)
