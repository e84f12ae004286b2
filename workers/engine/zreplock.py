"""zrep's own per-filesystem lock, taken by zrepq exactly as zrep takes it.

zrep 2.0.2 locks a filesystem by writing its pid and the time into `TAG:lock-pid` and
`TAG:lock-time` on it, and holds a short *global* lock while it checks and sets them: the file
`$ZREP_RUNDIR/zrep.lock` (`/var/run` for root), created with the shell's noclobber (O_EXCL)
and holding the pid. It treats a lock-pid as stale when `kill -0` fails, and never removes a
stale global lock (it asks for manual cleanup).

zrepq, after it holds its own lock (the Redis lease, or the lock file of `zrepq-local`), does
the same for every dataset of this host it works on:

1. take zrep's global lock (wait up to `GLOBAL_WAIT`: zrep holds it for a moment only);
2. read `TAG:lock-pid` and `TAG:lock-time` (set locally) again, now that no zrep or zrepq can
   change them;
3. refuse if they name a live holder by the rule in `liveness.lock_pid_holder` (the pid exists
   and started no later than lock-time, whatever its name: a zrep, a `zrepq-local`, a worker's
   pool process); our own pid is live only while this process holds that dataset in another
   thread, otherwise it is our own stale mark;
4. otherwise set both to this process and now, and let the global lock go.

Releasing is the mirror: under the global lock, clear both only if lock-pid is still ours.
With every zrepq set and clear under zrep's global lock, zrepq and zrep exclude each other as
well as zrep excludes itself (zrep checks lock-pid once *before* taking the global lock and
does not check again when it found it empty: two runs starting in the same instant can still
both pass there, zrep against zrep as against zrepq).

A stale global lock (its pid gone, or started after the file was written) left by a process
killed in that moment is removed by zrepq, under a guard file that serialises zrepq processes
(zrep never removes one it does not own, so nobody else can be removing or replacing it).

When the marks are set (`marks_wanted`, the `lock_marks` setting): by default (`auto`) only
when an upstream `zrep` program is installed on this host (`zrep_program`, looked up for every
command: an admin may install zrep while workers run), or `always`, or `never`. They exist
for zrep alone: zrepq processes of one host exclude each other with zrepq-local's flock'ed
lock files, which a worker takes too after its Redis lease (`workers.filelock`). Setting and
clearing them costs 4 zfs calls per command (set; get, inherit, inherit). Without them, step 2
and 3 stay (the marks come with a read the command makes anyway, so a live zrep, or a zrepq
with `always`, is still refused), step 4 and the release go, and so does zrep's global lock:
it only orders check-and-set of the marks, and a process that sets none has nothing to order
(a zrep installed where `auto` does not look it up can then pass the moment between our read
and its own set, as zrep passes against zrep: see above).
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import liveness
from .errors import ConfigError, LockHeld, ZrepqError
from .liveness import LOCK_TIME_FORMAT
from .locks import format_since
from .model import DatasetInfo, Snapshot
from .zfs import ZfsHost

if TYPE_CHECKING:
    from .bookmarks import Bookmark

log = logging.getLogger(__name__)

GLOBAL_LOCK_NAME = "zrep.lock"
GUARD_NAME = "zrep.lock.zrepq-guard"
GLOBAL_WAIT = 10.0  # zrep's own Z_LOCK_RETRY: ten tries a second apart
_POLL = 0.05

# Where an upstream zrep is looked for besides this process's PATH (a worker under systemd has
# a short one): where zrep's own install (a copy of the script), distribution packages and
# trees of their own put programs.
ZREP_PLACES = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
               "/opt/*/bin")  # fmt: skip


def zrep_program(path: str | None = None, places: Sequence[str] = ZREP_PLACES) -> str | None:
    """The first executable file named `zrep` in `path` (default: this process's PATH; its
    relative entries are skipped) and then `places` (globs), or None: is zrep installed here?
    A dozen `stat`s, no zfs call: cheap enough to ask for every command."""
    dirs = [d for d in (os.environ.get("PATH", "") if path is None else path).split(":")]
    for place in places:
        dirs.extend(sorted(glob.glob(place)) if glob.has_magic(place) else [place])
    for d in dirs:
        if not d.startswith("/"):
            continue
        candidate = os.path.join(d, "zrep")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def marks_wanted(mode: str) -> bool:
    """Does a command set zrep's marks, under the `lock_marks` setting `mode`?"""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return zrep_program() is not None


