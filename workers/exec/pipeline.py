"""`zfs send | [outfilter] | [ssh] [infilter |] zfs recv` as an OS pipeline.

The stream's bytes go from process to process through kernel pipes and OpenSSH; Python only
reads the stages' stderr (for progress and errors) and their exit statuses. All stages share
one new process group, so cancel, timeout and errors stop them with one `killpg`, and each
carries PR_SET_PDEATHSIG so a killed worker leaves nothing behind (see `procs`).

Where each program runs is `stages.py`; reading their stderr `stderr.py` and `progress.py`;
which stage to blame when some fail, `blame.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workers.engine.errors import Cancelled, PipelineError
from workers.engine.events import StreamProgress
from workers.engine.ports import StreamResult, StreamSpec
from workers.exec.blame import blame
from workers.exec.procs import child_argv, stop_group
from workers.exec.progress import RateMeter, SendProgress
from workers.exec.ssh_options import SshOptions
from workers.exec.stages import Stage, plan_stages, shell_line
from workers.exec.stderr import StderrCapture

log = logging.getLogger(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when stopping a pipeline
PROGRESS_INTERVAL = 0.9  # < 1 s, with the 0.1 s poll below: a callback at least every second
_POLL = 0.1
_PIPE_SIZE = 1 << 20  # bigger pipes absorb zfs send's bursts (F_SETPIPE_SZ, best effort)

ProgressCallback = Callable[[StreamProgress], None]


def run_stream(
    spec: StreamSpec,
    *,
    is_local: Callable[[str], bool],
    ssh: SshOptions,
    env: Mapping[str, str] | None = None,
    total: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> StreamResult:
    """Run `spec` to completion (see `ports.Transport.stream`); `timeout` bounds the whole run."""
    stages = plan_stages(spec, is_local=is_local, ssh=ssh)
    full_env = {**os.environ, **env} if env else None
    run = _Run(stages, full_env, SendProgress(total), on_progress, cancel, timeout)
    return run.execute()


@dataclass
class _Run:
    """One run of a pipeline: its processes, their stderr, the progress so far."""

    stages: list[Stage]
    env: dict[str, str] | None
    progress: SendProgress
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    timeout: float | None
    rate: RateMeter = field(default_factory=RateMeter)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    captures: list[StderrCapture] = field(default_factory=list)
    pgid: int = 0  # the stages' process group: the first stage's pid
    start: float = 0.0
    last_emit: float = 0.0
    last_bytes: int = -1
    send_wchar: int | None = None  # a local `zfs send`'s write count when it exited (`_bytes`)
    send_index: int = field(init=False)  # the stage that runs `zfs send`

    def __post_init__(self) -> None:
        self.send_index = next(i for i, s in enumerate(self.stages) if s.steps[0].role == "send")

    def execute(self) -> StreamResult:
        log.info("stream: %s", shell_line(self.stages))
        self.start = self.last_emit = time.monotonic()
        selector = selectors.DefaultSelector()
        try:
            self._spawn(selector)
            self._pump(selector)
        finally:
            for key in list(selector.get_map().values()):
                os.close(key.fd)
            selector.close()
            if self.procs:
                stop_group(self.pgid, self.procs, KILL_GRACE)
            for capture in self.captures:
                capture.close()
        elapsed = time.monotonic() - self.start
        failure = blame(self.stages, [p.returncode for p in self.procs], self.captures)
        if failure is not None:
            raise failure
        nbytes = self._bytes()
        self._emit(time.monotonic(), force=True)
        stderr: dict[str, str] = {}
        for stage, capture in zip(self.stages, self.captures, strict=True):
            for step in stage.steps:
                stderr[step.role] = capture.text()
        log.info("stream done: %d bytes in %.1fs", nbytes, elapsed)
        return StreamResult(bytes_sent=nbytes, elapsed=elapsed, stderr=stderr)

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, selector: selectors.BaseSelector) -> None:
        upstream: int | None = None  # read end of the previous stage's stdout
        try:
            for i, stage in enumerate(self.stages):
                last = i == len(self.stages) - 1
                # The last stage's stdout (zfs recv -v prints there) joins its stderr.
                err_r, err_w = os.pipe()
                out_r, out_w = (None, err_w) if last else os.pipe()
                if out_r is not None:
                    _grow_pipe(out_w)
                try:
                    spawn, preexec = child_argv(stage.argv, self.env)  # see workers.exec.procs
                    proc = subprocess.Popen(
                        spawn,
                        stdin=upstream if upstream is not None else subprocess.DEVNULL,
                        stdout=out_w,
                        stderr=err_w,
                        env=self.env,
                        process_group=self.pgid,
                        preexec_fn=preexec,
                    )
                except BaseException as exc:
                    for fd in (err_r, out_r):
                        if fd is not None:
                            os.close(fd)
                    if isinstance(exc, OSError):
                        raise self._spawn_error(stage, exc) from None
                    raise
                finally:
                    os.close(err_w)
                    if out_w != err_w:
                        os.close(out_w)
                    if upstream is not None:
                        os.close(upstream)
                        upstream = None
                upstream = out_r
                if not self.pgid:
                    self.pgid = proc.pid
                self.procs.append(proc)
                progress = self.progress if i == self.send_index else None
                self.captures.append(StderrCapture(progress))
                selector.register(err_r, selectors.EVENT_READ, len(self.captures) - 1)
        finally:
            if upstream is not None:
                os.close(upstream)

    def _spawn_error(self, stage: Stage, exc: OSError) -> PipelineError:
        step = stage.steps[0]
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        return PipelineError(
            f"{step.label} could not start: {stage.argv[0]}: {exc.strerror}",
            argv=stage.argv,
            returncode=code,
            stderr=f"{stage.argv[0]}: {exc.strerror}",
            host=step.host,
        )

    def _pump(self, selector: selectors.BaseSelector) -> None:
        """Read stderr, watch cancel/timeout, report progress, until every stage has exited."""
        deadline = None if self.timeout is None else self.start + self.timeout
        all_exited_at: float | None = None
        while True:
            now = time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                stop_group(self.pgid, self.procs, KILL_GRACE)
                raise Cancelled(
                    f"stream {self._summary()} cancelled after {now - self.start:.1f}s",
                    host=self.stages[0].host,
                )
            if deadline is not None and now >= deadline:
                stop_group(self.pgid, self.procs, KILL_GRACE)
                raise PipelineError(
                    f"stream {self._summary()} timed out after {self.timeout:g}s",
                    argv=self.stages[0].argv,
                    host=self.stages[0].host,
                    retryable=True,
                )
            self._emit(now)
            if selector.get_map():
                for key, _ in selector.select(_POLL):
                    fd = key.fd
                    data = os.read(fd, 65536)
                    if data:
                        self.captures[key.data].feed(data)
                    else:
                        selector.unregister(fd)
                        os.close(fd)
            else:
                time.sleep(_POLL)
            self._reap()
            if all(p.returncode is not None for p in self.procs):
                if not selector.get_map():
                    return
                # A stage exited but something it started still holds its stderr open (an ssh
                # ControlMaster, say): do not wait for that forever.
                all_exited_at = all_exited_at or time.monotonic()
                if time.monotonic() - all_exited_at > 1.0:
                    for key in list(selector.get_map().values()):
                        selector.unregister(key.fd)
                        os.close(key.fd)
                    return

    def _reap(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.returncode is not None:
                continue
            if i == self.send_index and not self.stages[i].remote:
                # Read the send's byte count while it is a zombie, before reaping it; if it is
                # still running, do not poll() either: it could exit in between, unread.
                info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    continue
                self.send_wchar = self._local_send_wchar()
            proc.poll()

    def _local_send_wchar(self) -> int | None:
        """All a local `zfs send` has written so far (stream and stderr), from /proc."""
        try:
            with open(f"/proc/{self.procs[self.send_index].pid}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    # -- progress ---------------------------------------------------------------------------

    def _bytes(self) -> int:
        """Bytes sent so far: the -P count, or for a local send what /proc says it wrote.

        /proc's count is exact and current for `zfs send` (it writes only the stream and its
        stderr); -P lags by up to a second and never reports a sub-second send at all. The
        larger of the two wins, so a program that writes other files too can only over-count
        by what it wrote there.
        """
        counted = self.progress.bytes
        if not self.stages[self.send_index].remote:
            wchar = self.send_wchar if self.send_wchar is not None else self._local_send_wchar()
            if wchar is not None:
                # Less its stderr, as far as read: at the end, all of it.
                counted = max(counted, wchar - self.captures[self.send_index].nbytes)
        return counted

    def _emit(self, now: float, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        if not force and now - self.last_emit < PROGRESS_INTERVAL:
            return
        self.last_emit = now
        nbytes = max(self._bytes(), self.last_bytes)  # never report going backwards
        self.last_bytes = nbytes
        rate = self.rate.update(now, nbytes)
        event = StreamProgress(
            bytes_sent=nbytes,
            total=self.progress.estimated_total(),
            rate=rate,
            elapsed=now - self.start,
        )
        try:
            self.on_progress(event)
        except Exception:
            # A broken progress display must never break a replication.
            log.exception("progress callback failed")

    # -- outcome ----------------------------------------------------------------------------

    def _summary(self) -> str:
        send = self.stages[0].steps[0]
        recv = self.stages[-1].steps[-1]
        return f"{send.host} -> {recv.host}"


def _grow_pipe(fd: int) -> None:
    # Above /proc/sys/fs/pipe-max-size an unprivileged user gets EPERM: keep the default then.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
