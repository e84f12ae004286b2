"""`zfs send | [outfilter] | [ssh] [infilter |] zfs recv` as an OS pipeline.

The stream's bytes go from process to process through kernel pipes and OpenSSH; Python only
reads the stages' stderr (for progress and errors) and their exit statuses. All stages share
one new process group, so cancel, timeout and errors stop them with one `killpg`, and each
carries PR_SET_PDEATHSIG so a killed worker leaves nothing behind (see `procs`).

Layout of a pipeline (a "step" is one program; a "stage" is one local process):

    push  hosta->hostb: zfs send | outfilter | ssh hostb 'infilter | zfs recv'
    pull  hostb->hosta: ssh hostb 'zfs send | outfilter' | infilter | zfs recv
    local:              zfs send | outfilter | infilter | zfs recv

Blame, when several stages fail: an SSH connection failure first; else the most upstream
stage that failed on its own; a stage killed by SIGPIPE (or an ssh that lost its reader) only
failed because something downstream stopped reading, so it is blamed only if nothing else is.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import math
import os
import re
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from workers.engine.errors import (
    Cancelled,
    HostKeyError,
    HostUnreachable,
    PipelineError,
    ZrepqError,
)
from workers.engine.ports import StreamProgress, StreamResult, StreamSpec
from workers.exec.procs import child_argv, describe_status, stop_group
from workers.exec.quoting import filter_argv, is_status_line, remote_pipeline, stage_statuses
from workers.exec.ssh_options import SshOptions

log = logging.getLogger(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when stopping a pipeline
PROGRESS_INTERVAL = 0.9  # < 1 s, with the 0.1 s poll below: a callback at least every second
_POLL = 0.1
_RATE_TAU = 3.0  # seconds; time constant of the smoothed rate
_PIPE_SIZE = 1 << 20  # bigger pipes absorb zfs send's bursts (F_SETPIPE_SZ, best effort)
_KEEP_LINES = 100  # stderr lines kept per stage, at the head and at the tail each

ProgressCallback = Callable[[StreamProgress], None]


@dataclass(frozen=True)
class Step:
    """One program of the pipeline, where it runs."""

    role: str  # send | outfilter | infilter | recv
    host: str
    argv: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.role} on {self.host}"


@dataclass(frozen=True)
class Stage:
    """One local process: a local step, or `ssh host` running one or more remote steps."""

    steps: tuple[Step, ...]
    argv: tuple[str, ...]
    remote: bool

    @property
    def host(self) -> str:
        return self.steps[0].host

    @property
    def label(self) -> str:
        if not self.remote:
            return self.steps[0].label
        return f"ssh {self.host} ({' | '.join(s.role for s in self.steps)})"


def plan_stages(
    spec: StreamSpec, *, is_local: Callable[[str], bool], ssh: SshOptions
) -> list[Stage]:
    """The local processes that run `spec`; consecutive steps on one remote host share an ssh."""
    steps = [Step("send", spec.send_host, tuple(spec.send_argv))]
    if spec.outfilter:
        steps.append(Step("outfilter", spec.send_host, filter_argv(spec.outfilter)))
    if spec.infilter:
        steps.append(Step("infilter", spec.recv_host, filter_argv(spec.infilter)))
    steps.append(Step("recv", spec.recv_host, tuple(spec.recv_argv)))

    stages: list[Stage] = []
    group: list[Step] = []

    def flush() -> None:
        if group:
            command = remote_pipeline([s.argv for s in group])
            argv = (*ssh.openssh_argv(group[0].host), command)
            stages.append(Stage(tuple(group), argv, remote=True))
            group.clear()

    for step in steps:
        if is_local(step.host):
            flush()
            stages.append(Stage((step,), step.argv, remote=False))
        else:
            if group and group[0].host != step.host:
                flush()
            group.append(step)
    flush()
    return stages


def shell_line(stages: Sequence[Stage]) -> str:
    """The pipeline as a line one could paste into sh, for logs."""
    return " | ".join(shlex.join(s.argv) for s in stages)


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
    return _Run(stages, full_env, total, on_progress, cancel, timeout).execute()


# -- progress -----------------------------------------------------------------------------------

# `zfs send -v -P` (OpenZFS): per-second "HH:MM:SS\t<bytes>[\t<blocks>]\t<snapshot>", after an
# estimate of "full\t<snap>\t<size>" / "incremental\t<from>\t<snap>\t<size>" lines and "size\t<n>".
_TICK_LINE = re.compile(r"^\d\d:\d\d:\d\d\t(\d+)(?:\t\d+)?\t(\S.*)$")
_ESTIMATE_LINE = re.compile(r"^(?:full|incremental)\t.*\t(\d+)$")
_SIZE_LINE = re.compile(r"^size\t(\d+)$")


class SendProgress:
    """Bytes sent so far, from `zfs send -v -P` stderr lines.

    OpenZFS counts bytes per snapshot, so an `-I` stream restarts at 0 with each snapshot;
    the count here carries the finished snapshots' bytes forward and never goes back.
    """

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.seen = False  # any per-second line yet
        self._estimated = 0
        self._finished = 0  # bytes of snapshots already done
        self._snapshot: str | None = None
        self._current = 0

    @property
    def bytes(self) -> int:
        return self._finished + self._current

    def feed(self, line: str) -> bool:
        """Take one stderr line; True when it was progress (not worth keeping for errors)."""
        m = _TICK_LINE.match(line)
        if m:
            self.seen = True
            nbytes, snapshot = int(m.group(1)), m.group(2)
            if snapshot != self._snapshot:
                self._finished += self._current
                self._snapshot, self._current = snapshot, 0
            self._current = max(self._current, nbytes)
            return True
        m = _SIZE_LINE.match(line)
        if m:
            if self.total is None:
                self.total = int(m.group(1))
            return True
        m = _ESTIMATE_LINE.match(line)
        if m:
            self._estimated += int(m.group(1))
            return True
        return False

    def estimated_total(self) -> int | None:
        return self.total if self.total is not None else (self._estimated or None)


class RateMeter:
    """Exponentially smoothed bytes/second, robust to irregular sample times."""

    def __init__(self, tau: float = _RATE_TAU) -> None:
        self._tau = tau
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, now: float, nbytes: int) -> float:
        if self._last is None:
            self._last = (now, nbytes)
            return self.rate
        then, before = self._last
        dt = now - then
        if dt <= 0:
            return self.rate
        instant = (nbytes - before) / dt
        weight = 1.0 - math.exp(-dt / self._tau)
        self.rate = instant if self.rate == 0.0 else self.rate + weight * (instant - self.rate)
        self._last = (now, nbytes)
        return self.rate


# -- one run ------------------------------------------------------------------------------------


class _Capture:
    """A stage's stderr: split in lines, progress lines parsed and dropped, the rest kept."""

    def __init__(self, progress: SendProgress | None) -> None:
        self.progress = progress
        self.nbytes = 0
        self._partial = b""
        self._head: list[str] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_KEEP_LINES)
        self._dropped = 0
        self.status_lines: list[str] = []

    def feed(self, data: bytes) -> None:
        self.nbytes += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""

    def _line(self, line: str) -> None:
        if self.progress is not None and self.progress.feed(line):
            return
        if is_status_line(line):
            self.status_lines.append(line)
            return
        if not line.strip():
            return
        if len(self._head) < _KEEP_LINES:
            self._head.append(line)
            return
        if len(self._tail) == self._tail.maxlen:
            self._dropped += 1
        self._tail.append(line)

    def text(self) -> str:
        lines = list(self._head)
        if self._dropped:
            lines.append(f"[... {self._dropped} lines omitted ...]")
        lines.extend(self._tail)
        return "\n".join(lines)


