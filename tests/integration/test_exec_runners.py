"""The control-command runners, local and over a real sshd: same checks, both ways."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.netutil import children_of, free_port, pids_matching
from tests.harness.sshd import SshdCluster, SshdHost
from workers.engine.errors import CommandError, HostKeyError, HostUnreachable
from workers.engine.ports import CommandResult, Runner
from workers.exec.local import LocalRunner
from workers.exec.remote import ParamikoRunner
from workers.exec.ssh_options import SshOptions

pytestmark = pytest.mark.integration

# Each must reach the program as exactly one argument, byte for byte, and nothing may run.
HOSTILE = [
    "plain",
    "two words",
    "; rm -rf /",
    "$(id)",
    "`id`",
    "'single quoted'",
    '"double quoted"',
    "it's",
    "a\"b'c",
    "back\\slash",
    "new\nline",
    "tab\there",
    "*",
    "?",
    "[a-z]",
    "~",
    "~root",
    "-n",
    "--help",
    "-",
    "",
    " ",
    "$HOME",
    "${PATH}",
    "!!",
    "#not a comment",
    "a|b",
    "a && b",
    "> /dev/null",
    "%s %d",
    "\\0",
    "ünïcødé ✓ 日本",
    "\x1b[31mred",
]


@pytest.fixture(params=["local", "ssh"])
def runner(request: pytest.FixtureRequest, sshd_host: Callable[..., SshdHost]) -> Iterator[Runner]:
    r: Runner
    if request.param == "local":
        r = LocalRunner("hosta")
    else:
        r = ParamikoRunner("hostb", sshd_host("hostb").ssh_options())
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def hostb(sshd_host: Callable[..., SshdHost]) -> SshdHost:
    return sshd_host("hostb")


def test_argv_round_trips_exactly(runner: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    corpus = [*HOSTILE, f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`"]
    result = runner.run(["printf", "%s\\0", *corpus])
    assert result.stdout.split("\0")[:-1] == corpus
    assert result.returncode == 0
    assert not marker.exists()


def test_failure_carries_exit_code_stderr_and_host(runner: Runner) -> None:
    argv = [
        "sh",
        "-c",
        "echo partial; echo 'cannot open tank/x: dataset does not exist' >&2; exit 3",
    ]
    with pytest.raises(CommandError) as info:
        runner.run(argv)
    err = info.value
    assert err.returncode == 3
    assert err.argv == tuple(argv)
    assert "dataset does not exist" in err.stderr
    assert err.host == runner.host
    assert runner.host in str(err) and "dataset does not exist" in str(err)
    assert "exit 3" in str(err)
    assert not err.retryable


def test_run_many_reports_each_command_and_stops_at_the_first_failure(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several commands in one round trip (`run_many`): every word arrives unchanged, each
    command's status, stdout and stderr come back on their own (output without a final
    newline too), a failure is the same `CommandError` `run` raises, and nothing after it
    runs."""
    opened: list[tuple[str, ...]] = []
    if isinstance(runner, ParamikoRunner):
        real = runner._open_channel

        def counting(argv: tuple[str, ...], command: str) -> object:
            opened.append(argv)
            return real(argv, command)

        monkeypatch.setattr(runner, "_open_channel", counting)
    marker = tmp_path / "pwned"
    corpus = [*HOSTILE, f"; touch {marker}", f"$(touch {marker})"]
    after = tmp_path / "after"
    done = runner.run_many(
        [
            ["printf", "%s\\0", *corpus],
            ["sh", "-c", "printf 'no newline'; printf 'half' >&2"],
            ["sh", "-c", "echo out; echo 'cannot hold: tag already exists' >&2; exit 3"],
            ["touch", str(after)],
        ]
    )
    assert len(done) == 3
    first, second, failed = done
    assert isinstance(first, CommandResult) and first.returncode == 0
    assert first.stdout.split("\0")[:-1] == corpus and first.stderr == ""
    assert isinstance(second, CommandResult)
    assert (second.stdout, second.stderr) == ("no newline", "half")
    assert isinstance(failed, CommandError) and failed.returncode == 3
    assert failed.stderr == "cannot hold: tag already exists\n" and failed.host == runner.host
    assert failed.argv[:2] == ("sh", "-c") and "exit 3" in str(failed)
    assert not after.exists() and not marker.exists()
    if isinstance(runner, ParamikoRunner):
        assert len(opened) == 1  # one channel: one round trip for the four
    ok = runner.run_many([["true"], ["echo", "x"]])
    assert [r.returncode for r in ok] == [0, 0] and ok[1].stdout == "x\n"


