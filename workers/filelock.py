"""Locks on one host without Redis: one `flock`ed file per lock name (`zrepq-local` from cron).

`FileLocks` is the `ports.Locks` contract for processes of one host: `hold(keys)` opens
`DIR/<escaped name>.lock` for each key, in sorted order, and takes an exclusive `flock` on it,
or gives back what it took and raises `LockHeld` naming the holder (its token, written into the
file, says which pid, doing what, since when). The kernel drops a flock when its process
ends, however it ends, so a killed holder never leaves a lock behind; the files themselves
stay (an empty file is a free lock) and are never removed, because removing a lock file races
with a process that has just opened it.

Safety of the files: DIR (default `/run/zrepq/locks`) is created mode 0700 and must be a
directory owned by this user that nobody else can write; the lock files are opened relative
to it with O_NOFOLLOW, created 0600, and must be regular files owned by this user.

A worker takes these files too (`LeaseAndFile`): after its Redis lease, the file of each of
this host's datasets it locks, so that `zrepq-local` and a worker on one host exclude each
other with no zfs call (zrep's `lock-pid` marks did that before, at 4 zfs calls a sync; now
they are set only for an upstream zrep: `workers.engine.zreplock`).

Names: a lock name (`tag:host:pool/fs`) becomes a file name by percent-escaping every byte
outside `A-Z a-z 0-9 . _ -` (so `/`, `:`, space and `%` itself are escaped): one name, one
file, and no name is `.`, `..` or holds a `/`. A name whose escaped form would pass the
file-name limit is cut and completed with the SHA-256 of the whole name after a `+`, a
character the escaped form never holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from workers.engine.errors import ConfigError, LockHeld
from workers.engine.locks import LockToken, describe_holder
from workers.engine.ports import LockHandle, Locks
from workers.handle import Handle

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/run/zrepq/locks"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_SUFFIX = ".lock"
_NAME_MAX = 255  # bytes in one file name (Linux)
_KEEP = 150  # escaped characters kept before the hash in a long name
_POLL = 0.05


def lock_file_name(name: str) -> str:
    """The file name of lock `name` (see the module docstring)."""
    escaped = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in name.encode())
    if len(escaped) + len(_SUFFIX) <= _NAME_MAX:
        return escaped + _SUFFIX
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{escaped[:_KEEP]}+{digest}{_SUFFIX}"


class FileLockHandle(Handle):
    """`ports.LockHandle`. A flock cannot be lost while its process lives: `lost` stays clear."""


class FileLocks:
    """`ports.Locks` for the processes of this host: flock'ed files in `directory`."""

    def __init__(self, directory: str | Path = DEFAULT_LOCK_DIR, *, owner: str = "local") -> None:
        self.directory = Path(directory)
        self._owner = owner

    def path(self, name: str) -> Path:
        return self.directory / lock_file_name(name)

    @contextmanager
    def hold(
        self,
        keys: Sequence[str],
        *,
        operation: str,
        wait: float = 0.0,
        check: Sequence[str] = (),
    ) -> Iterator[FileLockHandle]:
        # One host, no credential boundary: the names only checked (the partner's dataset)
        # are taken like the others, as before leases were split by host.
        names = sorted({*keys, *check})
        token = str(LockToken.new(self._owner, operation))
        deadline = time.monotonic() + wait
        dfd = self._open_dir()
        held: list[int] = []
        try:
            for name in names:
                held.append(self._take(dfd, name, token, deadline, wait))
            yield FileLockHandle(token, names)
        finally:
            for fd in reversed(held):
                self._give_back(fd)
            os.close(dfd)

    def holder(self, key: str) -> str | None:
        """Token of the current holder of `key`, or None when it is free."""
        dfd = self._open_dir()
        try:
            fd = self._open_file(dfd, lock_file_name(key))
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return self._read_holder(fd) or "another process"
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    # ---- the steps ------------------------------------------------------------------------

    def _take(self, dfd: int, name: str, token: str, deadline: float, wait: float) -> int:
        fname = lock_file_name(name)
        while True:
            fd = self._open_file(dfd, fname)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    os.close(fd)
                    time.sleep(_POLL)
                    continue
                holder = self._read_holder(fd)
                os.close(fd)
                who = describe_holder(holder) if holder else "another process"
                note = f" (waited {wait:.0f}s)" if wait else ""
                raise LockHeld(
                    f"{name} is locked by {who}{note} (lock file {self.directory / fname})",
                    holder=holder,
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The file we locked must still be the one under that name (an admin may have
            # removed it meanwhile, and someone else may be locking a new one).
            try:
                named = os.stat(fname, dir_fd=dfd, follow_symlinks=False)
                same = named.st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{token}\n".encode(), 0)
            return fd

    @staticmethod
    def _give_back(fd: int) -> None:
        try:
            os.ftruncate(fd, 0)  # a free lock's file is empty
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _read_holder(fd: int) -> str | None:
        """The holder's token. A holder writes it right after taking the lock: an empty file
        means it is between the two, so look again for a moment."""
        for _ in range(10):
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if text:
                return text
            time.sleep(0.02)
        return None

    def _open_dir(self) -> int:
        d = self.directory
        try:
            d.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            d.mkdir(mode=0o700, exist_ok=True)
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"lock directory {d}: {e.strerror or e}") from None
        st = os.fstat(dfd)
        problem = None
        if st.st_uid != os.geteuid():
            problem = f"owned by uid {st.st_uid}, not {os.geteuid()}"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        if problem:
            os.close(dfd)
            raise ConfigError(f"lock directory {d} is {problem}; refusing to use it")
        return dfd

    def _open_file(self, dfd: int, fname: str) -> int:
        try:
            fd = os.open(
                fname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd
            )
        except OSError as e:
            raise ConfigError(f"lock file {self.directory / fname}: {e.strerror or e}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise ConfigError(
                f"lock file {self.directory / fname} is not a regular file owned by uid "
                f"{os.geteuid()}; refusing to use it"
            )
        return fd


class LeaseAndFile:
    """`ports.Locks` for a worker (and `zrepq-local` with `[locks] redis`): the Redis `lease`,
    then, for the same keys (this host's datasets; not `check`, the partner's on another host),
    zrepq-local's lock files in `files`' directory, so `zrepq-local` here refuses while a
    worker works on a dataset, and the other way round. The lease comes first: workers wait
    for each other in Redis and meet a `zrepq-local` only here. `holder` is the lease's.

    A directory this process cannot use (another user's: a worker running as a dedicated user
    and a `zrepq-local` run as root; see docs/operations.md) costs the files, not the work:
    the handle then says `host_excluded = False` and the engine sets zrep's marks on the
    dataset instead, which a `zrepq-local` reads; a warning, once per process, names the
    problem."""

    def __init__(self, lease: Locks, files: FileLocks) -> None:
        self.lease = lease
        self.files = files
        self._warned: set[str] = set()

    @contextmanager
    def hold(
        self,
        keys: Sequence[str],
        *,
        operation: str,
        wait: float = 0.0,
        check: Sequence[str] = (),
    ) -> Iterator[LockHandle]:
        with (
            self.lease.hold(keys, operation=operation, wait=wait, check=check) as handle,
            ExitStack() as stack,
        ):
            excluded = False
            if keys:
                try:
                    stack.enter_context(self.files.hold(keys, operation=operation, wait=wait))
                    excluded = True
                except ConfigError as e:
                    if e.message not in self._warned:
                        self._warned.add(e.message)
                        log.warning(
                            "%s: zrepq-local on this host is excluded by zrep's lock marks "
                            "instead (set on each dataset: 4 zfs calls a command)",
                            e.message,
                        )
            if isinstance(handle, Handle):
                handle.host_excluded = excluded or not keys
            yield handle

    def holder(self, key: str) -> str | None:
        return self.lease.holder(key)


__all__ = ["DEFAULT_LOCK_DIR", "FileLockHandle", "FileLocks", "LeaseAndFile", "lock_file_name"]
