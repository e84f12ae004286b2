"""A multi-host test bed: each storage host is a Linux network namespace of its own.

Layout (N hosts; `K` is a per-session number so that parallel sessions never collide):

    root namespace            hub namespace zq<pid>-hub   host namespace zq<pid>-<name>
    zq<pid>r 10.77.K.1/24 <-veth-> r0 -+
    (redis-server listens here)       br0 (bridge)
                                   h1 -+ <-veth-> eth0 10.77.K.11/24: sshd :22, zrepq-worker
                                   h2 -+ <-veth-> eth0 10.77.K.12/24: sshd :22, zrepq-worker
                                   ...

Every host has its own OpenSSH server bound to its own address only (its own host key, key-only
root login, `SetEnv` giving sessions the stand-in `zfs` and that host's `ZFS_STANDIN_ROOT`), its
own Celery worker started *inside* its namespace (`ip netns exec`), and its own stand-in zfs
state. One ssh_config names every host (HostName = its namespace address), so control commands
(paramiko) and data streams (OpenSSH) cross the veth links; nothing listens on localhost, so
nothing can take a shortcut. Redis listens on the root namespace's end of the link, which every
namespace reaches through the bridge.

The bridge lives in a namespace of its own, so the root namespace's firewall (a Docker host's
FORWARD policy, say) never sees the hosts' traffic.

Everything the bed starts it stops by pid (process group), and it deletes every namespace and
veth it made, even when a test fails; namespaces left by a session that was SIGKILLed are
removed by the next one (their names carry the dead session's pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.harness.netutil import REPO, stop_pid, tail
from tests.harness.services import Service, spawn_logged
from tests.harness.sshd import SSHD, _keygen, sshd_config_text
from tests.harness.standin import StandinHost, standin_env
from workers.keys import HOSTS_KEY

PREFIX = "zq"
SUBNET = "10.77"  # 10.77.K.0/24, K picked per session
_LOCK = Path("/run/zrepq-netns.lock")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: used in interface and namespace names


# -- availability ---------------------------------------------------------------------------


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None. Probes by making (and deleting) one."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found: apt-get install iproute2"
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        return f"{SSHD} / ssh not found: apt-get install openssh-server openssh-client"
    if shutil.which("redis-server") is None:
        return "redis-server not found: apt-get install redis-server"
    if shutil.which("pv") is None:
        return "pv not found: apt-get install pv"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"cannot create a network namespace: {res.stderr.strip()}"
    try:
        res = subprocess.run(["ip", "netns", "exec", probe, "true"], capture_output=True, text=True)
        if res.returncode != 0:
            return f"cannot run a program in a network namespace: {res.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# -- small wrappers -------------------------------------------------------------------------


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res


def ns_pids(ns: str) -> list[int]:
    res = ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split()]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def ppid_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> list[int]:
    """All living descendants of `pid` (children first)."""
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = ppid_of(int(entry))
            if parent is not None:
                by_parent.setdefault(parent, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _wait_tcp(address: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# -- redis on the root namespace's end of the link --------------------------------------------


class NetRedis:
    """redis-server bound to one address; `restart(keep_data=...)` for the fault tests."""

    def __init__(self, workdir: Path, address: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.port = _free_port(address)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, **kw)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", self.address,
            "--save", "",  # no automatic dumps; restart(keep_data=True) saves on purpose
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--dbfilename", "dump.rdb",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = spawn_logged(argv, None, self.workdir / "redis.out")
        if not _wait_tcp(self.address, self.port, self.proc, 10):
            raise RuntimeError(f"redis-server did not start:\n{tail(self.workdir / 'redis.log')}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def restart(self, *, keep_data: bool, down_for: float = 0.0) -> None:
        """Restart on the same address and port.

        keep_data=True is `systemctl restart` of a Redis that saves on shutdown (SHUTDOWN SAVE,
        reloaded from dump.rdb); keep_data=False is a crash of a Redis without persistence
        (SIGKILL, everything gone: queues, results, leases).
        """
        assert self.proc is not None
        dump = self.workdir / "dump.rdb"
        if keep_data:
            with contextlib.suppress(redis.RedisError):
                self.client().shutdown(save=True)
            self.proc.wait(30)
        else:
            self.proc.kill()
            self.proc.wait()
            dump.unlink(missing_ok=True)
        self.proc = None
        if down_for:
            time.sleep(down_for)
        self.start()


# -- hosts -----------------------------------------------------------------------------------


@dataclass
class NetHost:
    name: str
    index: int
    address: str
    ns: str
    hub_link: str  # this host's veth end in the hub namespace (what a "cable pull" downs)
    workdir: Path
    zfs: StandinHost
    host_key: Path
    sshd: subprocess.Popen[bytes] | None = None
    worker: Service | None = None
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.zfs.root

    @property
    def pool(self) -> str:
        return "tank"

    def fs(self, leaf: str) -> str:
        return f"{self.pool}/{leaf}"

    @property
    def host_key_pub(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().strip()

    def exec_argv(self, *argv: str) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def processes(self) -> dict[int, list[str]]:
        """pid -> argv of every process in this host's namespace."""
        return {pid: cmdline(pid) for pid in ns_pids(self.ns)}

    def worker_pids(self) -> set[int]:
        if self.worker is None or self.worker.proc.poll() is not None:
            return set()
        return {self.worker.pid, *descendants(self.worker.pid)}

    def stray(self) -> dict[int, list[str]]:
        """Processes in the namespace that are neither the sshd listener, its idle sessions,
        nor the worker's own processes: running zfs, ssh, pv, shells."""
        keep = {self.sshd.pid} if self.sshd is not None else set()
        out = {}
        for pid, argv in self.processes().items():
            if pid in keep or not argv:
                continue
            if argv[0].startswith("sshd:"):
                continue  # a session process; what it runs (zfs, sh) shows up by itself
            if self.worker is not None and pid in self.worker_pids() and _is_worker(argv):
                continue
            out[pid] = argv
        return out


