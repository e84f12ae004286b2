"""Lock names, the in-process lock provider, and zrep's `lock-pid` interoperability.

The real lease lives in Redis (`workers.lease`); `LocalLocks` is the same contract inside one
process, for a single-host CLI run and for tests that are not about Redis.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LockHeld


def lock_name(tag: str, host: str, fs: str) -> str:
    """One lease per (tag, host, filesystem), like zrep's per-fs lock, which is per tag."""
    return f"{tag}:{host}:{fs}"


@dataclass
class _Handle:
    token: str
    lost: threading.Event = field(default_factory=threading.Event)


class LocalLocks:
    def __init__(self, owner: str = "local") -> None:
        self._owner = owner
        self._held: dict[str, str] = {}
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, keys: Sequence[str], *, operation: str, wait: float = 0.0) -> Iterator[_Handle]:
        token = f"{self._owner}:{os.getpid()}:{operation}:{uuid.uuid4().hex[:8]}"
        with self._mutex:
            for key in sorted(keys):
                if key in self._held:
                    raise LockHeld(f"{key} is locked by {self._held[key]}", holder=self._held[key])
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


def live_zrep_process(pid: int) -> bool:
    """Is `pid` a running upstream zrep (ksh/bash script) on this host?

    zrep decides with `kill -0`; a pid may since have been reused, so also require that the
    process runs something called zrep, and not a zrepq worker (whose own stale lock-pid,
    left by a SIGKILL, must not block it forever: the Redis lease already excludes us).
    """
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    text = cmdline.decode(errors="replace")
    return "zrep" in text and "zrepq" not in text and "celery" not in text