class GlobalLock:
    """zrep's `$ZREP_RUNDIR/zrep.lock`: a file created with O_EXCL, holding the holder's pid."""

    def __init__(self, rundir: str | Path, *, wait: float = GLOBAL_WAIT) -> None:
        self.dir = Path(rundir)
        self.path = self.dir / GLOBAL_LOCK_NAME
        self.wait = wait
        # One thread of this process at a time: the others wait here instead of polling.
        self._threads = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        deadline = time.monotonic() + self.wait
        if not self._threads.acquire(timeout=self.wait):
            raise LockHeld(f"zrep's global lock {self.path} is busy in this process")
        try:
            ino = self._acquire(deadline)
            try:
                yield
            finally:
                self._release(ino)
        finally:
            self._threads.release()

    def _acquire(self, deadline: float) -> int:
        pid = os.getpid()
        while True:
            try:
                fd = os.open(
                    self.path,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                )
            except FileExistsError:
                if self._remove_if_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"zrep's global lock {self.path} is held by {self._who()} "
                        f"(waited {self.wait:g}s)",
                        holder=self._who(),
                    ) from None
                time.sleep(_POLL)
                continue
            except FileNotFoundError:
                raise ConfigError(
                    f"ZREP_RUNDIR {self.dir} does not exist (zrep's global lock lives there)"
                ) from None
            except OSError as e:
                raise ConfigError(
                    f"cannot create zrep's global lock {self.path}: {e.strerror or e}"
                ) from None
            try:
                os.write(fd, f"{pid}\n".encode())  # zrep: `echo $Z_GLOBAL_PID > zrep.lock`
                return os.fstat(fd).st_ino
            finally:
                os.close(fd)

    def _release(self, ino: int) -> None:
        try:
            st = os.lstat(self.path)
            if st.st_ino == ino and self._pid_in_file() == os.getpid():
                os.unlink(self.path)
                return
        except FileNotFoundError:
            pass
        log.warning("zrep's global lock %s was no longer ours when released", self.path)

    def _pid_in_file(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _who(self) -> str:
        pid = self._pid_in_file()
        return f"pid {pid}" if pid is not None else "a process that wrote no pid"

    def _remove_if_stale(self) -> bool:
        """Remove the lock file if its holder has provably ended; True if it is gone now."""
        with self._guard():
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return True
            except OSError:
                return False
            try:
                st = os.fstat(fd)
                text = os.read(fd, 64).decode(errors="replace").strip()
            finally:
                os.close(fd)
            if not text.isdigit():
                return False  # being written (created, pid not yet in), or not zrep's
            pid = int(text)
            if pid == os.getpid():
                return False  # another engine of this very process holds it
            stat = liveness.read_stat(pid)
            started = liveness.start_epoch(stat) if stat is not None else None
            if stat is not None and not stat.exited:
                if started is None or started <= st.st_mtime + liveness.LOCK_TIME_SLACK:
                    return False  # a live holder
            elif stat is None and liveness.exists(pid):
                return False
            try:
                if os.lstat(self.path).st_ino != st.st_ino:
                    return True  # replaced meanwhile: try again
                os.unlink(self.path)
            except FileNotFoundError:
                return True
            log.warning(
                "removed zrep's stale global lock %s (pid %d is %s)",
                self.path,
                pid,
                "gone" if stat is None or stat.exited else "a later process",
            )
            return True

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Only one zrepq process at a time decides about and removes a stale global lock."""
        path = self.dir / GUARD_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot open {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


_SHARED: dict[str, GlobalLock] = {}
_SHARED_LOCK = threading.Lock()


def global_lock(rundir: str) -> GlobalLock:
    """The one `GlobalLock` of this process for `rundir` (its threads then queue in-process)."""
    with _SHARED_LOCK:
        found = _SHARED.get(rundir)
        if found is None:
            found = _SHARED[rundir] = GlobalLock(rundir)
        return found


@dataclass(frozen=True)
class Mark:
    """This process's `lock-pid` on a dataset: what `release` needs to clear it."""

    host: str
    fs: str
    pid: int
    time: str


# (host, tag, fs) -> pid of the process holding a mark on it, for step 3's "our own pid".
_MINE: dict[tuple[str, str, str], int] = {}
_MINE_LOCK = threading.Lock()


def claim(zfs: ZfsHost, fs: str, glock: GlobalLock, *, marks: bool = True) -> Mark | None:
    """Steps 1-4: set `TAG:lock-pid`/`lock-time` on `fs` to this process, or raise LockHeld.
    Without `marks`, steps 2-3 only (read them, refuse a live one), no global lock: None."""
    if not marks:
        _refuse_unmarked(zfs, fs, *zfs.lock_props(fs))
        return None
    with glock.held():
        return _claim(zfs, fs, *zfs.lock_props(fs))


def claim_reading(
    zfs: ZfsHost,
    fs: str,
    glock: GlobalLock,
    check: Callable[[DatasetInfo], None],
    *,
    bookmarks: bool = False,
    marks: bool = True,
) -> tuple[Mark | None, DatasetInfo, list[Snapshot], list[Bookmark]]:
    """`claim`, with step 2's read being the whole state of `fs` (its zrep properties, the
    lock marks among them, its snapshots and, with `bookmarks`, its bookmarks:
    `ZfsHost.state`, one `zfs get -d 1`), so a sync needs no other read of its source: the
    one it used to make before locking and the snapshot list after it come from this read.
    `check` sees the properties first, under the global lock, and refuses by raising before
    any mark is set (zrep's order: not master, paused, then the lock). The marks count only
    when set locally, as in `lock_props`. Without `marks`: the same read and refusals,
    without the global lock, and no mark set (None)."""
    if not marks:
        info, snaps, books = _state(zfs, fs, bookmarks)
        check(info)
        _refuse_unmarked(zfs, fs, *(_local_value(info, k) for k in ("lock-pid", "lock-time")))
        return None, info, snaps, books
    with glock.held():
        info, snaps, books = _state(zfs, fs, bookmarks)
        check(info)
        pid, when = (_local_value(info, k) for k in ("lock-pid", "lock-time"))
        return _claim(zfs, fs, pid, when), info, snaps, books


def _state(
    zfs: ZfsHost, fs: str, bookmarks: bool
) -> tuple[DatasetInfo, list[Snapshot], list[Bookmark]]:
    if bookmarks:
        return zfs.state_and_bookmarks(fs)
    info, snaps = zfs.state(fs)
    return info, snaps, []


def _refuse_unmarked(zfs: ZfsHost, fs: str, lock_pid: str | None, lock_time: str | None) -> None:
    """Step 3 for a command that sets no mark: a stale mark is left as it is (nobody takes a
    dead pid for a holder: zrep's `kill -0` fails, `liveness` sees it ended)."""
    if lock_pid is not None:
        _refuse_if_live((zfs.host, zfs.tag, fs), fs, zfs.tag, lock_pid, lock_time, "ignoring")


def _local_value(info: DatasetInfo, key: str) -> str | None:
    p = info.props.get(key)
    return p.value if p is not None and p.is_set and p.source == "local" else None


def _claim(zfs: ZfsHost, fs: str, lock_pid: str | None, lock_time: str | None) -> Mark:
    """Steps 3-4, under the global lock, from the marks just read."""
    tag, host, pid = zfs.tag, zfs.host, os.getpid()
    key = (host, tag, fs)
    if lock_pid is not None:
        _refuse_if_live(key, fs, tag, lock_pid, lock_time)
    now = time.strftime(LOCK_TIME_FORMAT)
    zfs.set(fs, {f"{tag}:lock-pid": str(pid), f"{tag}:lock-time": now})
    with _MINE_LOCK:
        _MINE[key] = pid
    return Mark(host, fs, pid, now)


def _refuse_if_live(
    key: tuple[str, str, str],
    fs: str,
    tag: str,
    value: str,
    lock_time: str | None,
    doing: str = "overriding",
) -> None:
    pid = int(value) if value.isdigit() else 0
    if pid == os.getpid():
        with _MINE_LOCK:
            if _MINE.get(key) == pid:
                raise LockHeld(
                    f"{fs} is locked by this process (pid {pid}) for another operation",
                    holder=f"pid {pid}",
                    dataset=fs,
                    host=key[0],
                )
        log.warning("%s this process's own stale %s:lock-pid on %s", doing, tag, fs)
        return
    verdict = liveness.lock_pid_holder(pid, lock_time) if pid else None
    if verdict is not None and verdict.live:
        since = liveness.lock_time_epoch(lock_time)
        who = f"pid {pid}" + (f" ({verdict.command})" if verdict.command else "")
        when = f" since {format_since(since)}" if since is not None else ""
        raise LockHeld(
            f"{fs} is locked by {who}{when} ({tag}:lock-pid)",
            holder=f"pid {pid}",
            dataset=fs,
            host=key[0],
        )
    why = "not a pid" if verdict is None else verdict.state
    log.warning("%s stale %s:lock-pid=%s on %s (%s)", doing, tag, value, fs, why)


def release(zfs: ZfsHost, mark: Mark, glock: GlobalLock) -> None:
    """Clear `TAG:lock-pid`/`lock-time` on the dataset if they are still this process's."""
    tag = zfs.tag
    key = (mark.host, tag, mark.fs)
    try:
        try:
            with glock.held():
                _clear_if_mine(zfs, mark)
        except LockHeld as e:
            # zrep's global lock stuck: clear anyway rather than leave a live pid behind.
            log.warning("%s; clearing %s:lock-pid on %s without it", e, tag, mark.fs)
            _clear_if_mine(zfs, mark)
    except (ZrepqError, OSError) as e:
        log.warning("could not clear %s:lock-pid on %s: %s", tag, mark.fs, e)
    finally:
        with _MINE_LOCK:
            if _MINE.get(key) == mark.pid:
                del _MINE[key]


def _clear_if_mine(zfs: ZfsHost, mark: Mark) -> None:
    lock_pid, _ = zfs.lock_props(mark.fs)
    if lock_pid != str(mark.pid):
        log.warning(
            "%s:lock-pid on %s is %s, not ours (%d): left alone", zfs.tag, mark.fs, lock_pid,
            mark.pid,
        )  # fmt: skip
        return
    for prop in ("lock-time", "lock-pid"):  # zrep's order
        zfs.inherit(mark.fs, f"{zfs.tag}:{prop}")


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's marks, and must not inherit a lock that a
    thread of the parent held at the fork."""
    global _MINE_LOCK, _SHARED_LOCK
    _MINE_LOCK = threading.Lock()
    _MINE.clear()
    _SHARED_LOCK = threading.Lock()
    _SHARED.clear()


os.register_at_fork(after_in_child=_forget_after_fork)

__all__ = [
    "ZREP_PLACES",
    "GlobalLock",
    "Mark",
    "claim",
    "claim_reading",
    "global_lock",
    "marks_wanted",
    "release",
    "zrep_program",
]
