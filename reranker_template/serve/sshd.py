"""The image's own OpenSSH server, for `ssh -L 18000:localhost:18000` (vLLM without the token).

Vast's entrypoint mode (runtype "args", which keeps our ENTRYPOINT) starts no SSH server: the image
must. We run one only when the user gives a public key (SSH_PUBLIC_KEY, or Vast's PUBLIC_KEY):
key-only root login, local port forwarding only, host keys generated at the first boot and kept in the
state directory (/workspace/reranker/sshd on Vast) so a restarted instance keeps its identity and
`ssh` does not warn about a changed host key.

`render_config` and `render_authorized_keys` decide (pure); `prepare` writes the files with safe modes,
finds sshd and checks the result with `sshd -t` before supervisord starts it (supervisor/sshd.conf).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reranker_template.fileio import atomic_write
from reranker_template.paths import Paths
from reranker_template.settings import Settings

# ed25519 for every current client, ECDSA for clients limited to NIST curves. Generated once, then
# reused; no RSA host key, whose generation takes seconds of CPU on a busy host.
HOST_KEY_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (("ed25519", ()), ("ecdsa", ("-b", "256")))
# Debian's and Ubuntu's sshd refuse to start without their privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")
SSHD_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin"

Reporter = Callable[[str], None]
log = logging.getLogger("reranker.sshd")


@dataclass(frozen=True)
class SshdFiles:
    """Where our sshd's config, keys and authorized_keys live (one private directory)."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.directory / "authorized_keys"

    def host_key(self, kind: str) -> Path:
        return self.directory / f"ssh_host_{kind}_key"

    def host_keys(self) -> list[Path]:
        return [self.host_key(kind) for kind, _ in HOST_KEY_TYPES]


@dataclass(frozen=True)
class SshdProgram:
    """What supervisord runs: `<binary> -D -e -f <config>`."""

    binary: Path
    config: Path


def sshd_files(paths: Paths) -> SshdFiles:
    return SshdFiles(paths.state_dir / "sshd")


def render_authorized_keys(settings: Settings) -> str:
    return "".join(f"{key}\n" for key in settings.ssh_public_keys)


def render_config(settings: Settings, files: SshdFiles, listen: Sequence[str] = ()) -> str:
    """sshd_config: public keys only, root by key only, `-L` forwarding only.

    `listen` restricts the addresses (the tests use 127.0.0.1); empty means every address, as in the
    container, where Vast maps an external port to SSH_PORT.
    """
    lines = [
        "# Rendered by reranker_template/serve/sshd.py at every start (from SSH_PUBLIC_KEY / PUBLIC_KEY, SSH_PORT):",
        "# edits here are overwritten.",
        f"Port {settings.ssh_port}",
        *(f"ListenAddress {address}" for address in listen),
        *(f"HostKey {path}" for path in files.host_keys()),
        "PidFile none",
        "LogLevel INFO",
        # Authentication: a key from authorized_keys and nothing else; root (the container's user) by key only.
        f"AuthorizedKeysFile {files.authorized_keys}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "LoginGraceTime 30",
        # root writes authorized_keys (0600, in a 0700 directory) at every boot from the environment, and
        # the container has no other user; StrictModes would also demand that every directory above it
        # (a volume like /workspace, whose modes the host decides) be unwritable by others, and then
        # refuse every key without a word to the user.
        "StrictModes no",
        # Forwarding: `ssh -L` to vLLM's loopback port (or any local one); nothing else.
        "AllowTcpForwarding local",
        "PermitListen none",
        "GatewayPorts no",
        "AllowStreamLocalForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        # Keep idle tunnels alive through NAT, and notice dead clients.
        "ClientAliveInterval 60",
        "ClientAliveCountMax 3",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
    ]
    return "\n".join(lines) + "\n"


def find_sshd(env: Mapping[str, str] | None = None) -> Path | None:
    """sshd's absolute path (it re-executes itself per connection, so it must be absolute)."""
    env = os.environ if env is None else env
    search = ":".join(p for p in (env.get("PATH", ""), SSHD_SEARCH_PATH) if p)
    found = shutil.which("sshd", path=search)
    return Path(found).resolve() if found else None


def ensure_host_keys(files: SshdFiles) -> list[Path]:
    """Generate the host keys that do not exist yet; returns the new ones (none on a restart)."""
    created = []
    for kind, extra in HOST_KEY_TYPES:
        key = files.host_key(kind)
        if key.exists():
            continue
        for stale in (key, key.with_name(key.name + ".pub")):
            stale.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"reranker-{kind}-host-key", "-f", str(key)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        created.append(key)
    return created


def write_files(settings: Settings, files: SshdFiles, listen: Sequence[str] = ()) -> None:
    files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(files.directory, 0o700)
    ensure_host_keys(files)
    atomic_write(files.authorized_keys, render_authorized_keys(settings))  # private (0600), as sshd wants
    atomic_write(files.config, render_config(settings, files, listen))


def check_config(program: SshdProgram) -> str | None:
    """`sshd -t`: None when sshd accepts the config and host keys, else its complaint."""
    result = subprocess.run(
        [str(program.binary), "-t", "-f", str(program.config)], capture_output=True, text=True, timeout=30
    )
    return (
        None
        if result.returncode == 0
        else (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    )


def ssh_tunnel_command(host: str | None, ssh_port: int | str | None, vllm_port: int) -> str:
    """The one SSH tunnel command we show anywhere (landing page, boot log, `reranker vast`).

    `-N`: a tunnel only, no remote shell. Unknown parts are shown as placeholders to fill in.
    """
    return f"ssh -p {ssh_port or '<ssh-port>'} root@{host or '<instance-ip>'} -N -L {vllm_port}:localhost:{vllm_port}"


def tunnel_command(settings: Settings, env: Mapping[str, str]) -> str:
    """The tunnel on this instance: Vast's public IP and the external port Vast maps to SSH_PORT."""
    host = env.get("PUBLIC_IPADDR", "").strip()
    port = env.get(f"VAST_TCP_PORT_{settings.ssh_port}", "").strip()
    return ssh_tunnel_command(host, port, settings.vllm_port)


def prepare(
    settings: Settings,
    paths: Paths,
    *,
    listen: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    report: Reporter = log.info,
) -> SshdProgram | None:
    """Everything sshd needs before supervisord starts it, or None (no key, no sshd, bad config).

    SSH is a convenience beside the gateway: when it cannot run, say why and serve anyway.
    """
    env = os.environ if env is None else env
    if not settings.ssh_public_keys:
        if paths.container:
            report("SSH: off (set SSH_PUBLIC_KEY to your public key to reach vLLM through `ssh -L`)")
        return None
    binary = find_sshd(env)
    if binary is None:
        report("SSH: SSH_PUBLIC_KEY is set but sshd is not installed here (apt-get install openssh-server): no SSH")
        return None
    files = sshd_files(paths)
    try:
        write_files(settings, files, listen)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except (OSError, subprocess.SubprocessError) as exc:
        report(f"SSH: cannot prepare sshd in {files.directory} ({exc}): no SSH")
        return None
    program = SshdProgram(binary=binary, config=files.config)
    problem = check_config(program)
    if problem:
        report(f"SSH: sshd rejects {files.config} ({problem}): no SSH")
        return None
    count = len(settings.ssh_public_keys)
    report(f"SSH: sshd on port {settings.ssh_port} for {count} key{'s' if count != 1 else ''}, key login only")
    report(f"SSH: vLLM without the token: {tunnel_command(settings, env)}")
    return program
