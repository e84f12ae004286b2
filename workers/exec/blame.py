"""Which stage of a finished pipeline failed, and the error that says so.

When several stages fail: an SSH connection failure first; else the most upstream stage that
failed on its own; a stage killed by SIGPIPE (or an ssh that lost its reader) only failed
because something downstream stopped reading, so it is blamed only if nothing else is.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

from workers.engine.errors import HostUnreachable, PipelineError, ZrepqError
from workers.exec.procs import describe_status
from workers.exec.quoting import stage_statuses
from workers.exec.stages import Stage, Step
from workers.exec.stderr import StderrCapture, gist, ssh_connection_error

_SIGPIPE_STATUS = 128 + 13  # a remote shell's status for a program killed by SIGPIPE


@dataclass
class _Failure:
    step: Step
    stage: Stage
    status: int | None
    victim: bool  # failed only because a later stage stopped reading
    note: str = ""


def blame(
    stages: Sequence[Stage], statuses: Sequence[int | None], captures: Sequence[StderrCapture]
) -> ZrepqError | None:
    """The error of a finished pipeline (`statuses`: each stage's exit status, as in
    `Popen.returncode`), or None when every stage succeeded."""
    connection = _connection_error(stages, statuses, captures)
    if connection is not None:
        return connection
    failures = _failures(stages, statuses, captures)
    if not failures:
        return None
    real = [f for f in failures if not f.victim]
    chosen = real[0] if real else failures[-1]
    stderr = captures[list(stages).index(chosen.stage)].text()
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


def _failures(
    stages: Sequence[Stage], statuses: Sequence[int | None], captures: Sequence[StderrCapture]
) -> list[_Failure]:
    """Every step that did not succeed, upstream first."""
    found: list[_Failure] = []
    for stage, rc, capture in zip(stages, statuses, captures, strict=True):
        if not stage.remote:
            if rc != 0:
                broken = rc == -signal.SIGPIPE or "Broken pipe" in capture.text()
                found.append(_Failure(stage.steps[0], stage, rc, victim=broken))
            continue
        reported = stage_statuses(capture.status_lines)
        for j, step in enumerate(stage.steps[:-1]):
            status = reported.get(j)
            if status:
                found.append(_Failure(step, stage, status, victim=status == _SIGPIPE_STATUS))
        last = stage.steps[-1]
        if rc == 255:
            # Not a connection failure (checked first): the remote command was killed, or
            # ssh lost its reader; the latter is a victim of whatever failed downstream.
            note = "ssh lost the connection or the remote program was killed"
            found.append(_Failure(last, stage, rc, victim=True, note=note))
        elif rc != 0:
            found.append(_Failure(last, stage, rc, victim=rc == _SIGPIPE_STATUS))
    # An ssh 255 is a victim only if something after it failed; else it is the cause.
    for k, f in enumerate(found):
        if f.status == 255 and f.stage.remote and not any(not g.victim for g in found[k + 1 :]):
            f.victim = False
    return found


def _connection_error(
    stages: Sequence[Stage], statuses: Sequence[int | None], captures: Sequence[StderrCapture]
) -> HostUnreachable | None:
    for stage, rc, capture in zip(stages, statuses, captures, strict=True):
        if stage.remote and rc == 255:
            error = ssh_connection_error(stage.host, capture.text())
            if error is not None:
                return error
    return None
