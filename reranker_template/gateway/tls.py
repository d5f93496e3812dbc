"""ENABLE_HTTPS: which certificate to serve, and a self-signed one when none is provided.

Order: TLS_CERT_FILE + TLS_KEY_FILE from the environment; Vast's /etc/instance.crt + /etc/instance.key;
else a self-signed certificate generated once into the state directory and reused, with its SHA-256
fingerprint logged so a user can check what the browser shows.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reranker_template.errors import ConfigError
from reranker_template.fileio import atomic_write
from reranker_template.settings import Settings

log = logging.getLogger("reranker.gateway")

VAST_CERT = Path("/etc/instance.crt")
VAST_KEY = Path("/etc/instance.key")


class TlsOrigin(StrEnum):
    """Where the certificate came from (logged, so a user knows which one the browser sees)."""

    ENVIRONMENT = "environment"  # TLS_CERT_FILE + TLS_KEY_FILE
    VAST = "vast"  # /etc/instance.crt + /etc/instance.key
    SELF_SIGNED = "self-signed"  # generated into the state directory


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    origin: TlsOrigin


def choose_tls_files(
    settings: Settings, state_dir: Path, vast_cert: Path = VAST_CERT, vast_key: Path = VAST_KEY
) -> TlsFiles:
    """Which certificate and key to use (pure apart from existence checks)."""
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            missing = "TLS_KEY_FILE" if settings.tls_cert_file else "TLS_CERT_FILE"
            raise ConfigError(missing, "", "set together with the other one (TLS_CERT_FILE and TLS_KEY_FILE)")
        for variable, value in (("TLS_CERT_FILE", settings.tls_cert_file), ("TLS_KEY_FILE", settings.tls_key_file)):
            if not Path(value).is_file():
                raise ConfigError(variable, value, "the path of an existing PEM file")
        return TlsFiles(Path(settings.tls_cert_file), Path(settings.tls_key_file), TlsOrigin.ENVIRONMENT)
    if vast_cert.is_file() and vast_key.is_file():
        return TlsFiles(vast_cert, vast_key, TlsOrigin.VAST)
    tls_dir = state_dir / "tls"
    return TlsFiles(tls_dir / "self-signed.crt", tls_dir / "self-signed.key", TlsOrigin.SELF_SIGNED)


def generate_self_signed(cert_path: Path, key_path: Path, hostnames: list[str], days: int = 3650) -> None:
    """An ECDSA P-256 certificate for `hostnames` (DNS names or IP addresses), key written with mode 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reranker gateway (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(key_path, private, mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)  # public: 0644 as before


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint as browsers show it: AA:BB:..."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def default_hostnames(env: Mapping[str, str]) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if env.get("PUBLIC_IPADDR"):
        names.append(env["PUBLIC_IPADDR"].strip())
    return [n for n in names if n]


def server_context(
    settings: Settings,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    vast_cert: Path = VAST_CERT,
    vast_key: Path = VAST_KEY,
) -> tuple[ssl.SSLContext, TlsFiles]:
    """The SSL context the gateway serves with; generates the self-signed pair when needed."""
    env = os.environ if env is None else env
    files = choose_tls_files(settings, state_dir, vast_cert, vast_key)
    if files.origin is TlsOrigin.SELF_SIGNED and not (files.cert.is_file() and files.key.is_file()):
        generate_self_signed(files.cert, files.key, default_hostnames(env))
        log.info("HTTPS: generated a self-signed certificate in %s", files.cert)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("TLS_CERT_FILE", str(files.cert), f"a PEM certificate matching {files.key} ({exc})") from None
    log.info("HTTPS on (%s certificate %s), SHA-256 fingerprint %s", files.origin, files.cert, fingerprint(files.cert))
    return context, files
