"""`Engine`: zrep's commands for the host it runs on, over injected ports.

The engine holds a transport (how to reach hosts), a lock provider (leases) and an observer
(typed events). Each zrep command is a method that delegates to the module that implements
it (`sync.py`, `init.py`, `expire.py`, `roles.py`, `report.py`, `admin.py`); the shared steps
(locking, streaming, marking a snapshot sent, moving holds) live here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from . import admin, expire, handback, init, pause, report, roles, sync, zreplock
from .config import EngineConfig
from .errors import Cancelled, LockHeld, LockLost, ValidationError
from .events import (
    Event,
    Message,
    MessageLevel,
    Observer,
    StreamFinished,
    StreamProgress,
    StreamStarted,
    null_observer,
    safe_notify,
)
from .locks import LocalLocks, lock_name
from .model import DatasetInfo, Snapshot, may_hold
from .names import validate_dataset, validate_host
from .ports import LockHandle, Locks, Peer, StreamSpec, Transport
from .ports import StreamProgress as PortProgress
from .results import (
    ExpireResult,
    HandbackResult,
    InitResult,
    RoleResult,
    StatusRow,
    SyncResult,
)
from .zfs import ZfsHost

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        transport: Transport,
        *,
        config: EngineConfig | None = None,
        locks: Locks | None = None,
        observer: Observer | None = None,
        peer: Peer | None = None,
        lock_wait: float = 0.0,
        operation_id: str | None = None,
    ) -> None:
        self.transport = transport
        # Carried in lease tokens (e.g. the Celery task id), so a holder can be recognised.
        self.operation_id = operation_id
        self.config = config or EngineConfig.from_env()
        self.locks: Locks = locks or LocalLocks()
        self.observer = observer or null_observer
        self.peer = peer
        self.lock_wait = lock_wait

    # ---- services ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.transport.local_host

    @property
    def tag(self) -> str:
        return self.config.tag

    def with_tag(self, tag: str | None) -> Engine:
        """The same engine under another tag (zrep's -t / ZREPTAG)."""
        if tag is None or tag == self.tag:
            return self
        return Engine(
            self.transport,
            config=self.config.with_tag(tag),
            locks=self.locks,
            observer=self.observer,
            peer=self.peer,
            lock_wait=self.lock_wait,
            operation_id=self.operation_id,
        )

    @property
    def local(self) -> ZfsHost:
        return ZfsHost(self.transport.runner(self.host), self.tag)

    def zfs(self, host: str) -> ZfsHost:
        validate_host(host)
        return ZfsHost(self.transport.runner(host), self.tag)

    def emit(self, event: Event) -> None:
        safe_notify(self.observer, event)

    def say(
        self,
        text: str,
        dataset: str | None = None,
        *,
        warning: bool = False,
        level: MessageLevel | None = None,
    ) -> None:
        """Tell the observer (see `Message` for the levels; `warning=True` means "warning").

        Logged at debug level only: the observer shows it (the CLI prints it, the worker logs
        it), and logging it here too printed every warning twice on a CLI's stderr.
        """
        lvl = level or ("warning" if warning else "info")
        log.debug("%s: %s", lvl, text)
        self.emit(Message(text, dataset, lvl))

    def relay(self, messages: Sequence[Message] | None) -> None:
        """Pass on the lines another host printed (the peer's half of failover/takeover)."""
        for m in messages or ():
            self.emit(m)

    @property
    def global_lock(self) -> zreplock.GlobalLock:
        """zrep's global lock on this host (`$ZREP_RUNDIR/zrep.lock`)."""
        return zreplock.global_lock(self.config.rundir)

    @contextmanager
    def lock(
        self,
        targets: Sequence[tuple[str, str]],
        operation: str,
        *,
        local_info: DatasetInfo | None = None,
    ) -> Iterator[LockHandle]:
        """Lock every (host, fs) in `targets`, in sorted order, released on every path.

        First zrepq's own lock (`self.locks`: the Redis lease, or `zrepq-local`'s lock files);
        then, for the dataset of this host (`local_info`), zrep's own `TAG:lock-pid` and
        `TAG:lock-time`, checked and set under zrep's global lock (`zreplock`): a zrep or
        another zrepq process of this host that holds it makes this one refuse, and an
        upstream zrep run from cron here sees the dataset locked while this one works.
        Refusals say `Cannot lock FS. Cannot continue` (zrep's words) and then who holds it.
        """
        keys = sorted({lock_name(self.tag, h, fs) for h, fs in targets})
        if self.operation_id:
            operation = f"{operation}/{self.operation_id}"
        with ExitStack() as stack:
            try:
                handle = stack.enter_context(
                    self.locks.hold(keys, operation=operation, wait=self.lock_wait)
                )
                if local_info is not None:
                    zlocal, glock = self.local, self.global_lock
                    mark = zreplock.claim(zlocal, local_info.name, glock)
                    stack.callback(zreplock.release, zlocal, mark, glock)
            except LockHeld as e:
                fs = local_info.name if local_info is not None else self._lock_subject(targets)
                raise LockHeld(
                    f"Cannot lock {fs}. Cannot continue\n{e.message}",
                    holder=e.holder,
                    dataset=fs,
                    host=e.host or self.host,
                ) from None
            yield handle

    def _lock_subject(self, targets: Sequence[tuple[str, str]]) -> str:
        """The dataset zrep would name in `Cannot lock ...`: this host's, else the first."""
        here = [fs for h, fs in targets if h == self.host]
        return (here or [fs for _, fs in targets] or ["?"])[0]

    @staticmethod
    def check(handle: LockHandle) -> None:
        if handle.lost.is_set():
            raise LockLost("lost the lease while working; stopped before the next change")

    def stream(
        self,
        src: ZfsHost,
        send_args: Sequence[str],
        dst: ZfsHost,
        recv_args: Sequence[str],
        *,
        dataset: str,
        snapshot: str,
        base: str | None,
        dest_fs: str,
        handle: LockHandle | None,
        resumed: bool = False,
    ) -> tuple[int, float]:
        """`zfs send -v -P ARGS | [filters] | ssh dst zfs recv ARGS`, with progress events.

        No separate `zfs send -nvP` for the size: the send itself prints that estimate before
        the first byte (`size` line, parsed by the pipeline), so progress events carry the
        total from the first one on; `StreamStarted.total` is None.
        """
        total = None
        self.emit(StreamStarted(dataset, snapshot, base, dst.host, dest_fs, total, resumed))
        spec = StreamSpec(
            send_host=src.host,
            send_argv=("zfs", "send", "-v", "-P", *send_args),
            recv_host=dst.host,
            recv_argv=("zfs", "recv", *recv_args),
            outfilter=self.config.outfilter,
            infilter=self.config.infilter,
        )

        def progress(p: PortProgress) -> None:
            self.emit(
                StreamProgress(dataset, snapshot, p.bytes_sent, p.total or total, p.rate, p.elapsed)
            )

        cancel = handle.lost if handle is not None else threading.Event()
        try:
            res = self.transport.stream(spec, total=total, on_progress=progress, cancel=cancel)
        except Cancelled:
            if cancel.is_set():
                raise LockLost(
                    f"lost the lease on {dataset} during the send of {snapshot}; stream stopped",
                    dataset=dataset,
                    host=self.host,
                ) from None
            raise
        self.emit(StreamFinished(dataset, snapshot, res.bytes_sent, res.elapsed))
        return res.bytes_sent, res.elapsed

    def mark_sent(
        self, src: ZfsHost, src_fs: str, dst: ZfsHost, dst_fs: str, snaps: Sequence[Snapshot]
    ) -> None:
        """Record completion the way zrep does: `TAG:sent=<epoch>` on both sides."""
        now = str(int(time.time()))
        for s in snaps:
            dst.set(f"{dst_fs}@{s.short}", {f"{self.tag}:sent": now})
            src.set(s.name, {f"{self.tag}:sent": now})

    def move_holds(
        self,
        src: ZfsHost,
        src_fs: str,
        dst: ZfsHost,
        dst_fs: str,
        new: str,
        *,
        src_snaps: Sequence[Snapshot] = (),
        dst_snaps: Sequence[Snapshot] = (),
    ) -> None:
        """Hold the new last-sent snapshot on both sides, and release our hold from every other
        snapshot of either side that may carry one.

        The hold stops a manual `zfs destroy` (or an upstream zrep expire) from removing the
        incremental base, which would force a full re-seed. Any other hold of ours is stale by
        definition: the previous base, and also one left behind when zrep synced in between
        (zrep moves no hold), which would keep zrep's expire failing with "dataset is busy".
        `src_snaps`/`dst_snaps` are the sides' snapshots as read under the lease, with their
        `userrefs`: only those with a hold (or unknown) are named, in one `zfs release` per
        side, so the steady state costs what it always did (the previous base, once).
        """
        tag = self.config.hold_tag
        src.hold(tag, f"{src_fs}@{new}")
        dst.hold(tag, f"{dst_fs}@{new}")
        self.release_stale(src, src_snaps, keep=new)
        self.release_stale(dst, dst_snaps, keep=new)

    def release_stale(
        self, zh: ZfsHost, snaps: Sequence[Snapshot], *, keep: str | None = None
    ) -> list[str]:
        """Release our hold from every snapshot in `snaps` that may carry one, except `keep`
        (a short name); one call, none when no snapshot has a hold. Returns those released."""
        names = [s.name for s in snaps if s.short != keep and may_hold(s)]
        return zh.release(self.config.hold_tag, *names)

    # ---- zrep's commands -----------------------------------------------------------------

    def init(
        self,
        fs: str,
        dest_host: str,
        dest_fs: str,
        *,
        force: bool = False,
        resume: bool | None = None,
    ) -> InitResult:
        return init.init(self, fs, dest_host, dest_fs, force=force, resume=resume)

    def sync(
        self,
        fs: str,
        *,
        force: bool = False,
        resume: bool | None = None,
        changed_only: bool = False,
        quiet_secs: int | None = None,
        ignore_pause: bool = False,
    ) -> SyncResult:
        return sync.sync(
            self,
            fs,
            force=force,
            resume=resume,
            changed_only=changed_only,
            quiet_secs=quiet_secs,
            ignore_pause=ignore_pause,
        )

    def pause(
        self, fs: str, *, reason: str = "", by: str | None = None, expire: bool = False
    ) -> dict[str, str]:
        return pause.pause(self, fs, reason=reason, by=by, expire=expire)

    def resume(self, fs: str) -> bool:
        return pause.resume(self, fs)

    def synconly(
        self,
        fs: str,
        *,
        force: bool = False,
        resume: bool | None = None,
        ignore_pause: bool = False,
    ) -> SyncResult:
        return sync.sync(
            self, fs, force=force, resume=resume, make_snapshot=False, ignore_pause=ignore_pause
        )

    def sync_to_snapshot(
        self, snapshot: str, *, before_rollback: Callable[[], None] | None = None
    ) -> SyncResult:
        return sync.sync_to_snapshot(self, snapshot, before_rollback=before_rollback)

    def refresh(self, fs: str, *, force: bool = False, resume: bool | None = None) -> SyncResult:
        return sync.refresh(self, fs, force=force, resume=resume)

    def snaponly(self, fs: str) -> str:
        return admin.snaponly(self, fs)

    def expire(self, fs: str, *, local_only: bool = False) -> ExpireResult:
        return expire.expire(self, fs, local_only=local_only)

    def failover(
        self,
        fs: str,
        *,
        local_only: bool = False,
        snapshot: str | None = None,
        host: str | None = None,
    ) -> RoleResult:
        return roles.failover(self, fs, local_only=local_only, snapshot=snapshot, host=host)

    def takeover(
        self,
        fs: str,
        *,
        local_only: bool = False,
        snapshot: str | None = None,
        host: str | None = None,
        force: bool = False,
    ) -> RoleResult:
        return roles.takeover(
            self, fs, local_only=local_only, snapshot=snapshot, host=host, force=force
        )

    def status(self, fs: Sequence[str] = (), *, all: bool = False) -> list[StatusRow]:
        return report.status(self, fs, all_fs=all)

    def list_fs(self, fs: Sequence[str] = (), *, masters_only: bool = False) -> list[str]:
        return report.list_names(self, fs, masters_only=masters_only)

    def list_verbose(self, fs: Sequence[str] = ()) -> list[dict[str, Any]]:
        return report.list_verbose(self, fs)

    def list_snapshots(self, fs: Sequence[str] = ()) -> str:
        return report.list_snapshots(self, fs)

    def masters(self) -> list[str]:
        return report.masters(self)

    def lastsent(self, fs: str) -> str | None:
        return report.lastsent(self, fs)

    def uptodate(self, fs: str) -> bool:
        return report.uptodate(self, fs)

    def clear(self, fs: str) -> list[str]:
        return admin.clear(self, fs)

    def handback(self, fs: str, *, local_only: bool = False) -> HandbackResult:
        return handback.handback(self, fs, local_only=local_only)

    def changeconfig(
        self, fs: str, host: str, other_fs: str, *, force: bool = False, dest_side: bool = False
    ) -> None:
        admin.changeconfig(self, fs, host, other_fs, force=force, dest_side=dest_side)

    def sentsync(self, snapshot: str, *, local_only: bool = False) -> None:
        admin.sentsync(self, snapshot, local_only=local_only)


def require_fs(name: str) -> str:
    """Validate a filesystem argument (not a snapshot)."""
    if "@" in name:
        raise ValidationError(f"{name!r}: expected a filesystem, not a snapshot")
    return validate_dataset(name)