def _is_worker(argv: list[str]) -> bool:
    text = " ".join(argv)
    return "workers.main" in text or "celery" in text


_STREAM_WORDS = ("standin.py", "zfs", "zpool", "ssh", "pv", "sh")


def is_stream_process(argv: list[str]) -> bool:
    """zfs (the stand-in runs as python standin.py), ssh clients, pv, shells of a pipeline."""
    if not argv:
        return False
    exe = os.path.basename(argv[0])
    if exe in _STREAM_WORDS:
        return True
    return any(os.path.basename(a) in ("standin.py", "zfs", "zpool") for a in argv[:3])


class NetBed:
    """N hosts in namespaces, Redis, their workers; see the module docstring."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.id = f"{PREFIX}{os.getpid()}"
        self.hosts: dict[str, NetHost] = {}
        self.client_dir = base / "client"
        self.client_dir.mkdir(exist_ok=True)
        self.identity = self.client_dir / "id_ed25519"
        self.ssh_config = self.client_dir / "ssh_config"
        self.known_hosts = self.client_dir / "known_hosts"
        self.authorized_keys = self.client_dir / "authorized_keys"
        self.logdir = base / "logs"
        self.logdir.mkdir(exist_ok=True)
        self.hub = f"{self.id}-hub"
        self.root_link = f"{self.id}r"
        self.redis: NetRedis | None = None
        self._made_ns: list[str] = []
        self.worker_extra: dict[str, str] = {}
        self.subnet = ""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, worker_env: dict[str, str] | None = None) -> None:
        self.worker_extra = dict(worker_env or {})
        remove_stale()
        with _locked():
            k = _free_subnet()
            self.subnet = f"{SUBNET}.{k}"
            self._add_ns(self.hub)
            ip("link", "add", "br0", "type", "bridge", ns=self.hub)
            ip("link", "set", "br0", "up", ns=self.hub)
            ip("link", "set", "lo", "up", ns=self.hub)
            ip(
                "link",
                "add",
                self.root_link,
                "type",
                "veth",
                "peer",
                "name",
                "r0",
                "netns",
                self.hub,
            )
            ip("link", "set", "r0", "master", "br0", "up", ns=self.hub)
            ip("addr", "add", f"{self.gateway}/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
        _keygen(self.identity, "zrepq-netns-client")
        self.authorized_keys.write_text(Path(f"{self.identity}.pub").read_text())
        self.known_hosts.touch()
        self.redis = NetRedis(self.base / "redis", self.gateway)
        self.redis.start()

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def close(self) -> None:
        """Stop every process (by pid) and delete every namespace and veth; never raises."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                self.stop_worker(host.name)
            with contextlib.suppress(Exception):
                self._stop_sshd(host)
            for pid in ns_pids(host.ns):  # anything else still in the namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
        ip("link", "del", self.root_link, check=False)
        for ns in reversed(self._made_ns):
            ip("netns", "del", ns, check=False)
        self._made_ns.clear()

    # -- hosts -----------------------------------------------------------------------------

    def add_host(self, name: str) -> NetHost:
        if not _NAME.match(name):
            raise ValueError(f"host name {name!r}: lowercase letters/digits, at most 8")
        if name in self.hosts:
            return self.hosts[name]
        index = len(self.hosts) + 1
        ns = f"{self.id}-{name}"
        address = f"{self.subnet}.{10 + index}"
        hub_link = f"h{index}"
        self._add_ns(ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", hub_link,
           "netns", self.hub)  # fmt: skip
        ip("link", "set", hub_link, "master", "br0", "up", ns=self.hub)
        ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        workdir = self.base / "hosts" / name
        root = workdir / "root"
        root.mkdir(parents=True, exist_ok=True)
        zfs = StandinHost(root, name)
        zfs.create_pool("tank")
        host = NetHost(
            name=name,
            index=index,
            address=address,
            ns=ns,
            hub_link=hub_link,
            workdir=workdir,
            zfs=zfs,
            host_key=workdir / "ssh_host_ed25519_key",
        )
        _keygen(host.host_key, f"{name}-host")
        self.hosts[name] = host
        self._start_sshd(host)
        self._write_client_files()
        return host

    def __getitem__(self, name: str) -> NetHost:
        return self.hosts[name]

    # -- sshd ------------------------------------------------------------------------------

    def _sshd_config(self, host: NetHost) -> str:
        env = {
            "PATH": f"{REPO}/tests/standin:/usr/local/bin:/usr/bin:/bin",
            "ZFS_STANDIN_ROOT": str(host.root),
            "HOME": str(host.workdir),
        }
        return sshd_config_text(
            listen=host.address,
            port=22,
            host_key=host.host_key,
            workdir=host.workdir,
            authorized_keys=self.authorized_keys,
            env=env,
            # A client that vanished (link down, then its ssh gone) is noticed in ~6 s, so a
            # receive waiting on it ends and leaves its resume token.
            extra=("ClientAliveInterval 2", "ClientAliveCountMax 3"),
        )

    def _start_sshd(self, host: NetHost) -> None:
        config = host.workdir / "sshd_config"
        config.write_text(self._sshd_config(host))
        log = host.workdir / "sshd.log"
        host.sshd = spawn_logged(host.exec_argv(SSHD, "-D", "-e", "-f", str(config)), None, log)
        # The test process is in the root namespace: it reaches the host through the bridge.
        if not _wait_tcp(host.address, 22, host.sshd, 15):
            raise RuntimeError(f"sshd for {host.name} did not start:\n{tail(log)}")

    def _stop_sshd(self, host: NetHost) -> None:
        if host.sshd is None:
            return
        sessions = descendants(host.sshd.pid)
        stop_pid(host.sshd)
        host.sshd = None
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def change_host_key(self, name: str) -> str:
        """A new host key for `name` (sshd restarted; known_hosts keeps the old one)."""
        host = self.hosts[name]
        self._stop_sshd(host)
        old = host.host_key_pub
        host.host_key.replace(host.workdir / "ssh_host_ed25519_key.orig")  # keeps mode 0600
        Path(f"{host.host_key}.pub").replace(Path(f"{host.host_key}.orig.pub"))
        _keygen(host.host_key, f"{name}-host-new")
        self._start_sshd(host)
        return old

    def restore_host_key(self, name: str) -> None:
        host = self.hosts[name]
        orig = host.workdir / "ssh_host_ed25519_key.orig"
        if not orig.exists():
            return
        self._stop_sshd(host)
        orig.replace(host.host_key)
        Path(f"{host.host_key}.orig.pub").replace(Path(f"{host.host_key}.pub"))
        self._start_sshd(host)

    def _write_client_files(self) -> None:
        stanzas = []
        for h in self.hosts.values():
            stanzas.append(
                "\n".join(
                    [
                        f"Host {h.name}",
                        f"    HostName {h.address}",
                        "    Port 22",
                        "    User root",
                        f"    IdentityFile {self.identity}",
                        "    IdentitiesOnly yes",
                        f"    UserKnownHostsFile {self.known_hosts}",
                        "    GlobalKnownHostsFile /dev/null",
                        "    StrictHostKeyChecking yes",
                        "    BatchMode yes",
                        # A dead link ends a stream in ~6 s instead of TCP's ~15 min.
                        "    ServerAliveInterval 2",
                        "    ServerAliveCountMax 3",
                        "",
                    ]
                )
            )
        self.ssh_config.write_text("\n".join(stanzas))
        keys = []
        for h in self.hosts.values():
            keytype, key = h.host_key_pub.split()[:2]
            keys.append(f"{h.address} {keytype} {key}")
        self.known_hosts.write_text("\n".join(keys) + "\n")

    # -- links -----------------------------------------------------------------------------

    def link(self, name: str, up: bool) -> None:
        """Pull (or plug back) `name`'s network cable: its veth end on the bridge."""
        ip("link", "set", self.hosts[name].hub_link, "up" if up else "down", ns=self.hub)

    def links_up(self) -> None:
        for name in self.hosts:
            self.link(name, True)

    # -- workers ---------------------------------------------------------------------------

    def worker_environment(self, host: NetHost, **extra: str) -> dict[str, str]:
        assert self.redis is not None
        env = standin_env(host.root)
        env.update(
            {
                "ZREPQ_HOST": host.name,
                "ZREPQ_BROKER_URL": self.redis.url,
                "ZREPQ_SSH_CONFIG": str(self.ssh_config),
                "PYTHONPATH": str(REPO),
                "ZREPQ_CONCURRENCY": "2",
                "ZREPQ_LOGLEVEL": "INFO",
                "HOME": str(host.workdir),
                **self.worker_extra,
                **extra,
            }
        )
        return env

    def start_worker(self, name: str, timeout: float = 60.0, **extra: str) -> Service:
        """`zrepq-worker` inside `name`'s namespace; returns once it registered in Redis."""
        assert self.redis is not None
        host = self.hosts[name]
        if host.worker is not None and host.worker.proc.poll() is None:
            return host.worker
        env = self.worker_environment(host, **extra)
        host.worker_env = env
        client = self.redis.client()
        client.hdel(HOSTS_KEY, name)
        log = self.logdir / f"worker-{name}.log"
        proc = spawn_logged(host.exec_argv(sys.executable, "-m", "workers.main"), env, log)
        svc = Service(name, proc, log)
        host.worker = svc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited ({proc.returncode}):\n{svc.output()}")
            raw = client.hget(HOSTS_KEY, name)
            if raw and json.loads(raw).get("registered"):
                return svc
            time.sleep(0.1)
        self.stop_worker(name)
        raise RuntimeError(f"worker {name} did not register within {timeout} s:\n{svc.output()}")

    def start_workers(self, names: Iterable[str] | None = None, **extra: str) -> None:
        """Start several workers at once (each takes seconds to import Celery)."""
        assert self.redis is not None
        names = list(names or self.hosts)
        client = self.redis.client()
        pending = []
        for name in names:
            host = self.hosts[name]
            if host.worker is not None and host.worker.proc.poll() is None:
                continue
            client.hdel(HOSTS_KEY, name)
            env = self.worker_environment(host, **extra)
            host.worker_env = env
            log = self.logdir / f"worker-{name}.log"
            proc = spawn_logged(host.exec_argv(sys.executable, "-m", "workers.main"), env, log)
            host.worker = Service(name, proc, log)
            pending.append(name)
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                svc = self.hosts[name].worker
                assert svc is not None
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{svc.output()}")
                raw = client.hget(HOSTS_KEY, name)
                if raw and json.loads(raw).get("registered"):
                    pending.remove(name)
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"workers {pending} did not register in time")

    def stop_worker(self, name: str) -> None:
        host = self.hosts[name]
        if host.worker is not None:
            pids = host.worker_pids()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.worker.pid, signal.SIGCONT)  # a paused one could not stop
            host.worker.stop(grace=10)
            for pid in pids:  # pool children that left the group (they do not, but be sure)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            host.worker = None

    def kill_worker(self, name: str) -> float:
        """SIGKILL the whole worker (main process and pool), as a crash would; the time."""
        host = self.hosts[name]
        assert host.worker is not None
        pids = host.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.worker.pid, signal.SIGKILL)
        t = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        host.worker.proc.wait()
        host.worker = None
        return t

    def pool_children(self, name: str) -> list[int]:
        host = self.hosts[name]
        if host.worker is None:
            return []
        return [p for p in descendants(host.worker.pid) if _is_worker(cmdline(p))]

    def healthy(self) -> None:
        """Bring the bed back to normal after a fault test: Redis, links, keys, workers."""
        assert self.redis is not None
        if not self.redis.running():
            self.redis.start()
        self.links_up()
        for name, host in self.hosts.items():
            self.restore_host_key(name)
            if host.sshd is None or host.sshd.poll() is not None:
                self._start_sshd(host)
            w = host.worker
            if w is not None and w.proc.poll() is None:
                # A stopped (SIGSTOP) worker is not healthy: continue it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, signal.SIGCONT)
            if w is not None and w.proc.poll() is not None:
                host.worker = None
        self.start_workers()

    def wipe_datasets(self) -> None:
        """Every host back to one empty pool `tank`, call logs emptied (between tests)."""
        for host in self.hosts.values():
            for child in host.root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            host.zfs.create_pool("tank")
            (host.root / "calls.log").unlink(missing_ok=True)

    def link_bytes(self, name: str) -> int:
        """Bytes the bridge received from plus sent to `name` so far (its hub veth end)."""
        out = ip("-s", "-j", "link", "show", self.hosts[name].hub_link, ns=self.hub).stdout
        data = json.loads(out)[0]["stats64"]
        return int(data["rx"]["bytes"]) + int(data["tx"]["bytes"])

    # -- internals -------------------------------------------------------------------------

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._made_ns.append(ns)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_subnet() -> int:
    used = set(re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", ip("-4", "addr").stdout))
    for k in range(10, 250):
        if str(k) not in used:
            return k
    raise RuntimeError(f"no free {SUBNET}.K.0/24 subnet")


def remove_stale() -> None:
    """Delete namespaces and links left by test sessions that no longer run."""
    names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    for ns in names:
        m = re.match(rf"^{PREFIX}(\d+)-", ns)
        if m and not pid_alive(int(m.group(1))):
            for pid in ns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "del", ns, check=False)
    for m in re.finditer(rf"^\d+: ({PREFIX}(\d+)r)[@:]", ip("link").stdout, re.M):
        if not pid_alive(int(m.group(2))):
            ip("link", "del", m.group(1), check=False)
