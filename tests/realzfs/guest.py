"""A QEMU guest booted from a cached OpenZFS image (tests/realzfs/image.py).

    with Guest(image, "g1") as g:          # boots, waits for ssh; always killed on exit
        g.ssh("zfs version").stdout

- Every guest boots from its own qcow2 overlay in a work directory under
  `$ZREPQ_ZFSVM_GUESTS_DIR` (default /var/tmp/zrepq-guests): the base image is never written,
  so any number of guests share it and each boot starts pristine.
- TCG only (`/dev/kvm` on these machines is PVM and cannot run a stock kernel), with
  `-cpu max,-cx16` (the 6.12 kernel double-faults on cmpxchg16b under qemu 7.2 TCG otherwise).
- qemu is a child of this process with PR_SET_PDEATHSIG, so it dies with the test run even on
  SIGKILL; `stop()` kills it by pid (SIGTERM, then SIGKILL) and removes the work directory.
- `wait_ssh()` fails at once, with the console log's tail, if qemu exits (a kernel panic does,
  thanks to `panic=-1 -no-reboot`).
- ssh goes through one OpenSSH control master per guest, so a command costs a channel, not a
  handshake; `run(argv)` goes through a small command server in the guest on one ssh channel
  (`Agent`), so it costs only a fork there (a new ssh session costs ~0.1 s under TCG).
- Optional private link for guest-to-guest traffic: `link=("listen", port)` on the first guest,
  `("connect", port)` on the second (start the listener first), `link_index=N` gives eth1 the
  MAC that the image maps to 10.0.3.N (hostname `zfsvmN` in every guest's /etc/hosts).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

from tests.realzfs.image import ETH0_MAC, GUESTS_DIR, LINK_MAC, Image, build_lock, log

QEMU = os.environ.get("ZREPQ_ZFSVM_QEMU", "qemu-system-x86_64")
BOOT_TIMEOUT = float(os.environ.get("ZREPQ_ZFSVM_BOOT_TIMEOUT", "300"))

_PR_SET_PDEATHSIG = 1


class GuestError(RuntimeError):
    pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def reap_stale_workdirs() -> None:
    """Remove work directories of guests whose qemu is gone (a crashed earlier run)."""
    if not GUESTS_DIR.is_dir():
        return
    for d in GUESTS_DIR.iterdir():
        pidfile = d / "qemu.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if not pid_alive(pid) and time.time() - d.stat().st_mtime > 60:
            shutil.rmtree(d, ignore_errors=True)


# A tiny command server run in the guest over one ssh channel: a command then costs a fork in
# the guest instead of an ssh session (which is slow under TCG). One JSON line per request
# ({"argv", "input" (base64), "timeout"}) and per reply ({"rc", "out", "err"}, base64).
AGENT_SOURCE = r"""
import base64, json, subprocess, sys
for line in sys.stdin:
    req = json.loads(line)
    try:
        p = subprocess.run(req["argv"], input=base64.b64decode(req["input"]),
                           capture_output=True, timeout=req["timeout"])
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, e.stdout or b"", (e.stderr or b"") + b"agent: timed out\n"
    except OSError as e:
        rc, out, err = 127, b"", str(e).encode() + b"\n"
    sys.stdout.write(json.dumps({"rc": rc, "out": base64.b64encode(out).decode(),
                                 "err": base64.b64encode(err).decode()}) + "\n")
    sys.stdout.flush()
