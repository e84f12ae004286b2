"""A zrep pair on one `zfs_backend`, driven by zrepq's engine and by zrep acted out.

`pair` gives hosta = the backend's first pool (`b.base`), hostb = its second (`b.base2`):
zrepq's engine runs over `BackendTransport` (tests/harness/backend_transport.py), zrep over
`Zrep` (tests/harness/zrep_actor.py). On the stand-in that is one simulated host with two
pools; with `--zfs=real-2.1,real-2.3` it is OpenZFS in a QEMU guest, so each test using
`pair` is also a real-OpenZFS test. `standin_pair` is the same on the stand-in only, for the
tests whose zfs-level behaviour the others already prove on OpenZFS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.backend_transport import BackendTransport
from tests.harness.pids import FAKE_ZREP
from tests.harness.standin import StandinHost
from tests.harness.standin_fixtures import clone_root
from tests.harness.zfs_backend import StandinBackend, ZfsBackend, ZfsResult, ok, write_file
from tests.harness.zrep_actor import Zrep, ZrepHost, snapshots_and_holds
from workers.engine import Context, EngineConfig, zreplock
from workers.engine import resume as resumable
from workers.engine.events import Event, Message

HOLD = "zrepq:zrep:lastsent"
Holds = dict[str, list[str]]  # short snapshot name -> hold tags


@dataclass
class Pair:
    b: ZfsBackend
    src: str  # on hosta
    dst: str  # on hostb
    hosta: ZrepHost
    hostb: ZrepHost
    events: list[Event] = field(default_factory=list)

    def context(
        self,
        env: dict[str, str] | None = None,
        host: str = "hosta",
        calls: list[str] | None = None,
    ) -> Context:
        """zrepq's engine on `host`; `calls` collects the zfs commands it runs (args)."""
        backend = self.b if calls is None else CallLog(self.b, calls)
        transport = BackendTransport(backend, host, ["hosta", "hostb"])
        # zrep's global lock in the session's own run directory (tests/conftest.py), not in
        # /var/run, where any other zrepq or test session on this machine takes it too.
        rundir = {"ZREP_RUNDIR": os.environ["ZREP_RUNDIR"]} if "ZREP_RUNDIR" in os.environ else {}
        config = EngineConfig.from_env({**rundir, **(env or {})})
        return Context(transport, config, observer=self.events.append)

    def zrep(self, **kw: Any) -> Zrep:
        """zrep installed on hosta (the master), reaching hostb."""
        return Zrep(self.hosta, [self.hostb], **kw)

    def write(self, name: str, data: bytes) -> None:
        write_file(self.b, self.src, name, data)

    def look(self) -> tuple[tuple[int, int], tuple[Holds, Holds]]:
        """Each side's number of `@zrep_*` snapshots and its holds by snapshot, in one call."""
        both = snapshots_and_holds(self.b, self.src, self.dst)
        zrep = re.compile(r"^zrep_[0-9a-f]{6}")
        counts = [sum(1 for s in both[fs] if zrep.match(s)) for fs in (self.src, self.dst)]
        held = [{s: t for s, t in both[fs].items() if t} for fs in (self.src, self.dst)]
        return (counts[0], counts[1]), (held[0], held[1])

    def holds(self) -> tuple[Holds, Holds]:
        """Every hold, by snapshot, on each side."""
        return self.look()[1]

    def counts(self) -> tuple[int, int]:
        return self.look()[0]

    def last_sent(self, fs: str) -> str:
        out = ok(self.b, "get", "-H", "-o", "name", "-s", "local", "zrep:sent", "-d", "1", fs)
        return sorted(out.split())[-1].split("@", 1)[1]

    def warnings(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Message) and e.level == "warning"]


class CallLog:
    """A `ZfsBackend` that notes the arguments of every `zfs` command it runs."""

    def __init__(self, inner: ZfsBackend, calls: list[str]) -> None:
        self.inner, self.calls = inner, calls
        self.name, self.pool, self.pool2 = inner.name, inner.pool, inner.pool2
        self.base, self.base2 = inner.base, inner.base2

    def zfs(self, *args: str, input: bytes | None = None) -> ZfsResult:
        self.calls.append(" ".join(args))
        return self.inner.zfs(*args, input=input)

    def zpool(self, *args: str) -> ZfsResult:
        return self.inner.zpool(*args)

    def sh(self, script: str, input: bytes | None = None) -> ZfsResult:
        return self.inner.sh(script, input=input)


def _pair(b: ZfsBackend, zrep_bin: Path) -> Iterator[Pair]:
    src, dst = f"{b.base}/fs", f"{b.base2}/fs"
    ok(b, "create", src)
    resumable.forget()  # what an earlier test's process learnt about pools of the same name
    # zrep is installed on this host (the actor plays it): a `zrep` program on the engine's
    # PATH, so zrepq sets and clears zrep's lock marks (`lock_marks = auto`), as it does next
    # to a real zrep.
    (zrep_bin / "zrep").symlink_to(FAKE_ZREP)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{zrep_bin}:{os.environ['PATH']}")
        assert zreplock.marks_wanted("auto")
        yield Pair(b, src, dst, ZrepHost("hosta", b), ZrepHost("hostb", b))
    resumable.forget()


@pytest.fixture
def zrep_bin(tmp_path: Path) -> Path:
    where = tmp_path / "zrep-bin"
    where.mkdir()
    return where


@pytest.fixture
def pair(zfs_backend: ZfsBackend, zrep_bin: Path) -> Iterator[Pair]:
    """On every backend asked for: the stand-in, and OpenZFS 2.1/2.3 with `--zfs=real`."""
    yield from _pair(zfs_backend, zrep_bin)


@pytest.fixture
def standin_pair(tmp_path: Path, _standin_backend_template: Path, zrep_bin: Path) -> Iterator[Pair]:
    """On the stand-in only: for what the `pair` tests and the contract tests already prove
    on OpenZFS at the zfs level (guest time is counted: docs/realzfs.md)."""
    root = tmp_path / "standin-pair"
    clone_root(_standin_backend_template, root)
    yield from _pair(StandinBackend(StandinHost(root, "backend"), fresh=False), zrep_bin)
