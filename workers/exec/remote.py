"""Control commands on a remote host over one cached paramiko connection.

Only short commands go this way (`zfs get/list/set/snapshot/hold`): a sync makes dozens of
them per dataset, so one SSH connection per host is kept and every command is a channel on
it. The data stream itself goes through OpenSSH (`workers.exec.pipeline`), which is faster
and does not suffer paramiko's rekey problems on long transfers.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence

import paramiko

from workers.engine.errors import CommandError, HostKeyError, HostUnreachable
from workers.engine.ports import CommandResult
from workers.exec.procs import describe_status
from workers.exec.quoting import batch_outputs, remote_batch, remote_command
from workers.exec.runner import BaseRunner, command_error, command_name, decoded, timed_out
from workers.exec.ssh_options import ResolvedHost, SshOptions

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_SESSION_RETRIES = 10  # ~1 s of waiting for sshd to free a session slot
_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)


class ParamikoRunner(BaseRunner):
    """`ports.Runner` for one remote host; thread-safe, one TCP connection shared by all calls.

    A dead connection is replaced once per call, and only when the command had not started
    (the channel could not be opened), so a mutating command never runs twice.

    At most `max_sessions` commands run at once on the connection (sshd refuses more than its
    MaxSessions, 10 by default); further callers wait for a free session.
    """

    def __init__(
        self, host: str, options: SshOptions | None = None, *, max_sessions: int = 10
    ) -> None:
        super().__init__(host)
        self._options = options or SshOptions()
        self._sessions = threading.BoundedSemaphore(max_sessions)
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._resolved: ResolvedHost | None = None

    def _execute(self, argv: tuple[str, ...], timeout: float | None) -> tuple[int, bytes, bytes]:
        # stdin from /dev/null on the far side: paramiko can send our EOF after its own CLOSE
        # when a command ends at once (a race in Channel.shutdown), and sshd then drops the
        # whole connection ("ieof packet referred to nonexistent channel").
        command = remote_command(argv, stdin_null=True)
        with self._sessions:
            channel = self._open_channel(argv, command)
            try:
                return self._collect(channel, argv, timeout)
            finally:
                channel.close()

    def run_many(
        self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
    ) -> list[CommandResult | CommandError]:
        """`ports.Runner.run_many` in one channel: one remote shell script
        (`quoting.remote_batch`, every word quoted) that runs the commands in order and
        reports each one's exit status, stdout and stderr separately, so a failed one comes
        back as the same `CommandError` that `run` raises for it. One round trip instead of
        one per command; the timeout is the sum of theirs."""
        steps = [tuple(a) for a in argvs]
        if any(not a for a in steps):
            raise CommandError("empty command", host=self._host)
        if len(steps) == 1:
            res = self.run(steps[0], check=False, timeout=timeout)
            return [res if res.returncode == 0 else command_error(res)]
        mark = f"zrepq-batch-{secrets.token_hex(8)}"
        script = remote_batch(steps, mark)
        # What messages (a timeout, a lost connection) name: every command of the batch.
        label = ("batch", "; ".join(shlex.join(a) for a in steps))
        log.debug("run on %s: %s", self._host, label[1])
        start = time.monotonic()
        total = None if timeout is None else timeout * len(steps)
        with self._sessions:
            channel = self._open_channel(label, script)
            try:
                status, out, err = self._collect(channel, label, total)
            finally:
                channel.close()
        found = batch_outputs(decoded(out), decoded(err), mark)
        log.debug(
            "batch of %d on %s: %d run, last %s in %.3fs",
            len(steps),
            self._host,
            len(found),
            describe_status(found[-1][0]) if found else "-",
            time.monotonic() - start,
        )
        done: list[CommandResult | CommandError] = []
        for argv, (code, cout, cerr) in zip(steps, found, strict=False):
            res = CommandResult(self._host, argv, code, cout, cerr)
            done.append(res if code == 0 else command_error(res))
        if status != 0 or (len(found) < len(steps) and (not found or found[-1][0] == 0)):
            # The script did not get to its end (killed, or the shell itself failed): the
            # first command not reported may or may not have run.
            argv = steps[len(found)] if len(found) < len(steps) else steps[-1]
            raise CommandError(
                f"`{command_name(argv)}` on {self._host}: the batch it ran in stopped "
                f"unexpectedly ({describe_status(status)}); it may or may not have run",
                argv=argv,
                returncode=None,
                stderr=decoded(err),
                host=self._host,
            )
        return done

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- connection ------------------------------------------------------------------------

    def _open_channel(self, argv: tuple[str, ...], command: str) -> paramiko.Channel:
        """A channel running `command`.

        A dead connection is replaced once. sshd refusing a session (its MaxSessions: a slot is
        freed a moment after a channel closes, so even a runner capped at the server's limit
        can be refused briefly) is waited out on the same connection. Neither retry can run a
        command twice: both happen before sshd confirmed it started the command.
        """
        reconnected = False
        refusals = 0
        while True:
            client = self._connected()
            transport = client.get_transport()
            try:
                if transport is None or not transport.is_active():
                    raise paramiko.SSHException("connection is closed")
                channel = transport.open_session(timeout=self._options.connect_timeout)
            except _NETWORK_ERRORS as exc:
                if transport is not None and transport.is_active():
                    # Refused (a ChannelException; paramiko hands it to just one of several
                    # concurrent waiters, the others get a bare "Unable to open channel").
                    refusals = self._refused(refusals, exc)
                    continue
                self._discard(client)
                if reconnected:
                    raise HostUnreachable(
                        f"cannot open a session on {self._describe()}: {_reason(exc)}",
                        host=self._host,
                    ) from None
                log.info("connection to %s was lost (%s); reconnecting", self._host, exc)
                reconnected = True
                continue
            try:
                channel.exec_command(command)
            except _NETWORK_ERRORS as exc:
                channel.close()
                if transport.is_active():
                    # sshd closed this one channel without starting the command.
                    refusals = self._refused(refusals, exc)
                    continue
                # The connection died: the command may have started, do not run it again.
                self._discard(client)
                raise HostUnreachable(
                    f"lost the connection to {self._describe()} while starting "
                    f"`{command_name(argv)}`: {_reason(exc)}",
                    host=self._host,
                ) from None
            return channel

    def _refused(self, refusals: int, exc: BaseException) -> int:
        """Wait a little after sshd refused a session; give up after a few tries."""
        if refusals >= _SESSION_RETRIES:
            raise HostUnreachable(
                f"{self._describe()} keeps refusing new sessions ({_reason(exc)}); "
                "is its MaxSessions below this runner's max_sessions?",
                host=self._host,
            ) from None
        time.sleep(0.02 * (refusals + 1))
        return refusals + 1

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                self._client.close()
                self._client = None
            self._client = self._connect()
            return self._client

    def _discard(self, client: paramiko.SSHClient) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        client.close()

    def _connect(self) -> paramiko.SSHClient:
        resolved = self._options.resolve(self._host)
        self._resolved = resolved
        client = paramiko.SSHClient()
        for path in (
            *resolved.global_known_hosts,
            *resolved.user_known_hosts,
            *resolved.extra_known_hosts,
        ):
            if os.path.isfile(path):
                # "system" host keys in paramiko's terms: consulted, never written back.
                client.load_system_host_keys(path)
        client.set_missing_host_key_policy(
            _HostKeyPolicy(resolved, self._options.accept_unknown_host_keys)
        )
        timeout = self._options.connect_timeout
        keys = [p for p in resolved.identity_files if os.path.isfile(p)]
        try:
            sock = socket.create_connection((resolved.hostname, resolved.port), timeout)
        except OSError as exc:
            client.close()
            raise HostUnreachable(
                f"cannot connect to {resolved.describe()}: {_reason(exc)}", host=self._host
            ) from None
        # Each command is a few small request/reply packets: without TCP_NODELAY, Nagle and
        # delayed ACKs add ~40 ms to every one of them (measured on loopback).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                sock=sock,
                hostname=resolved.hostname,
                port=resolved.port,
                username=resolved.user,
                # paramiko takes a list here; its stub says str only.
                key_filename=keys or None,  # type: ignore[arg-type]
                look_for_keys=not resolved.identities_only,
                allow_agent=not resolved.identities_only,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
            )
        except BaseException as exc:
            client.close()
            sock.close()
            error = _connect_failure(exc, resolved)
            if error is None:
                raise
            raise error from None
        log.info("connected to %s as %s", resolved.describe(), resolved.user)
        return client

    def _describe(self) -> str:
        return self._resolved.describe() if self._resolved else self._host

    # -- one command -------------------------------------------------------------------------

    def _collect(
        self, channel: paramiko.Channel, argv: tuple[str, ...], timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        """Read stdout and stderr until the command exits; return (status, stdout, stderr)."""
        out, err = bytearray(), bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Channel.fileno() becomes readable on stdout data, stderr data and EOF alike.
        fd = channel.fileno()

        def drain() -> None:
            while channel.recv_ready():
                out.extend(channel.recv(_READ_SIZE))
            while channel.recv_stderr_ready():
                err.extend(channel.recv_stderr(_READ_SIZE))

        while True:
            drain()
            # EOF comes in order after all data; the exit status may overtake the last data,
            # so wait for both.
            if channel.eof_received and channel.exit_status_ready():
                break
            if channel.closed:  # closed by the server, or the connection died
                if not channel.exit_status_ready():
                    raise HostUnreachable(
                        f"lost the connection to {self._describe()} while "
                        f"`{command_name(argv)}` was running; it may or may not have finished",
                        host=self._host,
                    )
                break
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self._abandon(channel)
                    raise timed_out(self._host, argv, timeout or 0.0, bytes(err))
            select.select([fd], [], [], wait)
        drain()
        status = channel.recv_exit_status()
        if status == -1 and not channel.get_transport().is_active():
            raise HostUnreachable(
                f"lost the connection to {self._describe()} while `{command_name(argv)}` was "
                "running; it may or may not have finished",
                host=self._host,
            )
        if status == -1:
            # No exit-status: the remote program was killed by a signal (exit-signal).
            raise CommandError(
                f"`{command_name(argv)}` on {self._host} was killed on the remote side",
                argv=argv,
                returncode=None,
                stderr=bytes(err).decode("utf-8", errors="replace"),
                host=self._host,
            )
        return status, bytes(out), bytes(err)

    def _abandon(self, channel: paramiko.Channel) -> None:
        """Stop a timed-out command: ask sshd to kill it, then close the channel.

        sshd delivers signals only in privilege-separated sessions, i.e. not after a root
        login; there the command runs on until it ends or writes to its closed output.
        """
        _send_signal(channel, "KILL")
        channel.close()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse (or, if allowed, remember in memory) a host missing from every known_hosts."""

    def __init__(self, resolved: ResolvedHost, accept: bool) -> None:
        self._resolved = resolved
        self._accept = accept

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        fingerprint = key.fingerprint
        if self._accept:
            log.warning(
                "accepting unknown host key for %s: %s", self._resolved.describe(), fingerprint
            )
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        files = (
            *self._resolved.global_known_hosts,
            *self._resolved.user_known_hosts,
            *self._resolved.extra_known_hosts,
        )
        raise HostKeyError(
            f"host key for {self._resolved.describe()} is not in known_hosts "
            f"({', '.join(f for f in files if os.path.isfile(f)) or 'no known_hosts file found'})"
            f"; the server offered {fingerprint}. Add it with "
            f"ssh-keyscan -p {self._resolved.port} {self._resolved.hostname} >> known_hosts, "
            "after checking the fingerprint",
            host=self._resolved.alias,
        )


