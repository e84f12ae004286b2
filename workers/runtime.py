"""Build the engine's `Context` for this host from the environment: transport, leases, peer.

One place turns settings into objects, so the direct CLI (`zrepq-local`) and the Celery
worker build the same context. Settings come from `workers.settings` (the TOML file, overlaid
by environment variables: zrep's own names for engine behaviour, `ZREPQ_*` for what zrep never
had), and are read here in their canonical environment form (`Settings.env()`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.engine import Context, EngineConfig
from workers.engine.errors import CommandError
from workers.engine.events import Message, Observer, null_observer
from workers.engine.ports import Locks, Peer, Transport
from workers.engine.zfs import ZfsHost
from workers.exec.ssh_options import SshOptions
from workers.exec.transport import SshTransport, local_host_name
from workers.filelock import DEFAULT_LOCK_DIR, FileLocks
from workers.settings import load


def ssh_options_from_env(env: Mapping[str, str]) -> SshOptions:
    """ZREPQ_SSH_* settings; zrep's `SSH="ssh -c cipher ..."` adds its extra arguments."""
    extra: list[str] = []
    legacy = shlex.split(env.get("SSH", ""))
    if legacy and os.path.basename(legacy[0]) == "ssh":
        extra = legacy[1:]
    extra += shlex.split(env.get("ZREPQ_SSH_ARGS", ""))
    port = env.get("ZREPQ_SSH_PORT")
    return SshOptions(
        config_file=env.get("ZREPQ_SSH_CONFIG") or None,
        user=env.get("ZREPQ_SSH_USER") or None,
        port=int(port) if port else None,
        identity_file=env.get("ZREPQ_SSH_IDENTITY") or None,
        known_hosts=env.get("ZREPQ_SSH_KNOWN_HOSTS") or None,
        accept_unknown_host_keys=env.get("ZREPQ_SSH_ACCEPT_NEW", "") in ("1", "yes", "true"),
        cipher=env.get("ZREPQ_SSH_CIPHER") or None,
        extra_ssh_args=tuple(extra),
    )


def settings_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` with the configuration file's settings filled in (raises `ConfigError`)."""
    return load(os.environ if env is None else env).env()


def transport_from_env(env: Mapping[str, str]) -> SshTransport:
    host = env.get("ZREP_SRC_HOST") or env.get("ZREPQ_HOST") or local_host_name()
    return SshTransport(host, ssh_options_from_env(env))


def locks_from_env(env: Mapping[str, str], owner: str, client: Any = None) -> Locks:
    """zrepq's own locks for an engine on this host.

    The worker passes its Redis `client`: leases there (`workers.lease`). `zrepq-local` gets
    lock files on this host (`[locks] dir`, `workers.filelock`): no Redis needed, as with zrep
    from cron; or, with `[locks] redis`, the workers' own leases on the [broker] Redis, so a
    `zrepq-local` run also excludes the queue's runs on the other host of a pair.
    """
    if client is None and env.get("ZREPQ_LOCK_REDIS", "").strip():
        settings = load(env)
        if settings.model.locks.redis:
            client = settings.redis()
    if client is None:
        return FileLocks(env.get("ZREPQ_LOCK_DIR") or DEFAULT_LOCK_DIR, owner=owner)
    from workers.lease import RedisLocks

    ttl = float(env.get("ZREPQ_LEASE_TTL") or "60")
    return RedisLocks(client, owner=owner, ttl=ttl)


@dataclass
class CommandPeer:
    """The other side, reached as zrep does it: run zrepq-local there over SSH.

    What the command printed comes back as `Message`s from that host (stdout: zrep's lines,
    stderr: warnings), so the admin sees the far side's lines as with zrep, whose `ssh host
    zrep takeover -L` writes straight to the same terminal.
    """

    transport: Transport
    command: tuple[str, ...] = ("zrepq-local",)
    timeout: float | None = None  # seconds for the far side's command (None: no limit)

    def takeover_local(
        self, host: str, fs: str, *, tag: str, snap: str | None = None
    ) -> list[Message]:
        target = f"{fs}@{snap}" if snap else fs
        return self._run(host, fs, ("-t", tag, "takeover", "-L", target))

    def failover(self, host: str, fs: str, *, tag: str) -> list[Message]:
        return self._run(host, fs, ("-t", tag, "failover", fs))

    def _run(self, host: str, fs: str, args: tuple[str, ...]) -> list[Message]:
        argv = (*self.command, *args)
        res = self.transport.runner(host).run(argv, check=False, timeout=self.timeout)
        if res.returncode != 0:
            # It failed before it changed anything worth a line (lock, split brain, missing
            # fs): its own last "Error: ..." line says why.
            errors = [t for t in res.stderr.splitlines() if t.strip()]
            why = next((t for t in reversed(errors) if t.startswith("Error: ")), None)
            why = why or (errors[-1] if errors else "(no error output)")
            raise CommandError(
                f"`{' '.join(args[2:])}` on {host} failed (exit {res.returncode}): "
                f"{why.removeprefix('Error: ')}",
                argv=argv,
                returncode=res.returncode,
                stderr=res.stderr,
                dataset=fs,
                host=host,
            )
        return [Message(t, fs, "info", host) for t in res.stdout.splitlines()] + [
            Message(t, fs, "warning", host) for t in res.stderr.splitlines()
        ]


def context_from_env(
    env: Mapping[str, str] | None = None,
    *,
    observer: Observer = null_observer,
    peer: Peer | None = None,
    transport: Transport | None = None,
    locks: Locks | None = None,
    operation_id: str | None = None,
) -> Context:
    """The context for an engine on this host: the parts given, the rest from settings.

    The worker passes its per-process transport and leases, and its own peer (the other
    host's queue); `zrepq-local` passes only its printer."""
    env = settings_env(env)
    config = EngineConfig.from_env(env)
    transport = transport or transport_from_env(env)
    if peer is None:
        cmd = tuple(shlex.split(env.get("ZREPQ_REMOTE_COMMAND", "zrepq-local")))
        peer = CommandPeer(transport, cmd, timeout=config.command_timeout)
    return Context(
        transport,
        config,
        locks=locks or locks_from_env(env, transport.local_host),
        observer=observer,
        peer=peer,
        operation_id=operation_id,
    )


__all__ = ["CommandPeer", "ZfsHost", "context_from_env", "settings_env", "ssh_options_from_env"]
