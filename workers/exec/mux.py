"""One OpenSSH master connection per remote host and process, for the data stream.

Every stream used to be a new `ssh` connection: a TCP handshake, the key exchange (OpenSSH
9.2's default `sntrup761x25519-sha512` costs the client ~60 ms of CPU, sshd about as much)
and user authentication, for each sync. For a `sync all` of unchanged datasets, where the
stream itself is a few hundred bytes, that was the largest CPU cost of a sync after the zfs
calls. Here the first stream to a host starts a master (`ssh -M -N`, the same options and
host-key checking as every stream) and later streams open a session on it
(`-o ControlPath=... -o ControlMaster=no`): no handshake, no key exchange.

Why per process: a worker process runs one task at a time (Celery's prefork pool), so its
master never carries two streams at once and parallel syncs keep one ssh process, and one
core's worth of crypto, each, as before. A master is started in its own session (the
pipeline's cancel kills its process group, not the master) and dies with the thread that
started it (`procs.child_argv`), and with `close()`.

If the master is gone (killed, the link dropped), `ssh -o ControlMaster=no` finds no socket
and connects directly, as before; the next stream starts a new master. A master that does
not come up within the connect timeout is given up and the stream connects directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace

from workers.exec import procs
from workers.exec.ssh_options import SshOptions

log = logging.getLogger(__name__)

_POLL = 0.01


class Multiplexer:
    def __init__(self, ssh: SshOptions) -> None:
        self._ssh = ssh
        self._lock = threading.Lock()
        self._masters: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._dir: str | None = None
        self._pid = os.getpid()

    def options(self, host: str) -> SshOptions:
        """The ssh options of a stream to `host`: through this process's master connection to
        it when one runs or can be started, else the plain ones (a direct connection)."""
        path = self._ensure(host)
        if path is None:
            return self._ssh
        extra = ("-o", f"ControlPath={path}", "-o", "ControlMaster=no")
        return replace(self._ssh, extra_ssh_args=(*self._ssh.extra_ssh_args, *extra))

    def _ensure(self, host: str) -> str | None:
        with self._lock:
            if os.getpid() != self._pid:
                # A forked child: the masters are its parent's (and die with it).
                self._masters, self._dir, self._pid = {}, None, os.getpid()
            found = self._masters.get(host)
            if found is not None:
                proc, path = found
                if proc.poll() is None and os.path.exists(path):
                    return path
                self._stop(proc, path)
                del self._masters[host]
            return self._start(host)

    def _start(self, host: str) -> str | None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="zrepq-ssh-")  # 0700: the sockets are ours only
        path = os.path.join(self._dir, f"m{len(self._masters)}-{int(time.time() * 1000) % 100000}")
        argv = self._ssh.openssh_argv(host)
        argv = [
            *argv[:-1],
            *("-M", "-N", "-o", f"ControlPath={path}", "-o", "ControlPersist=no"),
            argv[-1],
        ]
        try:
            full, preexec = procs.child_argv(argv)
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=preexec,
                start_new_session=True,
            )
        except OSError as e:
            log.warning("could not start an ssh master to %s: %s", host, e)
            return None
        deadline = time.monotonic() + max(1.0, self._ssh.connect_timeout)
        while time.monotonic() < deadline:
            if os.path.exists(path):
                self._masters[host] = (proc, path)
                return path
            if proc.poll() is not None:
                break
            time.sleep(_POLL)
        self._stop(proc, path)
        log.warning("no ssh master to %s; streams connect directly", host)
        return None

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], path: str) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def close(self) -> None:
        with self._lock:
            masters, self._masters = list(self._masters.values()), {}
            folder, self._dir = self._dir, None
            mine = os.getpid() == self._pid
        if not mine:
            return
        for proc, path in masters:
            self._stop(proc, path)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