@dataclass
class _Failure:
    step: Step
    stage: Stage
    status: int | None
    victim: bool  # failed only because a later stage stopped reading
    note: str = ""


class _Run:
    def __init__(
        self,
        stages: list[Stage],
        env: dict[str, str] | None,
        total: int | None,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        timeout: float | None,
    ) -> None:
        self.stages = stages
        self.env = env
        self.on_progress = on_progress
        self.cancel = cancel
        self.timeout = timeout
        self.progress = SendProgress(total)
        self.rate = RateMeter()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.captures: list[_Capture] = []
        self.pgid = 0
        self.start = 0.0
        self.last_emit = 0.0
        self.last_bytes = -1
        self.send_index = next(i for i, s in enumerate(stages) if s.steps[0].role == "send")
        # A local `zfs send`'s write count when it exited (see `_bytes`).
        self.send_wchar: int | None = None

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
        failure = self._blame()
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
                self.captures.append(_Capture(progress))
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

    def _blame(self) -> ZrepqError | None:
        connection = self._connection_error()
        if connection is not None:
            return connection
        failures = self._failures()
        if not failures:
            return None
        real = [f for f in failures if not f.victim]
        chosen = real[0] if real else failures[-1]
        index = self.stages.index(chosen.stage)
        stderr = self.captures[index].text()
        reason = gist(stderr) or "(no error output)"
        if chosen.victim and not real:
            reason = f"the next stage stopped reading before the end of the stream; {reason}"
        note = f" ({chosen.note})" if chosen.note else ""
        return PipelineError(
            f"{chosen.step.label} failed ({describe_status(chosen.status)}){note}: {reason}",
            argv=chosen.step.argv,
            returncode=chosen.status,
            stderr=stderr,
            host=chosen.step.host,
        )

    def _failures(self) -> list[_Failure]:
        """Every step that did not succeed, upstream first."""
        found: list[_Failure] = []
        for stage, proc, capture in zip(self.stages, self.procs, self.captures, strict=True):
            rc = proc.returncode
            if not stage.remote:
                if rc != 0:
                    broken = rc == -signal.SIGPIPE or "Broken pipe" in capture.text()
                    found.append(_Failure(stage.steps[0], stage, rc, victim=broken))
                continue
            reported = stage_statuses(capture.status_lines)
            for j, step in enumerate(stage.steps[:-1]):
                status = reported.get(j)
                if status:
                    found.append(_Failure(step, stage, status, victim=status == 128 + 13))
            last = stage.steps[-1]
            if rc == 255:
                # Not a connection failure (checked first): the remote command was killed, or
                # ssh lost its reader; the latter is a victim of whatever failed downstream.
                found.append(
                    _Failure(
                        last,
                        stage,
                        rc,
                        victim=True,
                        note="ssh lost the connection or the remote program was killed",
                    )
                )
            elif rc != 0:
                found.append(_Failure(last, stage, rc, victim=rc == 128 + 13))
        # An ssh 255 is a victim only if something after it failed; else it is the cause.
        for k, f in enumerate(found):
            if f.status == 255 and f.stage.remote and not any(not g.victim for g in found[k + 1 :]):
                f.victim = False
        return found

    def _connection_error(self) -> HostUnreachable | None:
        for stage, proc, capture in zip(self.stages, self.procs, self.captures, strict=True):
            if stage.remote and proc.returncode == 255:
                error = ssh_connection_error(stage.host, capture.text())
                if error is not None:
                    return error
        return None


