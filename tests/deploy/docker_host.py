"""The Docker engine for the deployment tier, and small wrappers around its CLI.

dockerd is started here (overlay2 storage, cgroupfs) when none answers, and stopped at the
end of the session by its pid; one that was already running is left alone. dockerd sets the
root namespace's iptables FORWARD policy to DROP; a dockerd started here gives the policy it
found back when it stops (other tests on this machine may route through the host). What cannot run
on this machine is skipped with the precise reason, and fails instead when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

DOCKERD = "/usr/sbin/dockerd"


def unavailable(reason: str) -> NoReturn:
    """Skip (a developer's machine may lack it), but fail in CI, which must run everything."""
    if os.environ.get("CI"):  # CI=true: like the other tiers, a missing piece is a failure
        pytest.fail(f"deployment tier cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_tool(name: str, package: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if exe is None:
        unavailable(f"`{name}` not found (Debian: apt-get install {package}; scripts/setup.sh)")
    return exe


class CommandFailed(AssertionError):
    pass


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 600,
    check: bool = True,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; with `check`, a non-zero exit raises with the command's whole output."""
    res = subprocess.run(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if log is not None:
        with open(log, "a") as fh:
            fh.write(
                f"$ {' '.join(argv)[:2000]}\n[exit {res.returncode}]\n{res.stdout}{res.stderr}\n"
            )
    if check and res.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)[:2000]}\nexit {res.returncode}\n--- stdout\n{res.stdout[-6000:]}"
            f"\n--- stderr\n{res.stderr[-6000:]}"
        )
    return res


@dataclass
class Docker:
    exe: str
    log: Path | None = None

    def __call__(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 600,
        env: Mapping[str, str] | None = None,
        quiet: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS`; logged unless `quiet` (the many polls of `inspect`)."""
        log = None if quiet else self.log
        return run([self.exe, *args], check=check, input=input, timeout=timeout, env=env, log=log)

    def inspect(self, kind: str, ref: str) -> dict[str, Any] | None:
        res = self(kind, "inspect", ref, check=False, quiet=True)
        if res.returncode != 0:
            return None
        data = json.loads(res.stdout)
        return data[0] if data else None

    def image(self, ref: str) -> dict[str, Any] | None:
        return self.inspect("image", ref)

    def rmi(self, *refs: str) -> None:
        present = [r for r in refs if self.image(r) is not None]
        if present:
            self("rmi", "-f", *present, check=False)

    def dangling(self) -> set[str]:
        """Untagged images (a multi-stage build leaves its build stage so)."""
        res = self("images", "-q", "--no-trunc", "--filter", "dangling=true", quiet=True)
        return set(res.stdout.split())

    def labelled(self, kind: str, label: str) -> list[str]:
        """Names of containers/networks/volumes carrying `label` (e.g. a compose project)."""
        args = {"container": ["ps", "-a"], "network": ["network", "ls"], "volume": ["volume", "ls"]}
        res = self(*args[kind], "-q", "--filter", f"label={label}", quiet=True)
        return res.stdout.split()


@dataclass
class Container:
    """A running container, driven through `docker exec`."""

    docker: Docker
    name: str

    def sh(
        self,
        script: str,
        *,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        args = ["exec", *(["-i"] if input is not None else [])]
        if workdir:
            args += ["-w", workdir]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        return self.docker(
            *args, self.name, "sh", "-ec", script, check=check, input=input, timeout=timeout
        )

    def read(self, path: str) -> str:
        return self.sh(f"cat {path}").stdout

    def write(self, path: str, text: str) -> None:
        self.sh(f"cat > {path}", input=text)

    def unit(self, name: str, *props: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.sh(f"systemctl show {name} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self, unit: str) -> int:
        return int(self.unit(unit, "MainPID")["MainPID"])


class Dockerd:
    """A dockerd answering on the default socket: the running one, or one started here."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.forward_policy: str | None = None
        self.exe = need_tool("docker", "docker.io")
        self.docker = Docker(self.exe, log=log.with_name("docker-commands.log"))

    def answers(self) -> bool:
        try:
            return (
                self.docker("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout: float = 90) -> Docker:
        if self.answers():
            return self.docker
        if not Path(DOCKERD).exists():
            unavailable(f"{DOCKERD} not found (Debian: apt-get install docker.io)")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.forward_policy = _forward_policy()
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [
                    DOCKERD,
                    "--storage-driver",
                    "overlay2",
                    "--exec-opt",
                    "native.cgroupdriver=cgroupfs",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                unavailable(f"dockerd exited with status {self.proc.returncode}:\n{tail}")
            if self.answers():
                return self.docker
            time.sleep(0.5)
        self.stop()
        unavailable(f"dockerd did not answer within {timeout:g} s (log: {self.log})")

    def stop(self) -> None:
        """Stop the dockerd started here (its containerd goes with it)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.forward_policy and _forward_policy() != self.forward_policy:
            run(["iptables", "-P", "FORWARD", self.forward_policy], check=False)


def _forward_policy() -> str | None:
    """The iptables FORWARD chain's policy (ACCEPT, DROP), None without iptables."""
    if shutil.which("iptables") is None:
        return None
    res = run(["iptables", "-S", "FORWARD"], check=False)
    first = res.stdout.splitlines()[:1]
    return first[0].split()[-1] if first and first[0].startswith("-P FORWARD") else None
