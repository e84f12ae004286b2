"""What the engine needs from the outside world, as protocols.

The engine's `Context` (context.py) holds a `Transport` (reach hosts: short control commands
and the data stream), a `Locks` provider (leases) and a `Peer` (the other side of failover),
besides the observer of its typed events (`events.Observer`). It never asks whether a host
is local or remote, and it imports neither Celery nor Redis: `workers.exec`, `workers.lease`
and `workers.filelock` implement these protocols, and tests can pass simple in-process ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from .errors import CommandError
from .events import Message, StreamProgress


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs short control commands (`zfs get/set/list/snapshot/hold/...`) on one host.

    `argv` is a list; a remote runner quotes it (`shlex.join`) for the remote shell, a local one
    runs it with no shell at all. With `check=True` a non-zero exit raises `CommandError`
    carrying argv, exit code and stderr. Connection failures raise `HostUnreachable` /
    `HostKeyError`.
    """

    @property
    def host(self) -> str: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult: ...

    def run_many(
        self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
    ) -> list[CommandResult | CommandError]:
        """Run the commands in order, as one round trip where the host is remote, and stop
        at the first that exits non-zero. One entry per command run: its result, or for the
        one that failed (the last entry) the `CommandError` that `run` would raise for it.
        Fewer entries than commands: the rest did not run. `timeout` is per command."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamSpec:
    """One `zfs send ... | [outfilter] | [ssh] [infilter |] zfs recv ...` pipeline.

    Either end may be local or remote: push (`init`, `sync`) sends from here, pull (`refresh`)
    receives here. Filters are argv strings (parsed with `shlex.split`, no shell features):
    the outfilter runs on the sending host, the infilter on the receiving host, as zrep does
    with ZREP_OUTFILTER / ZREP_INFILTER.
    """

    send_host: str
    send_argv: tuple[str, ...]
    recv_host: str
    recv_argv: tuple[str, ...]
    outfilter: str | None = None
    infilter: str | None = None


@dataclass(frozen=True)
class StreamResult:
    bytes_sent: int
    elapsed: float
    stderr: dict[str, str] = field(default_factory=dict)  # per stage, progress lines removed


class Transport(Protocol):
    """How to reach hosts. `local_host` is this host's zrep name (`uname -n` up to the dot)."""

    @property
    def local_host(self) -> str: ...

    def is_local(self, host: str) -> bool: ...

    def runner(self, host: str) -> Runner: ...

    def stream(
        self,
        spec: StreamSpec,
        *,
        on_progress: Callable[[StreamProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> StreamResult:
        """Run the pipeline to completion; raise `PipelineError` naming the failed stage.

        `on_progress` is called at least once a second while bytes flow, with the numbers
        (the total is the send's own estimate). When `cancel` is set, every stage is killed
        (whole process group) and `Cancelled` is raised.
        """
        ...

    def close(self) -> None: ...


class LockHandle(Protocol):
    """A held lease. `lost` is set when renewal failed: the holder must stop at once."""

    @property
    def lost(self) -> threading.Event: ...

    @property
    def token(self) -> str: ...

    # Do the other zrepq processes of this host see this lock? When not, the engine sets
    # zrep's lock marks on the dataset to exclude them (`steps._marks`).
    @property
    def host_excluded(self) -> bool: ...


class Locks(Protocol):
    """Leases keyed by name. `hold` takes all `keys` (this host's datasets) and makes sure
    none of `check` (the partner's, which this host's credential may read but not write) is
    held by another operation (`locks.blocks`), all at once, or raises `LockHeld` naming the
    holder; it releases what it took on every exit path. The partner's worker takes its own
    dataset's lease checking ours the same way, so the two exclude each other."""

    def hold(
        self,
        keys: Sequence[str],
        *,
        operation: str,
        wait: float = 0.0,
        check: Sequence[str] = (),
    ) -> AbstractContextManager[LockHandle]: ...

    def holder(self, key: str) -> str | None:
        """Token of the current holder of `key`, or None when free."""
        ...


class Peer(Protocol):
    """The other side of a pair, for failover/takeover.

    The engine calls it where zrep would `ssh otherhost zrep takeover -L ...`. A direct
    implementation runs the command there (or builds an engine for that host) and returns the
    lines it printed, as `Message`s with `host` set, which the engine passes on to its
    observer (zrep's own output shows the far side's lines too). The Celery layer hands the
    other half to that host's queue instead and returns no lines.
    """

    def takeover_local(
        self, host: str, fs: str, *, tag: str, snap: str | None = None
    ) -> Sequence[Message]: ...

    def failover(self, host: str, fs: str, *, tag: str) -> Sequence[Message]: ...