# -- helpers ------------------------------------------------------------------------------------

_HOST_KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key for", "has changed")
_HOST_KEY_FAILED = ("Host key verification failed",)
_UNREACHABLE = (
    "Connection refused",
    "Connection timed out",
    "Could not resolve hostname",
    "No route to host",
    "Network is unreachable",
    "Connection closed by",
    "Connection reset by",
    "kex_exchange_identification",
    "Operation timed out",
)
_AUTH_FAILED = ("Permission denied (",)


def ssh_connection_error(host: str, stderr: str) -> HostUnreachable | None:
    """The error an OpenSSH exit 255 stands for, judged from its stderr; None if not one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = "; ".join(_relevant(lines))

    def has(markers: Iterable[str]) -> bool:
        return any(m in line for m in markers for line in lines)

    if has(_HOST_KEY_FAILED) or has(_HOST_KEY_CHANGED):
        if has(_HOST_KEY_CHANGED):
            what = "has CHANGED (or is not the one known_hosts lists)"
        else:
            what = "is not in known_hosts"
        return HostKeyError(f"host key for {host} {what}: ssh said: {said}", host=host)
    if has(_AUTH_FAILED):
        return HostUnreachable(
            f"authentication to {host} failed: ssh said: {said}", host=host, retryable=False
        )
    if has(_UNREACHABLE):
        return HostUnreachable(f"cannot connect to {host}: ssh said: {said}", host=host)
    return None


def _relevant(lines: list[str]) -> list[str]:
    # ssh's host-key warning is a banner of '@' lines; keep the sentences.
    kept = [line for line in lines if not line.startswith("@") and not is_status_line(line)]
    return kept[:4]


def _grow_pipe(fd: int) -> None:
    # Above /proc/sys/fs/pipe-max-size an unprivileged user gets EPERM: keep the default then.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


# ssh's own chatter, never the reason a stage failed.
_NOISE = ("Warning: Permanently added", "** ", "Pseudo-terminal will not be allocated")


def gist(stderr: str) -> str:
    """The first line of `stderr` that says something about a failure."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith(_NOISE) and not line.startswith("@"):
            return line
    return ""
