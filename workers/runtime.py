"""Build the engine's `Context` for this host from the settings: transport, leases, peer.

One place turns settings into objects, so the direct CLI (`zrepq-local`) and the Celery
worker build the same context. Settings come from `workers.settings` (the TOML file, overlaid
by environment variables: zrep's own names for engine behaviour, `ZREPQ_*` for what zrep never
had), loaded once per process; each layer is given its typed part of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.engine import Context
from workers.engine.errors import CommandError
from workers.engine.events import Message, Observer, null_observer
from workers.engine.ports import Locks, Peer, Transport
from workers.engine.zfs import ZfsHost
from workers.exec.transport import SshTransport
from workers.settings import Settings, load


def transport_for(settings: Settings[Any], host: str | None = None) -> SshTransport:
    """Commands and streams from this host, over SSH as [ssh] says. `host` is this host's
    name (default: `zrepq-local`'s, `Settings.local_host`; the worker passes its own)."""
    return SshTransport(host or settings.local_host(), settings.ssh_options())


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
    settings: Settings[Any] | None = None,
    locks: Locks | None = None,
    operation_id: str | None = None,
) -> Context:
    """The context for an engine on this host: the parts given, the rest from `settings`
    (default: loaded from the file and `env`).

    The worker passes its settings, per-process transport and leases, and its own peer (the
    other host's queue); `zrepq-local` passes only its printer."""
    s = settings or load(env)
    config = s.engine_config()
    transport = transport or transport_for(s)
    if peer is None:
        peer = CommandPeer(transport, s.remote_command(), timeout=config.command_timeout)
    return Context(
        transport,
        config,
        locks=locks or s.locks(transport.local_host),
        observer=observer,
        peer=peer,
        operation_id=operation_id,
    )


__all__ = ["CommandPeer", "ZfsHost", "context_from_env", "transport_for"]
