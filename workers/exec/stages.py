"""Which local processes run a stream, and where each program runs.

A "step" is one program; a "stage" is one local process: a local step, or `ssh host`
running every consecutive step on that host as one remote pipeline.

    push  hosta->hostb: zfs send | outfilter | ssh hostb 'infilter | zfs recv'
    pull  hostb->hosta: ssh hostb 'zfs send | outfilter' | infilter | zfs recv
    local:              zfs send | outfilter | infilter | zfs recv
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.engine.ports import StreamSpec
from workers.exec.quoting import filter_argv, remote_pipeline
from workers.exec.ssh_options import SshOptions


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
