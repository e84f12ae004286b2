"""Two (or more) storage hosts on this machine: each a stand-in zfs state behind a real sshd.

The engine under test runs in this process *as* one of the hosts: its own zfs commands run
locally (with that host's stand-in state), every other host is reached by name through the
real sshd (paramiko for control, OpenSSH for the stream), exactly as on a real fleet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest

from tests.harness.sshd import SshdCluster, SshdHost
from tests.harness.standin import StandinHost, wipe_root
from workers.engine import Context, EngineConfig, roles
from workers.engine.events import Event, Message
from workers.engine.requests import FailoverRequest, TakeoverRequest
from workers.exec.ssh_options import SshOptions
from workers.exec.transport import SshTransport


@dataclass
class Site:
    name: str
    pool: str
    sshd: SshdHost
    zfs: StandinHost

    def fs(self, leaf: str) -> str:
        return f"{self.pool}/{leaf}"


@dataclass
class InProcessPeer:
    """The other side of failover/takeover: that host's engine, run in this process; its
    messages come back labelled with its host, as `CommandPeer` returns a remote's lines."""

    fleet: Fleet

    def takeover_local(
        self, host: str, fs: str, *, tag: str, snap: str | None = None
    ) -> list[Message]:
        ctx, said = self._context(host, tag)
        roles.takeover(ctx, TakeoverRequest(fs=f"{fs}@{snap}" if snap else fs, local_only=True))
        return said

    def failover(self, host: str, fs: str, *, tag: str) -> list[Message]:
        ctx, said = self._context(host, tag)
        roles.failover(ctx, FailoverRequest(fs=fs))
        return said

    def _context(self, host: str, tag: str) -> tuple[Context, list[Message]]:
        said: list[Message] = []

        def observe(event: Event) -> None:
            self.fleet.events.append(event)
            if isinstance(event, Message):
                said.append(replace(event, host=event.host or host))

        return self.fleet.context(host, observer=observe).with_tag(tag), said


@dataclass
class Fleet:
    cluster: SshdCluster
    sites: dict[str, Site] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    transports: list[SshTransport] = field(default_factory=list)

    def __getitem__(self, name: str) -> Site:
        return self.sites[name]

    def context(
        self,
        name: str,
        env: dict[str, str] | None = None,
        *,
        ssh: SshOptions | None = None,
        **kw: object,
    ) -> Context:
        """The engine's context on host `name` (its zfs local, the others through sshd);
        `kw`: other parts (`locks`, `observer`), else in-process locks and `self.events`."""
        site = self.sites[name]
        transport = SshTransport(
            name, ssh or site.sshd.ssh_options(), local_env=site.zfs.env, stream_timeout=120
        )
        self.transports.append(transport)
        # zrep's global lock in the session's own directory (tests/conftest.py), not /var/run.
        rundir = {"ZREP_RUNDIR": os.environ["ZREP_RUNDIR"]} if "ZREP_RUNDIR" in os.environ else {}
        config = EngineConfig.from_env({**rundir, **(env or {})})
        parts: dict[str, object] = {"observer": self.events.append, "peer": InProcessPeer(self)}
        return Context(transport, config, **{**parts, **kw})  # type: ignore[arg-type]

    def close(self) -> None:
        for t in self.transports:
            t.close()


@pytest.fixture
def fleet(sshd_cluster: SshdCluster) -> Iterator[Callable[..., Fleet]]:
    """`fleet("hosta", "hostb")`: fresh hosts (state wiped), pool `pool<suffix>` on each."""
    made: list[Fleet] = []

    def make(*names: str) -> Fleet:
        f = Fleet(sshd_cluster)
        for name in names:
            sshd = sshd_cluster.host(name)
            wipe_root(sshd.root)
            z = StandinHost(sshd.root, name)
            pool = "pool" + name.removeprefix("host")
            z.create_pool(pool)
            f.sites[name] = Site(name, pool, sshd, z)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
