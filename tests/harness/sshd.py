"""Real OpenSSH servers, one per simulated host: on loopback ports, or (the namespace test
bed, tests/harness/netns.py) on each host's own address, port 22, inside its namespace.

Each host gets its own `sshd -D -e -f <cfg>` with its own ed25519 host key, key-only root
login with one generated client key, and `SetEnv` so that every session sees that host's
environment (the stand-in `zfs` first on PATH, `ZFS_STANDIN_ROOT` set to the host's own
directory). One client `ssh_config` + `known_hosts` pair names every host, so
`ssh -F cfg hostb` and `SshOptions(config_file=cfg)` both reach "hostb" by name.

sshd runs each command through root's login shell, which may read ~/.bashrc; `HOME` is set to
the host's own (empty) directory so root's dotfiles neither slow commands down nor change PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.netutil import (
    REPO,
    free_port,
    spawn_logged,
    stop_pid,
    tail,
    wait_for_port,
)
from tests.harness.pids import kill_pinned, pin_tree
from workers.exec.ssh_options import SshOptions

SSHD = "/usr/sbin/sshd"  # sshd refuses to run (re-exec) unless started by absolute path
DEFAULT_PATH = f"{REPO}/tests/standin:/usr/local/bin:/usr/bin:/bin"


def sshd_unavailable() -> str | None:
    """Why real sshd hosts cannot run here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found (Debian: apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        return "ssh / ssh-keygen not found (Debian: apt-get install openssh-client)"
    if os.geteuid() != 0:
        return "sshd test hosts need root (sshd must own privilege separation)"
    return None


@dataclass
class SshdHost:
    name: str
    port: int
    root: Path  # the host's own directory (ZFS_STANDIN_ROOT unless env says otherwise)
    env: dict[str, str]
    workdir: Path
    host_key: Path
    config_file: Path  # the shared client ssh_config (every host)
    known_hosts: Path  # the shared client known_hosts
    identity_file: Path
    sshd_config: tuple[str, ...] = ()  # extra sshd_config lines
    listen: str = "127.0.0.1"  # the address sshd listens on and clients connect to
    prefix: tuple[str, ...] = ()  # what sshd runs inside, e.g. ("ip", "netns", "exec", NS)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"sshd for {self.name} is not running"
        return self.proc.pid

    @property
    def host_key_pub(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().strip()

    @property
    def known_hosts_line(self) -> str:
        keytype, key = self.host_key_pub.split()[:2]
        where = self.listen if self.port == 22 else f"[{self.listen}]:{self.port}"
        return f"{where} {keytype} {key}"

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    def ssh_options(self, **overrides: object) -> SshOptions:
        """Options that reach this host (and every other one) by name through the config."""
        return SshOptions(config_file=str(self.config_file), **overrides)  # type: ignore[arg-type]

    def ssh_argv(self, *command: str) -> list[str]:
        """`ssh -F cfg name command...`, for tests that want plain OpenSSH."""
        return ["ssh", "-F", str(self.config_file), self.name, *command]


class SshdCluster:
    """Every simulated host of a test session, and the client files that reach them.

    `client_options` are added to every host's stanza in the client config (the namespace
    bed's keepalives)."""

    def __init__(self, base: Path, client_options: Sequence[str] = ()) -> None:
        self.base = base
        self.client_options = tuple(client_options)
        self.client_dir = base / "client"
        self.client_dir.mkdir(parents=True, exist_ok=True)
        self.identity_file = self.client_dir / "id_ed25519"
        self.config_file = self.client_dir / "ssh_config"
        self.known_hosts = self.client_dir / "known_hosts"
        self.authorized_keys = self.client_dir / "authorized_keys"
        self.hosts: dict[str, SshdHost] = {}
        self._lock = threading.Lock()
        _keygen(self.identity_file, "zrepq-test-client")
        self.authorized_keys.write_text(Path(f"{self.identity_file}.pub").read_text())
        self.known_hosts.touch()
        # sshd needs its privilege separation directory; fresh containers lack it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def host(
        self,
        name: str,
        env: dict[str, str] | None = None,
        sshd_config: tuple[str, ...] = (),
        *,
        listen: str = "127.0.0.1",
        port: int | None = None,
        prefix: tuple[str, ...] = (),
    ) -> SshdHost:
        """The sshd host `name`, started on first use.

        `env` is laid over the default session environment; `sshd_config` lines come before
        the harness's own (sshd takes the first value of a keyword), e.g. ("MaxSessions 3",).
        sshd listens on `listen`:`port` (a free port if None) and runs inside `prefix`.
        """
        if isinstance(sshd_config, str):
            raise TypeError("sshd_config is a tuple of lines")
        with self._lock:
            existing = self.hosts.get(name)
            if existing is not None:
                if env is not None and {**existing.env, **env} != existing.env:
                    raise ValueError(f"host {name} already runs with env {existing.env}")
                if sshd_config and sshd_config != existing.sshd_config:
                    raise ValueError(f"host {name} already runs with {existing.sshd_config}")
                return existing
            workdir = self.base / "hosts" / name
            root = workdir / "root"
            root.mkdir(parents=True, exist_ok=True)
            # HOME points at the host's own directory, so the login shell does not read root's
            # dotfiles (here ~/.bashrc runs `pyenv init`, 80 ms per command).
            full_env = {
                "PATH": DEFAULT_PATH,
                "ZFS_STANDIN_ROOT": str(root),
                "HOME": str(workdir),
                **(env or {}),
            }
            host = SshdHost(
                name=name,
                port=0,
                root=root,
                env=full_env,
                workdir=workdir,
                host_key=workdir / "ssh_host_ed25519_key",
                config_file=self.config_file,
                known_hosts=self.known_hosts,
                identity_file=self.identity_file,
                sshd_config=tuple(sshd_config),
                listen=listen,
                prefix=tuple(prefix),
            )
            _keygen(host.host_key, f"{name}-host")
            self._start(host, port=port)
            self.hosts[name] = host
            self._write_client_files()
            return host

    def regenerate_host_key(self, name: str, *, keep_old: bool = False) -> SshdHost:
        """Give `name` a new host key and restart it; known_hosts keeps the old key. With
        `keep_old`, the old key is kept aside for `restore_host_key`."""
        with self._lock:
            host = self.hosts[name]
            self._stop(host)
            for path, aside in _key_files(host):
                if keep_old:
                    path.replace(aside)  # keeps mode 0600
                else:
                    path.unlink()
            _keygen(host.host_key, f"{name}-host-new")
            self._start(host, port=host.port)
            return host

    def restore_host_key(self, name: str) -> None:
        """Put back the key `regenerate_host_key(keep_old=True)` kept aside, if any."""
        with self._lock:
            host = self.hosts[name]
            pairs = _key_files(host)
            if not pairs[0][1].exists():
                return
            self._stop(host)
            for path, aside in pairs:
                aside.replace(path)
            self._start(host, port=host.port)

    def running(self, name: str) -> bool:
        proc = self.hosts[name].proc
        return proc is not None and proc.poll() is None

    def stop(self, name: str) -> None:
        with self._lock:
            self._stop(self.hosts[name])

    def start(self, name: str) -> None:
        with self._lock:
            host = self.hosts[name]
            self._start(host, port=host.port)

    def stop_all(self) -> None:
        with self._lock:
            for host in self.hosts.values():
                self._stop(host)

    def write_client_config(
        self,
        path: Path,
        *,
        known_hosts: Path,
        names: list[str] | None = None,
        port_overrides: dict[str, int] | None = None,
    ) -> Path:
        """Another client config for the same hosts, e.g. with an empty known_hosts."""
        hosts = [self.hosts[n] for n in (names or list(self.hosts))]
        ports = port_overrides or {}
        stanzas = [
            _stanza(h.name, h.listen, ports.get(h.name, h.port), self, known_hosts) for h in hosts
        ]
        for name, port in ports.items():
            if name not in self.hosts:
                stanzas.append(_stanza(name, "127.0.0.1", port, self, known_hosts))
        path.write_text("\n".join(stanzas))
        return path

    # -- internals ------------------------------------------------------------------------

    def _write_client_files(self) -> None:
        self.write_client_config(self.config_file, known_hosts=self.known_hosts)
        lines = [h.known_hosts_line for h in self.hosts.values()]
        _atomic_write(self.known_hosts, "\n".join(lines) + "\n")

    def _start(self, host: SshdHost, port: int | None = None) -> None:
        for _ in range(1 if port else 5):
            host.port = port or free_port(host.listen)
            config = host.workdir / "sshd_config"
            config.write_text(self._sshd_config(host))
            argv = [*host.prefix, SSHD, "-D", "-e", "-f", str(config)]
            host.proc = spawn_logged(argv, None, host.log)
            # Up once it answers with its banner (from here: in a namespace, across the bridge).
            if wait_for_port(host.port, host.proc, 15, b"SSH-", host.listen):
                return
            stop_pid(host.proc)
            host.proc = None
        raise RuntimeError(f"sshd for {host.name} did not start:\n{tail(host.log)}")

    def _stop(self, host: SshdHost) -> None:
        if host.proc is None:
            return
        # Each connection has its own sshd child, in its own session: stop those and what they
        # run too, or a cached client connection (or its zfs) would outlive "its" server.
        # Pinned (pidfds), not numbers: a session that ends during the grace period gives its
        # pid back, and under load another process soon has it (tests/harness/pids.py).
        sessions = pin_tree(host.proc.pid) if host.proc.poll() is None else []
        stop_pid(host.proc)
        host.proc = None
        kill_pinned(sessions)

    def _sshd_config(self, host: SshdHost) -> str:
        return sshd_config_text(
            listen=host.listen,
            port=host.port,
            host_key=host.host_key,
            workdir=host.workdir,
            authorized_keys=self.authorized_keys,
            env=host.env,
            first=host.sshd_config,
        )


def sshd_config_text(
    *,
    listen: str,
    port: int,
    host_key: Path,
    workdir: Path,
    authorized_keys: Path,
    env: Mapping[str, str],
    first: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> str:
    """A test sshd's config: key-only root login, no PAM/DNS/motd, many sessions, `env` set
    for every session. sshd takes the first value of a keyword: `first` overrides."""
    setenv = " ".join(_quote_setenv(k, v) for k, v in env.items())
    return "\n".join(
        [
            *first,
            f"Port {port}",
            f"ListenAddress {listen}",
            f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxSessions 100",
            "MaxStartups 100",
            *extra,
            "LogLevel VERBOSE",
            f"SetEnv {setenv}",
            "",
        ]
    )


def _stanza(name: str, address: str, port: int, cluster: SshdCluster, known_hosts: Path) -> str:
    return "\n".join(
        [
            f"Host {name}",
            f"    HostName {address}",
            f"    Port {port}",
            "    User root",
            f"    IdentityFile {cluster.identity_file}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            *(f"    {option}" for option in cluster.client_options),
            "",
        ]
    )


def _key_files(host: SshdHost) -> list[tuple[Path, Path]]:
    """(host key file, where it is kept aside) for the private and the public key."""
    key = host.host_key
    return [
        (key, key.with_name(f"{key.name}.orig")),
        (Path(f"{key}.pub"), key.with_name(f"{key.name}.orig.pub")),
    ]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _quote_setenv(name: str, value: str) -> str:
    return f'"{name}={value}"' if any(c.isspace() for c in value) else f"{name}={value}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