"""


class Agent:
    """The guest's command server (AGENT_SOURCE) behind one ssh channel; one call at a time."""

    def __init__(self, ssh_argv: list[str], log: Path):
        self.proc = subprocess.Popen(
            [*ssh_argv, "exec python3 -c " + shlex.quote(AGENT_SOURCE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
        )
        self.lock = threading.Lock()

    def run(self, argv: list[str], input: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        req = {"argv": argv, "input": base64.b64encode(input).decode(), "timeout": timeout}
        with self.lock:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()  # the agent enforces the timeout
        if not line:
            raise GuestError("guest agent exited")
        rep = json.loads(line)
        return rep["rc"], base64.b64decode(rep["out"]), base64.b64decode(rep["err"])

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Guest:
    def __init__(
        self,
        image: Image,
        name: str = "zfsvm",
        mem_mb: int = 1024,
        smp: int = 2,
        link: tuple[Literal["listen", "connect"], int] | None = None,
        link_index: int | None = None,
    ):
        self.image = image
        self.name = name
        self.mem_mb = mem_mb
        self.smp = smp
        self.link = link
        self.link_index = link_index
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.boot_seconds = 0.0
        self._t0 = 0.0
        self._agent: Agent | None = None

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, port={self.port}, {self.image.dir.name})"

    def __enter__(self) -> Guest:
        try:
            self.start()
            self.wait_ssh()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def link_ip(self) -> str | None:
        return f"10.0.3.{self.link_index}" if self.link_index else None

    @property
    def console(self) -> Path:
        assert self.workdir
        return self.workdir / "console.log"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with build_lock(shared=True):  # never boot while an image is being built
            pass
        GUESTS_DIR.mkdir(parents=True, exist_ok=True)
        reap_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=GUESTS_DIR))
        overlay = self.workdir / "root.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
             str(self.image.base), str(overlay)],
            check=True, capture_output=True,
        )  # fmt: skip
        for attempt in range(3):
            self.port = free_port()
            self._t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self._argv(overlay),
                stdin=subprocess.DEVNULL,
                stdout=(self.workdir / "qemu.log").open("ab"),
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
            time.sleep(0.5)
            if self.proc.poll() is None:
                break
            qlog = (self.workdir / "qemu.log").read_text(errors="replace")
            if "hostfwd" not in qlog and "Could not set up host forwarding" not in qlog:
                break  # not a port race: wait_ssh reports it
            log(f"{self.name}: port {self.port} taken, retrying ({attempt + 1})")

    def _argv(self, overlay: Path) -> list[str]:
        assert self.workdir
        append = (
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet panic=-1 "
            f"systemd.hostname={self.name}"
        )
        argv = [
            QEMU, "-name", self.name,
            "-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max,-cx16",
            "-smp", str(self.smp), "-m", str(self.mem_mb),
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", append,
            "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", f"virtio-net-pci,netdev=n0,mac={ETH0_MAC},romfile=",
            "-device", "virtio-rng-pci",
            "-no-reboot", "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console}",
            "-pidfile", str(self.workdir / "qemu.pid"),
        ]  # fmt: skip
        if self.link:
            mode, port = self.link
            if not self.link_index:
                raise GuestError("a linked guest needs link_index (its 10.0.3.N address)")
            argv += [
                "-netdev", f"socket,id=n1,{mode}=127.0.0.1:{port}",
                "-device",
                f"virtio-net-pci,netdev=n1,mac={LINK_MAC.format(self.link_index)},romfile=",
            ]  # fmt: skip
        return argv

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console_tail(self, lines: int = 40) -> str:
        parts = []
        for f in ("qemu.log", "console.log"):
            p = (self.workdir or Path("/nonexistent")) / f
            if p.exists():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {f} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)

    def wait_ssh(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Block until ssh answers; returns the seconds since launch."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                rc = self.proc.returncode if self.proc else None
                raise GuestError(
                    f"{self.name}: qemu exited (status {rc}) before ssh came up\n"
                    + self.console_tail()
                )
            res = subprocess.run(
                [*self._ssh_base(control=False), "-o", "ConnectTimeout=5", "true"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
            )
            if res.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: no ssh after {timeout:.0f}s\n{self.console_tail()}")
            time.sleep(1)
        self.boot_seconds = time.monotonic() - self._t0
        # the control master: its own process, stdio away from ours (else pipes never close)
        subprocess.run(
            [*self._ssh_base(control=False), "-o", f"ControlPath={self._ctl}",
             "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=60, check=False,
        )  # fmt: skip
        return self.boot_seconds

    def stop(self) -> None:
        """Kill qemu by pid (the overlay is thrown away, so no clean shutdown is needed)."""
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self.workdir and (self.workdir / "ssh.ctl").exists():
            subprocess.run(
                [*self._ssh_base(control=True), "-O", "exit"],
                capture_output=True, stdin=subprocess.DEVNULL, timeout=10, check=False,
            )  # fmt: skip
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------ commands
    @property
    def _ctl(self) -> str:
        assert self.workdir
        return str(self.workdir / "ssh.ctl")

    def _ssh_base(self, control: bool = True) -> list[str]:
        argv = [
            "ssh", "-i", str(self.image.key_file), "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
        ]  # fmt: skip
        if control:
            argv += ["-o", f"ControlPath={self._ctl}", "-o", "ControlMaster=no"]
        return [*argv, "root@127.0.0.1"]

    def ssh_argv(self, command: str) -> list[str]:
        """argv that runs `command` (a shell command line) in the guest as root."""
        return [*self._ssh_base(), command]

    def ssh(
        self,
        command: str,
        input: bytes | None = None,
        timeout: float = 300,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the guest; stdout/stderr decoded, rc as the guest's."""
        try:
            proc = subprocess.run(
                self.ssh_argv(command),
                input=input if input is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise GuestError(f"{self.name}: timed out after {timeout}s: {command}") from e
        res = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if proc.returncode == 255 and not self.alive():
            raise GuestError(f"{self.name}: qemu died\n{self.console_tail()}")
        if check and res.returncode != 0:
            raise GuestError(
                f"{self.name}: {command!r} exited {res.returncode}\n{res.stdout}{res.stderr}"
            )
        return res

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run `script` with /bin/sh in the guest."""
        return self.ssh("exec /bin/sh -c " + shlex.quote(script), **kw)  # type: ignore[arg-type]

    def run(
        self, argv: list[str], input: bytes | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the guest through the agent (falls back to plain ssh without it)."""
        if self._agent is None or self._agent.proc.poll() is not None:
            assert self.workdir
            self._agent = Agent(self._ssh_base(), self.workdir / "agent.log")
        try:
            rc, out, err = self._agent.run(argv, input or b"", timeout)
        except (GuestError, OSError, ValueError):
            self._agent.close()
            self._agent = None
            if not self.alive():
                raise GuestError(f"{self.name}: qemu died\n{self.console_tail()}") from None
            return self.ssh(shlex.join(argv), input=input, timeout=timeout)
        return subprocess.CompletedProcess(
            argv, rc, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or directory tree into the guest (tar over the ssh channel)."""
        local = Path(local)
        tar = subprocess.Popen(
            ["tar", "-C", str(local.parent), "-cf", "-", local.name], stdout=subprocess.PIPE
        )
        assert tar.stdout
        try:
            res = subprocess.run(
                self.ssh_argv(
                    f"mkdir -p {shlex.quote(remote)} && tar -C {shlex.quote(remote)} -xf -"
                ),
                stdin=tar.stdout,
                capture_output=True,
                timeout=600,
            )
        finally:
            tar.stdout.close()
            tar.wait()
        if res.returncode != 0 or tar.returncode != 0:
            raise GuestError(f"{self.name}: copy of {local} failed: {res.stderr.decode()}")


def boot_all(guests: list[Guest]) -> None:
    """Start guests in order (a link's listener before its connector), then wait for all."""
    try:
        for g in guests:
            g.start()
        for g in guests:
            g.wait_ssh()
    except BaseException:
        for g in guests:
            g.stop()
        raise
