"""`Context`: everything a zrep command needs from outside the engine, built complete.

A verb (`sync.sync(ctx, request)`, `init.init(...)`, ...) receives one `Context` and calls
down from it: `ctx.local` and `ctx.zfs(host)` for the hosts' zfs, `ctx.say`/`ctx.emit` for
the observer, and the shared steps in `steps.py` (locks, the stream, marks, holds) for the
rest. The context is frozen: whoever builds it (`workers.runtime.context_from_env`, the
Celery task, a test) passes every part at once, and a variation is a new context
(`with_tag`, `dataclasses.replace`). Nothing here decides anything; it only derives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .config import EngineConfig
from .events import Event, Message, MessageLevel, Observer, null_observer, safe_notify
from .locks import LocalLocks
from .names import validate_host
from .ports import Locks, Peer, Transport
from .zfs import ZfsHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    transport: Transport  # how to reach hosts; `transport.local_host` is this host
    config: EngineConfig
    locks: Locks = field(default_factory=LocalLocks)  # zrepq's own lock: a lease, a file
    observer: Observer = null_observer  # typed events: Message, StreamProgress, ...
    peer: Peer | None = None  # the other side of failover/takeover; None: refuse those
    # Carried in lock tokens (the Celery task id), so a holder can be recognised.
    operation_id: str | None = None
    lock_wait: float = 0.0  # seconds to wait for a held lock before refusing

    @property
    def host(self) -> str:
        return self.transport.local_host

    @property
    def tag(self) -> str:
        return self.config.tag

    def with_tag(self, tag: str | None) -> Context:
        """The same context under another tag (zrep's -t / ZREPTAG)."""
        if tag is None or tag == self.tag:
            return self
        return replace(self, config=self.config.with_tag(tag))

    @property
    def local(self) -> ZfsHost:
        """This host's zfs."""
        return ZfsHost(self.transport.runner(self.host), self.tag, self.config.command_timeout)

    def zfs(self, host: str) -> ZfsHost:
        """`host`'s zfs (this host's, without SSH, when `host` names it)."""
        validate_host(host)
        return ZfsHost(self.transport.runner(host), self.tag, self.config.command_timeout)

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
