"""`Settings`: one process's validated settings, and the typed parts each layer is given.

Built once per process by `workers.settings.load` (the worker's Celery app builds it when
it is imported, `tasks/app.py`); nothing below reads the environment again. Each consumer
takes its own part:

    settings.engine_config()      the engine's `EngineConfig` ([zrep] + zrep's variables)
    settings.ssh_options()        the SSH layer's `SshOptions` ([ssh] + zrep's `SSH`)
    settings.locks(owner, client) leases in Redis or lock files ([locks], [worker] lease_ttl)
    settings.broker               Celery's connection settings and zrepq's Redis client
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from workers.engine.config import EngineConfig, shell_words
from workers.exec.ssh_options import SshOptions
from workers.settings.broker import Broker
from workers.settings.sections import WorkerFile

if TYPE_CHECKING:
    from workers.engine.ports import Locks

F = TypeVar("F", bound=WorkerFile, covariant=True)  # Settings[ProducerFile] is a Settings[AppFile]


@dataclass(frozen=True)
class Settings(Generic[F]):
    """The validated tables (`model`), where they came from, and what derives from them."""

    model: F
    path: Path | None  # the configuration file read, if any
    source_env: Mapping[str, str]  # the environment they were read from
    engine: EngineConfig = field(repr=False)  # checked at load

    # ---- the typed parts -----------------------------------------------------------------

    def engine_config(self) -> EngineConfig:
        return self.engine

    def ssh_options(self) -> SshOptions:
        """[ssh]; zrep's `SSH="ssh -c cipher ..."` adds its arguments before [ssh] args."""
        s = self.model.ssh
        extra: list[str] = []
        legacy = shell_words("SSH", self.source_env.get("SSH", ""))
        if legacy and os.path.basename(legacy[0]) == "ssh":
            extra = legacy[1:]
        return SshOptions(
            config_file=_text(s.config),
            user=s.user or None,
            port=s.port,
            identity_file=_text(s.identity),
            known_hosts=_text(s.known_hosts),
            accept_unknown_host_keys=s.accept_new,
            cipher=s.cipher or None,
            extra_ssh_args=(*extra, *s.args),
        )

    def locks(self, owner: str, client: Any = None) -> Locks:
        """zrepq's own locks for an engine on this host, held in the name of `owner`.

        The worker passes its Redis `client`: leases there (`workers.lease`). `zrepq-local`
        gets lock files on this host (`[locks] dir`, `workers.filelock`): no Redis needed, as
        with zrep from cron; or, with `[locks] redis`, the workers' own leases on the [broker]
        Redis, so a `zrepq-local` run also excludes the queue's runs on the other host. The
        leases come with the lock files of this host's datasets (`LeaseAndFile`): a worker
        and a `zrepq-local` of one host exclude each other there.
        """
        from workers.filelock import FileLocks, LeaseAndFile

        if client is None and self.model.locks.redis:
            client = self.redis()
        files = FileLocks(self.model.locks.dir, owner=owner)
        if client is None:
            return files
        from workers.lease import RedisLocks

        lease = RedisLocks(client, owner=owner, ttl=self.model.worker.lease_ttl)
        return LeaseAndFile(lease, files)

    def remote_command(self) -> tuple[str, ...]:
        """What runs zrep's verbs on the other host (`[worker] remote_command`)."""
        return tuple(shell_words("[worker] remote_command", self.model.worker.remote_command))

    @cached_property
    def broker(self) -> Broker:
        return Broker(self.model.broker)

    def broker_url(self) -> str:
        return self.broker.url()

    def redis(self, *, socket_timeout: float | None = None) -> Any:
        """A redis-py client on the broker's Redis, for zrepq's own keys."""
        return self.broker.client(socket_timeout=socket_timeout)

    # ---- this host ------------------------------------------------------------------------

    def host(self) -> str:
        """This worker's host name: [worker] host, ZREP_SRC_HOST, else `uname -n`."""
        from workers.exec.transport import local_host_name

        return self.model.worker.host or local_host_name(self.source_env)

    def local_host(self) -> str:
        """This host's name for `zrepq-local`: zrep's ZREP_SRC_HOST first, then [worker]
        host, else `uname -n` (a worker exports neither: it names itself with `host()`)."""
        from workers.exec.transport import local_host_name

        zrep_name = self.source_env.get("ZREP_SRC_HOST")
        return zrep_name or self.model.worker.host or local_host_name(self.source_env)

    def concurrency(self, host: str | None = None) -> int:
        """Parallel tasks on `host`: [hosts.HOST] concurrency, else [worker] concurrency."""
        if "ZREPQ_CONCURRENCY" in self.source_env:
            return self.model.worker.concurrency
        per_host = self.model.hosts.get(host or self.host())
        if per_host is not None and per_host.concurrency is not None:
            return per_host.concurrency
        return self.model.worker.concurrency


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
