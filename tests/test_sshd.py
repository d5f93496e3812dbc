"""The image's own sshd: the rendered config, the files it needs, and a real sshd run with that config.

The real-sshd tests start Debian's /usr/sbin/sshd (`make sshd` installs it) with OUR rendered config on
a free loopback port, in the foreground (-D -e, not as PID 1), with host keys generated in tmp_path,
and drive it with the real ssh client: key login, no password login, `-L` to a loopback HTTP server
standing in for vLLM, `-R` refused.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.loopback import LoopbackServer, Reply, free_port
from support.ssh import keygen, wait_port

from reranker_template.errors import ConfigError
from reranker_template.paths import Paths
from reranker_template.serve import sshd
from reranker_template.serve.supervisor import SupervisorConfig, render
from reranker_template.settings import load_settings

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmK2F0w1h6bEm3Qm0cYx4YyS1o7g3m1nZbq5k1cQZ6Z alice@laptop"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@desk"

SSHD = sshd.find_sshd()
needs_sshd = pytest.mark.skipif(
    SSHD is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server and root (`make sshd` installs it)",
)
# Settings and rendering run in the fast loop; a test that runs ssh-keygen, sshd or ssh is marked slow.


def paths_in(tmp_path: Path, container: bool = False) -> Paths:
    return Paths(state_dir=tmp_path / "state", log_dir=tmp_path / "logs", cache_dir=None, container=container)


# --------------------------------------------------------------------------------------------- settings


def test_keys_from_ssh_public_key_and_vasts_public_key():
    settings = load_settings(
        {"SSH_PUBLIC_KEY": f"{ED25519}\n\n# a comment\n{RSA}\n", "PUBLIC_KEY": f"{ED25519}\nnot a key"}
    )
    assert settings.ssh_public_keys == (ED25519, RSA)  # de-duplicated; Vast's junk line skipped
    assert settings.ssh_port == 22
    one_line = load_settings({"SSH_PUBLIC_KEY": f"{ED25519}\\n{RSA}"})  # one-line env editors
    assert one_line.ssh_public_keys == (ED25519, RSA)
    assert load_settings({}).ssh_public_keys == ()
    assert load_settings({"SSH_PUBLIC_KEY": "", "SSH_PORT": "2222"}).ssh_port == 2222


def test_a_bad_key_is_one_clear_line_and_a_private_key_is_never_echoed():
    with pytest.raises(ConfigError) as bad:
        load_settings({"SSH_PUBLIC_KEY": "AAAAC3NzaC1lZDI1NTE5AAAAIOmK2F0w1h6bEm3Qm0cYx4YyS1o7g3m1nZbq5k1cQZ6Z"})
    assert "SSH_PUBLIC_KEY" in str(bad.value) and "id_ed25519.pub" in str(bad.value) and "\n" not in str(bad.value)
    private = "\n".join(
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
            "-----END OPENSSH PRIVATE KEY-----",
        )
    )
    with pytest.raises(ConfigError) as leaked:
        load_settings({"SSH_PUBLIC_KEY": private})
    assert "PUBLIC key" in str(leaked.value) and "b3BlbnNzaC1rZXkt" not in str(leaked.value)
    with pytest.raises(ConfigError, match="SSH_PORT"):
        load_settings({"SSH_PORT": "70000"})


# --------------------------------------------------------------------------------------------- rendering


def directives(text: str) -> list[tuple[str, str]]:
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            rows.append((key, value))
    return rows


def test_config_allows_keys_only_and_local_forwarding_only(tmp_path):
    settings = load_settings({"SSH_PUBLIC_KEY": ED25519, "SSH_PORT": "2222"})
    files = sshd.SshdFiles(tmp_path / "sshd")
    text = sshd.render_config(settings, files)
    config = dict(directives(text))
    once = [key for key, _ in directives(text) if key != "HostKey"]
    assert len(once) == len(set(once)), "a directive appears twice (sshd uses the first)"
    assert config["Port"] == "2222" and "ListenAddress" not in config  # every address in the container
    assert config["AuthorizedKeysFile"] == str(files.authorized_keys)
    assert config["AuthenticationMethods"] == "publickey"
    assert config["PasswordAuthentication"] == "no" and config["KbdInteractiveAuthentication"] == "no"
    assert config["PermitRootLogin"] == "prohibit-password" and config["PermitEmptyPasswords"] == "no"
    assert config["AllowTcpForwarding"] == "local"
    assert config["PermitListen"] == "none" and config["GatewayPorts"] == "no"
    for off in (
        "AllowStreamLocalForwarding",
        "AllowAgentForwarding",
        "X11Forwarding",
        "PermitTunnel",
        "PermitUserEnvironment",
    ):
        assert config[off] == "no", off
    assert [value for key, value in directives(text) if key == "HostKey"] == [str(p) for p in files.host_keys()]
    loopback = dict(directives(sshd.render_config(settings, files, listen=("127.0.0.1",))))
    assert loopback["ListenAddress"] == "127.0.0.1"


def test_authorized_keys_holds_every_key_one_per_line():
    settings = load_settings({"SSH_PUBLIC_KEY": f"{ED25519}\n{RSA}"})
    assert sshd.render_authorized_keys(settings) == f"{ED25519}\n{RSA}\n"


def test_tunnel_command_uses_vasts_mapped_port():
    settings = load_settings({"SSH_PUBLIC_KEY": ED25519})
    env = {"PUBLIC_IPADDR": "203.0.113.9", "VAST_TCP_PORT_22": "40022"}
    assert sshd.tunnel_command(settings, env) == "ssh -p 40022 root@203.0.113.9 -N -L 18000:localhost:18000"
    assert sshd.tunnel_command(settings, {}) == "ssh -p <ssh-port> root@<instance-ip> -N -L 18000:localhost:18000"


# --------------------------------------------------------------------------------------------- supervisord


def test_supervisord_runs_sshd_only_with_a_program(tmp_path):
    paths = paths_in(tmp_path)
    without = render(SupervisorConfig(python="/usr/bin/python3", paths=paths))
    assert "[program:sshd]" not in without
    program = sshd.SshdProgram(binary=Path("/usr/sbin/sshd"), config=tmp_path / "state" / "sshd" / "sshd_config")
    with_sshd = render(SupervisorConfig(python="/usr/bin/python3", paths=paths, sshd=program))
    assert "[program:sshd]" in with_sshd
    assert f"command=/usr/sbin/sshd -D -e -f {program.config}\n" in with_sshd


def test_prepare_without_a_key_starts_no_sshd(tmp_path):
    lines: list[str] = []
    assert sshd.prepare(load_settings({}), paths_in(tmp_path, container=True), report=lines.append) is None
    assert not (tmp_path / "state" / "sshd").exists()
    assert lines and "SSH_PUBLIC_KEY" in lines[0]


@pytest.mark.slow
@needs_sshd
def test_prepare_writes_private_files_and_keeps_host_keys_across_restarts(tmp_path):
    settings = load_settings({"SSH_PUBLIC_KEY": ED25519})
    paths = paths_in(tmp_path)
    lines: list[str] = []
    program = sshd.prepare(
        settings, paths, env={"PUBLIC_IPADDR": "203.0.113.9", "VAST_TCP_PORT_22": "40022"}, report=lines.append
    )
    assert program is not None and program.binary == SSHD
    files = sshd.sshd_files(paths)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for path in (files.config, files.authorized_keys, *files.host_keys()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert files.authorized_keys.read_text() == ED25519 + "\n"
    assert "ssh -p 40022 root@203.0.113.9 -N -L 18000:localhost:18000" in lines[-1]
    before = {p: p.read_bytes() for p in files.host_keys()}
    # A restart with another key: same host identity, new authorized_keys.
    assert sshd.prepare(load_settings({"SSH_PUBLIC_KEY": RSA}), paths, report=lines.append) is not None
    assert {p: p.read_bytes() for p in files.host_keys()} == before
    assert files.authorized_keys.read_text() == RSA + "\n"


# --------------------------------------------------------------------------------------------- a real sshd


@pytest.fixture
def vllm_stand_in() -> Iterator[int]:
    """A loopback server standing in for vLLM: its port."""
    with LoopbackServer() as server:
        server.answer("/health", Reply.json({"status": "vllm stand-in"}))
        yield server.port


class RunningSshd:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.client_key = tmp_path / "client" / "id_ed25519"
        self.client_key.parent.mkdir(mode=0o700)
        keygen(self.client_key)
        settings = load_settings(
            {"SSH_PUBLIC_KEY": self.client_key.with_suffix(".pub").read_text(), "SSH_PORT": str(self.port)}
        )
        program = sshd.prepare(settings, paths_in(tmp_path), listen=("127.0.0.1",), report=lambda _line: None)
        assert program is not None
        self.files = sshd.sshd_files(paths_in(tmp_path))
        # The client trusts exactly the host key we generated.
        self.known_hosts = tmp_path / "client" / "known_hosts"
        host_key = self.files.host_key("ed25519").with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        self.log = tmp_path / "sshd.log"
        with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [str(program.binary), "-D", "-e", "-f", str(program.config)], stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_listening()

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while f"Server listening on 127.0.0.1 port {self.port}" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, "sshd exited:\n" + self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "sshd did not listen:\n" + self.log.read_text(errors="replace")
            time.sleep(0.05)

    def ssh_argv(self, *options: str, key: Path | None = None) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(key or self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "ConnectTimeout=10",
            *options,
            "root@127.0.0.1",
        ]

    def run(
        self, *args: str, key: Path | None = None, options: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ssh_argv(*options, key=key), *args], capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def running_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    server = RunningSshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.mark.slow
@needs_sshd
def test_key_login_works_and_other_keys_and_passwords_are_refused(running_sshd, tmp_path):
    ok = running_sshd.run("echo", "logged-in-as", "$(id -u)")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "logged-in-as 0"
    # A key that is not in SSH_PUBLIC_KEY.
    stranger = tmp_path / "stranger"
    keygen(stranger)
    refused = running_sshd.run("true", key=stranger)
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr
    # Password and keyboard-interactive: the server offers neither (only "publickey" is listed).
    password = running_sshd.run(
        "true",
        options=("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"),
    )
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr


@pytest.mark.slow
@needs_sshd
def test_local_forward_reaches_the_loopback_server(running_sshd, vllm_stand_in):
    import urllib.request

    local = free_port()
    tunnel = subprocess.Popen(
        running_sshd.ssh_argv("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{vllm_stand_in}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(local, tunnel)
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/health", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b'{"status": "vllm stand-in"}'
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


@pytest.mark.slow
@needs_sshd
def test_remote_forward_is_refused(running_sshd, vllm_stand_in):
    remote = free_port()
    result = running_sshd.run(
        options=("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{remote}:127.0.0.1:{vllm_stand_in}")
    )
    assert result.returncode == 255
    assert "remote port forwarding failed" in result.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", remote), timeout=1).close()


@pytest.mark.slow
@pytest.mark.parametrize("with_key", [True, False])
def test_the_stack_runs_sshd_only_with_a_key(tmp_path, with_key):
    """`reranker serve`/`boot` write supervisord.conf with the sshd program exactly when a key is set."""
    from reranker_template.serve import stack

    model = Path(__file__).resolve().parent / "fixtures" / "models" / "bge-reranker-v2-m3"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "MODEL_NAME": str(model),
        "RERANKER_STATE_DIR": str(tmp_path / "state"),
        "SSH_PORT": str(free_port()),
    }
    if with_key:
        env["SSH_PUBLIC_KEY"] = ED25519
    conf = stack.write_runtime_files(stack.prepare(container=False, env=env)).read_text()
    if with_key and SSHD is not None:
        assert "[program:sshd]" in conf
        assert f"command={SSHD} -D -e -f {tmp_path / 'state' / 'sshd' / 'sshd_config'}" in conf
    else:
        assert "[program:sshd]" not in conf and not (tmp_path / "state" / "sshd").exists()
