"""The engine's `Transport` over one `ZfsBackend`: zrepq's engine on real OpenZFS in a guest.

The contract tests' backend (tests/harness/zfs_backend.py) gives one host with two pools. This
transport lets the engine treat them as two storage hosts: every host name it is given maps to
that same backend, and the pair's datasets live on different pools (`b.base` and `b.base2`),
so "hosta:za1/ct/fs" and "hostb:zb1/ct/fs" are the two sides of a pair. Control commands run
through `backend.zfs`; a stream is one shell pipeline there, `zfs send ... | zfs recv ...`,
each side's exit status and stderr kept apart, so a failure is reported as the real pipeline
reports it (`PipelineError` naming the stage, with that stage's stderr).

What it does not do: ssh (there is none between the "hosts"), progress while bytes flow (one
event at the end), cancelling a running stream (checked before it starts).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from tests.harness.zfs_backend import ZfsBackend, ZfsResult
from workers.engine.errors import Cancelled, CommandError, HostUnreachable, PipelineError
from workers.engine.events import StreamProgress
from workers.engine.ports import CommandResult, StreamResult, StreamSpec
from workers.exec.progress import SendProgress
from workers.exec.runner import command_error, first_line, run_in_turn

_SEP = "\x1e"  # between the send's and the receive's stderr in the stream script's output


class BackendRunner:
    """`ports.Runner` for one host name, on the backend."""

    def __init__(self, backend: ZfsBackend, host: str) -> None:
        self.backend = backend
        self._host = host

    @property
    def host(self) -> str:
        return self._host

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        argv = tuple(argv)
        if argv[:1] == ("zfs",):
            res: ZfsResult = self.backend.zfs(*argv[1:])
        elif argv[:1] == ("zpool",):
            res = self.backend.zpool(*argv[1:])
        else:
            res = self.backend.sh(shlex.join(argv))
        result = CommandResult(self._host, argv, res.returncode, res.stdout, res.stderr)
        if check and result.returncode != 0:
            raise command_error(result)
        return result

    def run_many(
        self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
    ) -> list[CommandResult | CommandError]:
        return run_in_turn(self, argvs, timeout)

    def close(self) -> None:
        pass


class BackendTransport:
    """`ports.Transport`: every host in `hosts` is the backend's one machine."""

    def __init__(self, backend: ZfsBackend, local_host: str, hosts: Iterable[str]) -> None:
        self.backend = backend
        self._local = local_host
        self.hosts = {local_host, *hosts}

    @property
    def local_host(self) -> str:
        return self._local

    def is_local(self, host: str) -> bool:
        return host == self._local

    def runner(self, host: str) -> BackendRunner:
        if host not in self.hosts:
            raise HostUnreachable(f"{host}: no such host in this test", host=host)
        return BackendRunner(self.backend, host)

    def stream(
        self,
        spec: StreamSpec,
        *,
        on_progress: Callable[[StreamProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> StreamResult:
        if cancel is not None and cancel.is_set():
            raise Cancelled("stream cancelled before it started")
        send = shlex.join(spec.send_argv)
        if spec.outfilter:
            send += f" | {spec.outfilter}"
        recv = shlex.join(spec.recv_argv)
        if spec.infilter:
            recv = f"{spec.infilter} | {recv}"
        script = (
            "d=$(mktemp -d)\n"
            f'{{ {send} 2>"$d/se"; echo $? >"$d/sr"; }} | '
            f'{{ {recv} >/dev/null 2>"$d/re"; echo $? >"$d/rr"; }}\n'
            'printf "%s %s\\n" "$(cat "$d/sr")" "$(cat "$d/rr")"\n'
            f'cat "$d/se"; printf "{_SEP}"; cat "$d/re"; rm -rf "$d"\n'
        )
        t0 = time.monotonic()
        res = self.backend.sh(script)
        elapsed = time.monotonic() - t0
        head, _, rest = res.stdout.partition("\n")
        send_err, _, recv_err = rest.partition(_SEP)
        codes = head.split()
        if res.returncode != 0 or len(codes) != 2:
            raise PipelineError(
                f"stream script failed: {res.stderr.strip() or res.stdout.strip()}",
                argv=spec.send_argv,
                returncode=res.returncode,
                stderr=res.stderr,
                host=spec.send_host,
            )
        send_rc, recv_rc = int(codes[0]), int(codes[1])
        if recv_rc != 0 or send_rc != 0:
            # As workers/exec/blame.py: the send's failure is the real one when it failed on
            # its own (a refused send leaves the receive a short stream); a send that only
            # lost its reader (SIGPIPE, "Broken pipe") is blamed only when nothing else is.
            send_err = _without_progress(send_err)  # as StderrCapture keeps it
            send_victim = send_rc == 128 + 13 or "Broken pipe" in send_err
            argv, rc, err, host = (
                (spec.send_argv, send_rc, send_err, spec.send_host)
                if send_rc != 0 and (recv_rc == 0 or not send_victim)
                else (spec.recv_argv, recv_rc, recv_err, spec.recv_host)
            )
            raise PipelineError(
                f"{shlex.join(argv[:2])} on {host} failed (exit {rc}): "
                f"{first_line(err) or '(no error output)'}",
                argv=argv,
                returncode=rc,
                stderr=err,
                host=host,
            )
        nbytes = _size(send_err)
        if on_progress is not None:
            on_progress(StreamProgress(nbytes, nbytes or None, 0.0, elapsed))
        return StreamResult(nbytes, elapsed, {"send": send_err, "recv": recv_err})

    def close(self) -> None:
        pass


def _size(send_stderr: str) -> int:
    """The `size` line `zfs send -P` prints (its estimate), 0 when there is none."""
    for line in send_stderr.splitlines():
        parts = line.split("\t")
        if parts[0] == "size" and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
    return 0


def _without_progress(stderr: str) -> str:
    """`zfs send -P`'s estimate and progress lines dropped: the rest says what failed."""
    progress = SendProgress()
    return "\n".join(line for line in stderr.splitlines() if not progress.feed(line))