def test_check_false_returns_the_result(runner: Runner) -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 5"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (5, "out\n", "err\n")
    assert result.host == runner.host


def test_missing_program_is_exit_127(runner: Runner) -> None:
    with pytest.raises(CommandError) as info:
        runner.run(["zrepq-no-such-program", "x"])
    assert info.value.returncode == 127


def test_timeout(runner: Runner) -> None:
    start = time.monotonic()
    with pytest.raises(CommandError) as info:
        runner.run(["sleep", "7.25"], timeout=0.3)
    assert time.monotonic() - start < 3
    assert info.value.returncode is None
    assert info.value.retryable
    assert "timed out" in str(info.value)
    if isinstance(runner, LocalRunner):
        assert pids_matching("sleep\x007.25") == []
    else:
        # sshd cannot signal a root session's command (no privilege separation after a root
        # login), so the remote sleep outlives the channel: clean it up here.
        for pid in pids_matching("sleep\x007.25"):
            os.kill(pid, 9)
    # The connection is still usable after a timeout.
    assert runner.run(["echo", "ok"]).stdout == "ok\n"


def test_local_children_get_own_group_and_die_with_parent() -> None:
    probe = (
        "import ctypes, os\n"
        "sig = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG\n"
        "print(sig.value, os.getpgrp() == os.getpid())\n"
    )
    out = LocalRunner("hosta").run([sys.executable, "-c", probe]).stdout
    assert out.split() == ["9", "True"]  # SIGKILL, group leader


def test_local_env_is_laid_over_the_worker_env() -> None:
    r = LocalRunner("hosta", env={"ZREPQ_TEST_VAR": "x y"})
    out = r.run(["sh", "-c", 'printf "%s|%s" "$ZREPQ_TEST_VAR" "$HOME"']).stdout
    assert out == f"x y|{os.environ['HOME']}"


def test_remote_session_gets_the_host_env(hostb: SshdHost) -> None:
    r = ParamikoRunner("hostb", hostb.ssh_options())
    try:
        out = r.run(["sh", "-c", 'printf "%s\\n%s" "$PATH" "$ZFS_STANDIN_ROOT"']).stdout
    finally:
        r.close()
    path, root = out.split("\n")
    assert path.startswith(hostb.env["PATH"])
    assert root == str(hostb.root)


def test_one_connection_for_many_commands(hostb: SshdHost) -> None:
    r = ParamikoRunner("hostb", hostb.ssh_options())
    seen: list[str] = []

    def work() -> None:
        for _ in range(5):
            seen.append(r.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout)

    try:
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        work()
    finally:
        r.close()
    assert len(seen) == 35
    assert len(set(seen)) == 1  # same client port: one TCP connection


def test_sessions_are_capped_to_what_sshd_allows(sshd_host: Callable[..., SshdHost]) -> None:
    host = sshd_host("fewsessions", sshd_config=("MaxSessions 3",))
    errors: list[BaseException] = []
    ports: set[str] = set()
    burst_cmd = ["sleep 0.2; echo $SSH_CONNECTION"]

    def burst(r: ParamikoRunner) -> None:
        def one() -> None:
            try:
                ports.add(r.run(["sh", "-c", burst_cmd[0]]).stdout)
            except HostUnreachable as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    capped = ParamikoRunner("fewsessions", host.ssh_options(), max_sessions=3)
    try:
        burst(capped)
    finally:
        capped.close()
    assert errors == [] and len(ports) == 1

    # Without the cap sshd refuses sessions for longer than the runner waits; the commands
    # that got one, on the same connection, still finish.
    ports.clear()
    greedy = ParamikoRunner("fewsessions", host.ssh_options(), max_sessions=8)
    try:
        burst_cmd[0] = "sleep 1.5; echo $SSH_CONNECTION"
        burst(greedy)
    finally:
        greedy.close()
    assert errors and all("keeps refusing new sessions" in str(e) for e in errors)
    assert len(ports) == 1 and len(errors) < 8


