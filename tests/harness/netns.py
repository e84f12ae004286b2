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
namespace reaches through the bridge. The servers are the loopback tiers' own harnesses, bound
elsewhere: sshd.py's SshdCluster (each sshd on its host's address, port 22, run through `ip
netns exec`), redis_server.py's RedisServer, services.py's worker starter.

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
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.netutil import cmdline, descendants, pid_alive
from tests.harness.pids import exited, kill_pinned, pin, pin_tree
from tests.harness.redis_server import RedisServer
from tests.harness.services import Service, start_workers, worker_env
from tests.harness.sshd import SshdCluster, SshdHost, sshd_unavailable
from tests.harness.standin import StandinHost, standin_env, wipe_root

PREFIX = "zq"
SUBNET = "10.77"  # 10.77.K.0/24, K picked per session
_LOCK = Path("/run/zrepq-netns.lock")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: used in interface and namespace names
# A client notices a dead link in ~6 s instead of TCP's ~15 min; sshd notices a vanished
# client as fast, so a receive waiting on it ends and leaves its resume token.
CLIENT_KEEPALIVE = ("ServerAliveInterval 2", "ServerAliveCountMax 3")
SSHD_KEEPALIVE = ("ClientAliveInterval 2", "ClientAliveCountMax 3")


# -- availability ---------------------------------------------------------------------------


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None. Probes by making (and deleting) one."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found: apt-get install iproute2"
    if shutil.which("redis-server") is None:
        return "redis-server not found: apt-get install redis-server"
    if shutil.which("pv") is None:
        return "pv not found: apt-get install pv"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    reason = sshd_unavailable()
    if reason is not None:
        return reason
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


def pin_in_ns(ns: str) -> list[int]:
    """pidfds of the processes in network namespace `ns`, each checked, once pinned, to be in
    it still (`ip netns pids` lists numbers, which may change hands before they are used)."""
    try:
        inode = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return []

    def inside(pid: int) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
        except OSError:
            return False

    fds = []
    for pid in ns_pids(ns):
        fd = pin(pid, lambda _fields: True)
        if fd is None:
            continue
        # Read after pinning; alive afterwards, so what was read was the pinned process's.
        if inside(pid) and _alive(fd):
            fds.append(fd)
        else:
            os.close(fd)
    return fds


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    return True


# -- hosts -----------------------------------------------------------------------------------


@dataclass
class NetHost:
    name: str
    index: int
    address: str
    ns: str
    hub_link: str  # this host's veth end in the hub namespace (what a "cable pull" downs)
    zfs: StandinHost
    ssh: SshdHost  # its sshd, on `address`:22 inside the namespace
    worker: Service | None = None
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.zfs.root

    @property
    def workdir(self) -> Path:
        return self.ssh.workdir

    @property
    def sshd(self) -> subprocess.Popen[bytes] | None:
        return self.ssh.proc

    @property
    def host_key_pub(self) -> str:
        return self.ssh.host_key_pub

    @property
    def pool(self) -> str:
        return "tank"

    def fs(self, leaf: str) -> str:
        return f"{self.pool}/{leaf}"

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

    def pin_worker(self) -> list[int]:
        """pidfds of the worker's processes below its main one (`pids.pin_tree`), to kill
        later without killing a process that was given one of their pids meanwhile."""
        if self.worker is None or exited(self.worker.proc):
            return []
        return pin_tree(self.worker.pid)

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


_STREAM_WORDS = ("zfs", "zpool", "ssh", "pv", "sh")


def is_stream_process(argv: list[str]) -> bool:
    """zfs, ssh clients, pv, shells of a pipeline. The stand-in zfs runs as
    `python3 -I -S -c CODE DIR zfs ARGS...` (tests/standin/zfs): `zfs` is its seventh word."""
    if not argv:
        return False
    exe = os.path.basename(argv[0])
    if exe == "ssh" and "-M" in argv and "-N" in argv:
        # A worker process's master connection for its streams (workers/exec/mux.py): it
        # runs nothing, lives as long as the process that started it, and dies with it (that
        # process's streams, killed, are counted as ever).
        return False
    if exe in _STREAM_WORDS:
        return True
    return any(os.path.basename(a) in ("zfs", "zpool") for a in argv[:8])