def _connect_failure(exc: BaseException, resolved: ResolvedHost) -> HostUnreachable | None:
    """The zrepq error for a failed SSH handshake; None for anything that is not one."""
    if isinstance(exc, HostKeyError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"host key for {resolved.describe()} has CHANGED: the server offered "
            f"{exc.key.fingerprint}, known_hosts has {exc.expected_key.fingerprint}. Someone "
            "may be intercepting the connection, or the host was reinstalled; if you are sure, "
            f"remove the old entry with ssh-keygen -R '{resolved.known_hosts_key}'",
            host=resolved.alias,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        # Not retryable: the keys will not change by themselves.
        return HostUnreachable(
            f"authentication to {resolved.describe()} as {resolved.user} failed: {exc}",
            host=resolved.alias,
            retryable=False,
        )
    if isinstance(exc, OSError | EOFError | paramiko.SSHException):
        return HostUnreachable(
            f"cannot connect to {resolved.describe()}: {_reason(exc)}", host=resolved.alias
        )
    return None


def _send_signal(channel: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 "signal" request (sshd >= 7.9 delivers it); best effort."""
    try:
        message = paramiko.Message()
        message.add_byte(bytes([98]))  # SSH_MSG_CHANNEL_REQUEST
        message.add_int(channel.remote_chanid)
        message.add_string("signal")
        message.add_boolean(False)
        message.add_string(name)
        channel.get_transport()._send_user_message(message)  # type: ignore[attr-defined]
    except _NETWORK_ERRORS as exc:
        log.debug("could not send signal %s: %s", name, exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