def test_reconnects_once_when_the_connection_died(hostb: SshdHost) -> None:
    r = ParamikoRunner("hostb", hostb.ssh_options())
    try:
        before = r.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
        sessions = children_of(hostb.pid)  # the per-connection sshd processes
        assert sessions
        for pid in sessions:
            os.kill(pid, 9)
        time.sleep(0.1)
        after = r.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
    finally:
        r.close()
    assert after != before  # a new connection, and no error


def test_unknown_host_key_is_refused(
    hostb: SshdHost, sshd_cluster: SshdCluster, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    config = sshd_cluster.write_client_config(tmp_path / "cfg", known_hosts=empty)
    r = ParamikoRunner("hostb", SshOptions(config_file=str(config)))
    with pytest.raises(HostKeyError) as info:
        r.run(["true"])
    msg = str(info.value)
    assert f"hostb (127.0.0.1:{hostb.port})" in msg
    assert "not in known_hosts" in msg
    assert not info.value.retryable
    assert info.value.host == "hostb"


def test_accept_unknown_host_keys_connects(
    hostb: SshdHost, sshd_cluster: SshdCluster, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    config = sshd_cluster.write_client_config(tmp_path / "cfg", known_hosts=empty)
    r = ParamikoRunner("hostb", SshOptions(config_file=str(config), accept_unknown_host_keys=True))
    try:
        assert r.run(["echo", "hi"]).stdout == "hi\n"
    finally:
        r.close()


def test_extra_known_hosts_file_is_consulted(
    hostb: SshdHost, sshd_cluster: SshdCluster, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    extra = tmp_path / "extra_known_hosts"
    extra.write_text(hostb.known_hosts_line + "\n")
    config = sshd_cluster.write_client_config(tmp_path / "cfg", known_hosts=empty)
    r = ParamikoRunner("hostb", SshOptions(config_file=str(config), known_hosts=str(extra)))
    try:
        assert r.run(["echo", "hi"]).stdout == "hi\n"
    finally:
        r.close()


def test_changed_host_key_is_refused(
    sshd_host: Callable[..., SshdHost], sshd_cluster: SshdCluster
) -> None:
    host = sshd_host("rekeyed")  # its own host: its key is about to change
    r = ParamikoRunner("rekeyed", host.ssh_options())
    try:
        assert r.run(["echo", "before"]).stdout == "before\n"
        sshd_cluster.regenerate_host_key("rekeyed")
        with pytest.raises(HostKeyError) as info:
            r.run(["echo", "after"])  # the cached connection died with the old server
    finally:
        r.close()
    msg = str(info.value)
    assert "CHANGED" in msg and "rekeyed" in msg
    assert f"[127.0.0.1]:{host.port}" in msg  # the ssh-keygen -R hint
    assert not info.value.retryable


def test_closed_port_is_unreachable(sshd_cluster: SshdCluster, tmp_path: Path) -> None:
    port = free_port()
    config = sshd_cluster.write_client_config(
        tmp_path / "cfg",
        known_hosts=sshd_cluster.known_hosts,
        names=[],
        port_overrides={"nohost": port},
    )
    r = ParamikoRunner("nohost", SshOptions(config_file=str(config), connect_timeout=3))
    with pytest.raises(HostUnreachable) as info:
        r.run(["true"])
    assert not isinstance(info.value, HostKeyError)
    assert info.value.retryable
    assert f"nohost (127.0.0.1:{port})" in str(info.value)
    assert "refused" in str(info.value)


def test_unresolvable_name_is_unreachable() -> None:
    r = ParamikoRunner(
        "no-such-host.invalid", SshOptions(config_file="/dev/null", connect_timeout=3)
    )
    with pytest.raises(HostUnreachable) as info:
        r.run(["true"])
    assert "no-such-host.invalid" in str(info.value)
    assert "resolve" in str(info.value)
