"""`ports.Transport` over SSH: paramiko for control commands, OpenSSH for the stream."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence

from workers.engine.events import StreamProgress
from workers.engine.ports import Runner, StreamResult, StreamSpec
from workers.exec.local import LocalRunner
from workers.exec.mux import Multiplexer
from workers.exec.pipeline import run_stream
from workers.exec.remote import ParamikoRunner
from workers.exec.ssh_options import SshOptions


def local_host_name(environ: Mapping[str, str] | None = None) -> str:
    """This host's zrep name: $ZREP_SRC_HOST if set, else `uname -n` up to the first dot."""
    env = os.environ if environ is None else environ
    name = env.get("ZREP_SRC_HOST")
    return name if name else os.uname().nodename.split(".", 1)[0]


class SshTransport:
    """Reaches hosts by name; the local host (and its aliases) without any SSH at all.

    zrep treats a destination naming this host as local ("remote host is us"); so does this.
    Runners are cached per host, so each remote host gets one SSH connection for all control
    commands; `close()` drops them all. Streams to a remote host go over one OpenSSH master
    connection per host (`mux.py`: no key exchange per stream) unless `multiplex` is off.
    """

    def __init__(
        self,
        local_host: str,
        ssh: SshOptions | None = None,
        local_env: Mapping[str, str] | None = None,
        local_aliases: Sequence[str] = ("localhost",),
        stream_timeout: float | None = None,
        multiplex: bool = True,
    ) -> None:
        self._local_host = local_host
        self._ssh = ssh or SshOptions()
        self._local_env = dict(local_env) if local_env else None
        self._aliases = frozenset((local_host, *local_aliases))
        self._stream_timeout = stream_timeout
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        self._mux = Multiplexer(self._ssh) if multiplex else None

    @property
    def local_host(self) -> str:
        return self._local_host

    @property
    def ssh_options(self) -> SshOptions:
        return self._ssh

    def is_local(self, host: str) -> bool:
        return host in self._aliases

    def runner(self, host: str) -> Runner:
        with self._lock:
            runner = self._runners.get(host)
            if runner is None:
                if self.is_local(host):
                    runner = LocalRunner(host, self._local_env)
                else:
                    runner = ParamikoRunner(host, self._ssh)
                self._runners[host] = runner
            return runner

    def stream(
        self,
        spec: StreamSpec,
        *,
        on_progress: Callable[[StreamProgress], None] | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> StreamResult:
        """See `ports.Transport.stream`; `timeout` (or the constructor's) bounds the whole run."""
        return run_stream(
            spec,
            is_local=self.is_local,
            ssh=self._stream_ssh(spec),
            env=self._local_env,
            on_progress=on_progress,
            cancel=cancel,
            timeout=timeout if timeout is not None else self._stream_timeout,
        )

    def _stream_ssh(self, spec: StreamSpec) -> SshOptions:
        """The ssh options of the stream: over the master connection to its one remote host."""
        remote = {h for h in (spec.send_host, spec.recv_host) if not self.is_local(h)}
        if self._mux is None or len(remote) != 1:
            return self._ssh
        return self._mux.options(remote.pop())

    def close(self) -> None:
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            runner.close()
        if self._mux is not None:
            self._mux.close()