class NetBed:
    """N hosts in namespaces, Redis, their workers; see the module docstring."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.id = f"{PREFIX}{os.getpid()}"
        self.hosts: dict[str, NetHost] = {}
        # Every host's sshd and the client files that reach them (base/client, base/hosts).
        self.ssh = SshdCluster(base, client_options=CLIENT_KEEPALIVE)
        self.logdir = base / "logs"
        self.logdir.mkdir(exist_ok=True)
        self.hub = f"{self.id}-hub"
        self.root_link = f"{self.id}r"
        self.redis: RedisServer | None = None
        self._made_ns: list[str] = []
        self.worker_extra: dict[str, str] = {}
        self.subnet = ""

    @property
    def ssh_config(self) -> Path:
        return self.ssh.config_file

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
            ip("link", "add", self.root_link, "type", "veth", "peer", "name", "r0",
               "netns", self.hub)  # fmt: skip
            ip("link", "set", "r0", "master", "br0", "up", ns=self.hub)
            ip("addr", "add", f"{self.gateway}/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
        # On the root namespace's end of the link, which every host reaches through the bridge.
        self.redis = RedisServer(
            self.base / "redis", address=self.gateway, client_defaults={"socket_timeout": 5}
        )
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
                self.ssh.stop(host.name)
            kill_pinned(pin_in_ns(host.ns))  # anything else still in the namespace
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
        prefix = ("ip", "netns", "exec", ns)
        ssh = self.ssh.host(
            name, sshd_config=SSHD_KEEPALIVE, listen=address, port=22, prefix=prefix
        )
        zfs = StandinHost(ssh.root, name)
        zfs.create_pool("tank")
        host = NetHost(name, index, address, ns, hub_link, zfs, ssh)
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> NetHost:
        return self.hosts[name]

    def change_host_key(self, name: str) -> str:
        """A new host key for `name` (sshd restarted; known_hosts keeps the old one)."""
        old = self.hosts[name].host_key_pub
        self.ssh.regenerate_host_key(name, keep_old=True)
        return old

    def restore_host_key(self, name: str) -> None:
        self.ssh.restore_host_key(name)

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
        return worker_env(
            host.name,
            self.redis.url,
            standin_env(host.root),
            str(self.ssh_config),
            **{"HOME": str(host.workdir), **self.worker_extra, **extra},
        )

    def start_worker(self, name: str, timeout: float = 60.0, **extra: str) -> Service:
        """`zrepq-worker` inside `name`'s namespace; returns once it registered in Redis."""
        self.start_workers([name], timeout=timeout, **extra)
        worker = self.hosts[name].worker
        assert worker is not None
        return worker

    def start_workers(
        self, names: Iterable[str] | None = None, timeout: float = 90.0, **extra: str
    ) -> None:
        """Start the workers of `names` (default: every host) that do not run, all at once."""
        todo = [self.hosts[n] for n in (names or self.hosts)]
        todo = [h for h in todo if h.worker is None or h.worker.proc.poll() is not None]
        envs = {h.name: self.worker_environment(h, **extra) for h in todo}
        prefixes = {h.name: h.exec_argv() for h in todo}
        for h in todo:
            h.worker_env = envs[h.name]
        started = start_workers(envs, self.logdir, timeout, prefixes)
        for name, svc in started.items():
            self.hosts[name].worker = svc

    def stop_worker(self, name: str) -> None:
        host = self.hosts[name]
        if host.worker is not None:
            pinned = host.pin_worker()
            if not exited(host.worker.proc):  # unreaped: the group id is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.worker.pid, signal.SIGCONT)  # a paused one could not stop
            host.worker.stop(grace=10)
            kill_pinned(pinned)  # pool children that left the group (they do not, but be sure)
            host.worker = None

    def kill_worker(self, name: str) -> float:
        """SIGKILL the whole worker (main process and pool), as a crash would; the time."""
        host = self.hosts[name]
        assert host.worker is not None
        pinned = host.pin_worker()
        if not exited(host.worker.proc):  # unreaped: the group id is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.worker.pid, signal.SIGKILL)
        t = time.monotonic()
        kill_pinned(pinned)
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
            if not self.ssh.running(name):
                self.ssh.start(name)
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
            wipe_root(host.root)
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
            kill_pinned(pin_in_ns(ns))
            ip("netns", "del", ns, check=False)
    for m in re.finditer(rf"^\d+: ({PREFIX}(\d+)r)[@:]", ip("link").stdout, re.M):
        if not pid_alive(int(m.group(2))):
            ip("link", "del", m.group(1), check=False)
