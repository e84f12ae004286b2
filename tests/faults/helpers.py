"""Shared steps of the fault tests: producers, datasets, waiting, checking both sides."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from producer.api import Producer
from producer.watch import outcome, wait
from tasks.app import make_app
from tests.harness.netns import NetBed, NetHost, is_stream_process
from tests.harness.netutil import ppid_of
from tests.harness.signing import signed

_counter = itertools.count(1)


def producer(bed: NetBed, **kw: Any) -> Producer:
    assert bed.redis is not None
    return Producer(app=make_app(signed({"ZREPQ_BROKER_URL": bed.redis.url})), **kw)


def done(r: Any, timeout: float = 120) -> dict[str, Any]:
    return wait({"t": r}, timeout=timeout, show=False)["t"]


def leaf(prefix: str) -> str:
    """A dataset leaf name unique in this session."""
    return f"{prefix}{os.getpid() % 1000}x{next(_counter)}"


def make_fs(host: NetHost, fs: str, size: int = 0, files: int = 1) -> None:
    host.zfs.zfs("create", fs)
    host.zfs.write(fs, "hello.txt", f"{host.name}:{fs}\n".encode())
    for i in range(files if size else 0):
        host.zfs.write(fs, f"data/blob{i}.bin", os.urandom(size // files))


def init_pair(p: Producer, src: NetHost, fs: str, dst: NetHost, dfs: str, **kw: Any) -> None:
    rec = done(p.init(fs, dst.name, dfs, host=src.name, **kw), timeout=180)
    assert rec["ok"], rec


def snaps(host: NetHost, fs: str) -> dict[str, str]:
    """{short name: guid} of fs's snapshots, oldest first."""
    out = host.zfs.zfs(
        "list", "-H", "-p", "-t", "snapshot", "-o", "name,guid", "-s", "createtxg", "-d", "1", fs
    ).stdout
    res = {}
    for line in out.splitlines():
        name, guid = line.split("\t")
        res[name.split("@", 1)[1]] = guid
    return res


def prop(host: NetHost, name: str, ds: str) -> str:
    return host.zfs.get(name, ds)


def same_content(a: NetHost, afs: str, b: NetHost, bfs: str) -> bool:
    """Byte for byte: the sha256 of every file (and every directory and link) on both sides."""
    ta, tb = a.zfs.tree(afs), b.zfs.tree(bfs)
    return bool(ta) and ta == tb


def stray_processes(bed: NetBed) -> dict[str, dict[int, list[str]]]:
    """zfs / ssh / pv / sh processes running on any host now."""
    out = {}
    for name, host in bed.hosts.items():
        found = {pid: argv for pid, argv in host.stray().items() if is_stream_process(argv)}
        if found:
            out[name] = found
    return out


def wait_no_strays(bed: NetBed, timeout: float = 20) -> dict[str, dict[int, list[str]]]:
    deadline = time.monotonic() + timeout
    while True:
        left = stray_processes(bed)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def mutating_calls(host: NetHost, since: float) -> list[list[str]]:
    """zfs calls on `host` after `since` (epoch) that change state."""
    readonly = {"get", "list", "holds", "version", "send"}
    out = []
    for c in host.zfs.calls():
        argv = c["argv"]
        if c["t"] < since or not argv or argv[0] != "zfs":
            continue
        if len(argv) > 1 and argv[1] in readonly:
            continue
        out.append(argv)
    return out


class StreamWatch:
    """Samples every host's processes; records how many `zfs send` of each dataset ran at once.

    A `zfs send` names its snapshots (`fs@snap`) or, resuming, carries a token; both show up as
    the dataset being read. The maximum over the samples must be 1 for every dataset.
    """

    def __init__(self, bed: NetBed, step: float = 0.05) -> None:
        self.bed = bed
        self.step = step
        self.max: dict[str, int] = {}
        self.samples = 0
        self.overlaps: list[tuple[str, list[tuple[int, int | None, list[str]]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            seen: dict[str, list[tuple[int, int | None, list[str]]]] = {}
            for host in self.bed.hosts.values():
                for pid, argv in host.processes().items():
                    fs = _sent_fs(host.name, argv)
                    if fs:
                        seen.setdefault(fs, []).append((pid, ppid_of(pid), argv))
            for fs, found in seen.items():
                procs = _outermost(found)
                self.max[fs] = max(self.max.get(fs, 0), len(procs))
                if len(procs) > 1 and len(self.overlaps) < 5:
                    self.overlaps.append((fs, procs))
            self.samples += 1
            self._stop.wait(self.step)


def _outermost(
    procs: list[tuple[int, int | None, list[str]]],
) -> list[tuple[int, int | None, list[str]]]:
    """Drop processes whose parent is in the list too: the stand-in's `zfs` is a shell script
    whose `$(dirname ...)` forks a subshell with the very same command line for a moment."""
    pids = {pid for pid, _, _ in procs}
    return [p for p in procs if p[1] not in pids]


def _sent_fs(host: str, argv: list[str]) -> str | None:
    try:
        i = argv.index("send")
    except ValueError:
        return None
    if not any(os.path.basename(a) in ("standin.py", "zfs") for a in argv[:i]):
        return None
    for a in argv[i + 1 :]:
        if "@" in a:
            return f"{host}:{a.split('@', 1)[0]}"
    if "-t" in argv:
        # A resumed send names no dataset, only its token: key it by the token, so two
        # datasets resumed at once are not mistaken for one dataset sent twice.
        i = argv.index("-t")
        token = argv[i + 1] if i + 1 < len(argv) else ""
        return f"{host}:(resume {token[:24]})"
    return None


def outcome_of(r: Any) -> dict[str, Any]:
    return outcome(r)


# -- figures for docs/reliability.md --------------------------------------------------------

FIGURES: dict[str, list[Any]] = {}


def figure(name: str, value: Any) -> None:
    """Record a measured figure; the session prints them all at the end (see conftest)."""
    FIGURES.setdefault(name, []).append(value)


def lease_holder(bed: NetBed, host: str, fs: str, tag: str = "zrep") -> str | None:
    from workers.keys import lock_key

    assert bed.redis is not None
    raw = bed.redis.client().get(lock_key(tag, host, fs))
    return raw.decode() if isinstance(raw, bytes) else raw


def send_processes(host: NetHost, fs: str) -> list[int]:
    """Pids of `zfs send` processes reading `fs` on `host`."""
    found = []
    for pid, argv in host.processes().items():
        sent = _sent_fs(host.name, argv)
        if sent == f"{host.name}:{fs}" or (sent or "").startswith(f"{host.name}:(resume "):
            found.append((pid, ppid_of(pid), argv))
    return [pid for pid, _, _ in _outermost(found)]
