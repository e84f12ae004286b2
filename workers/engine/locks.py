"""Lock names, lock tokens, and the in-process lock provider.

Every lock provider (`LocalLocks` here, `workers.filelock.FileLocks` on one host,
`workers.lease.RedisLocks` across hosts) names its holder with a `LockToken`:

    OWNER:PID:OPERATION:NONCE:boot=BOOT_ID:pidns=PIDNS:start=TICKS:since=EPOCH

OWNER is the holder's host (its zrep name), PID its process, OPERATION what it does (with the
Celery task id, `sync/<id>`), NONCE makes the token unique. The trailing fields identify the
holder process beyond its pid (see `liveness`), so a holder on this host that died can be
recognised as dead for certain, and say since when it holds. Tokens written before these
fields existed (`OWNER:PID:OPERATION:NONCE`) still parse; without them nothing is provable.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import liveness
from .errors import LockHeld
from .liveness import ProcessIdentity

SINCE_FORMAT = "%Y-%m-%d %H:%M:%S"
_FIELDS = ("boot", "pidns", "start", "since")


def lock_name(tag: str, host: str, fs: str) -> str:
    """One lease per (tag, host, filesystem), like zrep's per-fs lock, which is per tag.

    The host comes first: a host name holds no `:` (a dataset name may), so `HOST:*` selects
    exactly one host's leases, which is what a Redis ACL pattern gives that host's worker.
    """
    return f"{host}:{tag}:{fs}"


def operation_id(operation: str) -> str | None:
    """The id in `verb/ID` (the Celery task id the worker appends), or None."""
    _, slash, oid = operation.rpartition("/")
    return oid if slash and oid else None


def blocks(holder: str | None, operation: str) -> bool:
    """Does a lease held by `holder` stand in the way of `operation` *checking* it (a lease of
    the partner's dataset, read but not taken)? Free, or held by another half of this very
    operation (the same id: failover and the takeover it hands over), it does not."""
    if holder is None:
        return False
    mine = operation_id(operation)
    token = LockToken.parse(holder)
    return mine is None or token is None or operation_id(token.operation) != mine


def format_since(epoch: float) -> str:
    return time.strftime(SINCE_FORMAT, time.localtime(epoch))


@dataclass(frozen=True)
class LockToken:
    owner: str
    pid: int
    operation: str
    nonce: str
    process: ProcessIdentity | None = None
    since: int | None = None  # epoch seconds when the holder took the lock

    @classmethod
    def new(cls, owner: str, operation: str) -> LockToken:
        """A token for this process, now."""
        return cls(
            owner,
            os.getpid(),
            operation,
            uuid.uuid4().hex,
            liveness.current_identity(),
            int(time.time()),
        )

    def __str__(self) -> str:
        text = f"{self.owner}:{self.pid}:{self.operation}:{self.nonce}"
        if self.process is not None:
            p = self.process
            text += f":boot={p.boot}:pidns={p.pidns}:start={p.start}"
        if self.since is not None:
            text += f":since={self.since}"
        return text

    @classmethod
    def parse(cls, text: str | None) -> LockToken | None:
        """The token in `text`, or None when it is not one (any foreign value)."""
        if not text:
            return None
        parts = text.split(":")
        extra: dict[str, str] = {}
        while parts:
            key, eq, value = parts[-1].partition("=")
            if not eq or key not in _FIELDS or key in extra:
                break
            extra[key] = value
            parts.pop()
        if len(parts) < 4 or not parts[1].isdigit():
            return None
        process = None
        if {"boot", "pidns", "start"} <= extra.keys() and extra["start"].isdigit():
            process = ProcessIdentity(extra["boot"], extra["pidns"], int(extra["start"]))
        since = int(extra["since"]) if extra.get("since", "").isdigit() else None
        return cls(parts[0], int(parts[1]), ":".join(parts[2:-1]), parts[-1], process, since)

    def gone(self, host: str) -> bool:
        """Has this holder provably ended? Only a holder on `host` (this host, by name) that
        carries its process identity, on this boot and pid namespace, can be proved gone."""
        if self.owner != host or self.process is None:
            return False
        return liveness.gone(self.pid, self.process) is True

    def describe(self) -> str:
        """`pid 16680 on hosta (sync/abc) since 2026-11-23 19:05:20`."""
        text = f"pid {self.pid} on {self.owner} ({self.operation})"
        if self.since is not None:
            text += f" since {format_since(self.since)}"
        return text


def describe_holder(token: str | None) -> str:
    """A holder token as words, or the raw value when it is not a zrepq token."""
    parsed = LockToken.parse(token)
    if parsed is not None:
        return parsed.describe()
    return token or "someone else"


@dataclass
class _Handle:
    token: str
    lost: threading.Event = field(default_factory=threading.Event)
    # One process's locks, for tests and an engine alone on its host: nothing else to exclude.
    host_excluded: bool = True


class LocalLocks:
    """The `Locks` contract inside one process (tests, and engines that share no host)."""

    def __init__(self, owner: str = "local") -> None:
        self._owner = owner
        self._held: dict[str, str] = {}
        self._mutex = threading.Lock()

    @contextmanager
    def hold(
        self,
        keys: Sequence[str],
        *,
        operation: str,
        wait: float = 0.0,
        check: Sequence[str] = (),
    ) -> Iterator[_Handle]:
        token = str(LockToken.new(self._owner, operation))
        with self._mutex:
            for key in sorted(keys):
                if key in self._held:
                    holder = self._held[key]
                    raise LockHeld(f"{key} is locked by {describe_holder(holder)}", holder=holder)
            for key in sorted(check):
                other = self._held.get(key)
                if blocks(other, operation):
                    raise LockHeld(f"{key} is locked by {describe_holder(other)}", holder=other)
            for key in keys:
                self._held[key] = token
        try:
            yield _Handle(token)
        finally:
            with self._mutex:
                for key in keys:
                    if self._held.get(key) == token:
                        del self._held[key]

    def holder(self, key: str) -> str | None:
        with self._mutex:
            return self._held.get(key)
