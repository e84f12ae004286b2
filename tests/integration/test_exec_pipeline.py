"""The stream pipeline with real programs, locally and over a real sshd.

"hosta" is this process's host (no ssh); "hostb" is a real sshd on loopback. The sending and
receiving programs are plain ones (`cat`, `dd`, `zstd`, small shell scripts standing in for
`zfs send -v -P`), so these tests are about plumbing, not ZFS.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.netutil import REPO, free_port, pids_matching, wait_until
from tests.harness.sshd import SshdCluster, SshdHost
from workers.engine.errors import Cancelled, HostKeyError, HostUnreachable, PipelineError
from workers.engine.events import StreamProgress
from workers.engine.ports import StreamSpec
from workers.exec.pipeline import run_stream
from workers.exec.ssh_options import SshOptions
from workers.exec.stages import plan_stages
from workers.exec.transport import SshTransport

pytestmark = pytest.mark.integration

LOCAL = "hosta"


def is_local(host: str) -> bool:
    return host == LOCAL


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("payload") / "data.bin"
    data = os.urandom(8 << 20)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def hostb(sshd_host: Callable[..., SshdHost]) -> SshdHost:
    return sshd_host("hostb")


@pytest.fixture
def token() -> str:
    """A word to find this test's processes by in /proc (locally and "remotely")."""
    return f"zrepq-test-{uuid.uuid4().hex[:12]}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ROUTES = [
    pytest.param(LOCAL, LOCAL, None, None, id="local-local"),
    pytest.param(LOCAL, "hostb", None, None, id="push"),
    pytest.param("hostb", LOCAL, None, None, id="pull"),
    pytest.param(LOCAL, "hostb", "zstd -c -1", "zstd -dc", id="push-zstd"),
    pytest.param("hostb", LOCAL, "zstd -c -1", "zstd -dc", id="pull-zstd"),
    pytest.param("hostb", "hostb", None, None, id="remote-remote"),
]


@pytest.mark.parametrize(("send", "recv", "outfilter", "infilter"), ROUTES)
def test_bytes_arrive_intact(
    hostb: SshdHost,
    payload: tuple[Path, str],
    tmp_path: Path,
    send: str,
    recv: str,
    outfilter: str | None,
    infilter: str | None,
) -> None:
    src, digest = payload
    out = tmp_path / "received.bin"
    spec = StreamSpec(
        send,
        ("cat", str(src)),
        recv,
        ("dd", f"of={out}", "bs=1M", "status=none"),
        outfilter,
        infilter,
    )
    result = run_stream(spec, is_local=is_local, ssh=hostb.ssh_options())
    assert _sha256(out) == digest
    if send == LOCAL:
        assert result.bytes_sent == src.stat().st_size  # exact, from /proc for a local send
    assert set(result.stderr) == {"send", "recv"} | (
        {"outfilter", "infilter"} if outfilter else set()
    )


def test_plan_uses_no_ssh_for_local_ends(hostb: SshdHost) -> None:
    spec = StreamSpec(
        LOCAL, ("zfs", "send", "p/a@1"), LOCAL, ("zfs", "recv", "p/b"), "zstd -c", "zstd -dc"
    )
    stages = plan_stages(spec, is_local=is_local, ssh=hostb.ssh_options())
    assert [s.argv for s in stages] == [
        ("zfs", "send", "p/a@1"),
        ("zstd", "-c"),
        ("zstd", "-dc"),
        ("zfs", "recv", "p/b"),
    ]
    push = plan_stages(
        StreamSpec(LOCAL, ("zfs", "send", "p/a@1"), "hostb", ("zfs", "recv", "p/my fs")),
        is_local=is_local,
        ssh=SshOptions(cipher="aes128-gcm@openssh.com"),
    )
    assert push[1].argv == (
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
        "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
        "-c", "aes128-gcm@openssh.com", "hostb", "zfs recv 'p/my fs'",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("send", "recv", "outfilter", "infilter"),
    [p for p in ROUTES if p.id != "remote-remote"],
)
def test_failed_recv_is_blamed_not_the_sigpiped_send(
    hostb: SshdHost,
    payload: tuple[Path, str],
    send: str,
    recv: str,
    outfilter: str | None,
    infilter: str | None,
) -> None:
    recv_argv = (
        "sh",
        "-c",
        "echo \"cannot receive new filesystem stream: destination 'p/x' exists\" >&2; exit 1",
    )
    spec = StreamSpec(send, ("cat", str(payload[0])), recv, recv_argv, outfilter, infilter)
    with pytest.raises(PipelineError) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options())
    err = info.value
    assert str(err).startswith(f"recv on {recv} failed (exit 1): cannot receive new filesystem")
    assert err.host == recv
    assert err.argv == recv_argv
    assert err.returncode == 1
    assert "destination 'p/x' exists" in err.stderr


@pytest.mark.parametrize(
    ("send", "recv", "outfilter", "infilter"),
    [p for p in ROUTES if p.id != "remote-remote"],
)
def test_failed_send_is_blamed_not_the_starved_recv(
    hostb: SshdHost, send: str, recv: str, outfilter: str | None, infilter: str | None
) -> None:
    complain = "echo \"cannot open 'p/x@s1': dataset does not exist\" >&2"
    send_argv = ("sh", "-c", f"head -c 100000 /dev/zero; {complain}; exit 1")
    # A recv that complains about the short stream, as zfs recv does.
    recv_argv = (
        "sh",
        "-c",
        "cat >/dev/null; echo 'cannot receive: failed to read from stream' >&2; exit 1",
    )
    spec = StreamSpec(send, send_argv, recv, recv_argv, outfilter, infilter)
    with pytest.raises(PipelineError) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options())
    assert str(info.value).startswith(f"send on {send} failed (exit 1): cannot open 'p/x@s1'")
    assert info.value.host == send


def test_failed_remote_infilter_is_found_despite_no_pipefail(
    hostb: SshdHost, payload: tuple[Path, str]
) -> None:
    spec = StreamSpec(
        LOCAL, ("cat", str(payload[0])), "hostb", ("dd", "of=/dev/null", "status=none"),
        infilter="sh -c 'echo zstd: corrupted block >&2; exit 4'",
    )  # fmt: skip
    with pytest.raises(PipelineError) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options())
    assert str(info.value) == "infilter on hostb failed (exit 4): zstd: corrupted block"


def test_missing_local_filter_program(hostb: SshdHost, payload: tuple[Path, str]) -> None:
    spec = StreamSpec(
        LOCAL, ("cat", str(payload[0])), LOCAL, ("dd", "of=/dev/null", "status=none"),
        outfilter="zrepq-no-such-filter -c",
    )  # fmt: skip
    with pytest.raises(PipelineError) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options())
    assert info.value.returncode == 127
    assert "outfilter on hosta could not start" in str(info.value)


def _slow_sender(token: str) -> tuple[str, ...]:
    # Stops when its output breaks (SIGPIPE), like zfs send: no signal reaches a command on
    # the far side of a dropped ssh connection other than through its pipes.
    return ("sh", "-c", "while head -c 65536 /dev/zero; do sleep 0.05; done", token)


def _slow_receiver(token: str) -> tuple[str, ...]:
    return ("sh", "-c", "cat >/dev/null", token)


@pytest.mark.parametrize(
    ("send", "recv"),
    [(LOCAL, LOCAL), (LOCAL, "hostb"), ("hostb", LOCAL)],
    ids=["local", "push", "pull"],
)
def test_cancel_kills_every_stage(hostb: SshdHost, token: str, send: str, recv: str) -> None:
    cancel = threading.Event()
    spec = StreamSpec(send, _slow_sender(token), recv, _slow_receiver(token), "cat", "cat")
    timer = threading.Timer(0.7, cancel.set)
    timer.start()
    start = time.monotonic()
    with pytest.raises(Cancelled) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options(), cancel=cancel)
    assert time.monotonic() - start < 4
    assert info.value.retryable
    # Local stages are reaped before run_stream returns; remote ones die with their ssh.
    assert wait_until(lambda: not pids_matching(token), timeout=5), pids_matching(token)


def test_timeout_kills_every_stage(hostb: SshdHost, token: str) -> None:
    spec = StreamSpec(LOCAL, _slow_sender(token), "hostb", _slow_receiver(token))
    with pytest.raises(PipelineError) as info:
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options(), timeout=0.5)
    assert "timed out" in str(info.value)
    assert info.value.retryable
    assert wait_until(lambda: not pids_matching(token), timeout=5), pids_matching(token)


_WORKER = textwrap.dedent(
    """
    import sys
    from workers.engine.ports import StreamSpec
    from workers.exec.pipeline import run_stream
    from workers.exec.ssh_options import SshOptions

    config, recv_host, token = sys.argv[1:]
    slow = "while head -c 65536 /dev/zero; do sleep 0.05; done"
    drain = ("sh", "-c", "cat >/dev/null", token)
    spec = StreamSpec("hosta", ("sh", "-c", slow, token), recv_host, drain)
    run_stream(spec, is_local=lambda h: h == "hosta", ssh=SshOptions(config_file=config))
    """
)


@pytest.mark.parametrize("recv", [LOCAL, "hostb"], ids=["local", "push"])
def test_sigkilled_worker_leaves_no_orphans(hostb: SshdHost, token: str, recv: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(hostb.config_file), recv, token],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        # The send, the receive and (for push) the ssh are all running.
        assert wait_until(lambda: len(pids_matching(token)) >= 2, timeout=10)
        time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert wait_until(lambda: not pids_matching(token), timeout=5), pids_matching(token)


def _fake_zfs_send(tmp_path: Path, chunks: int, chunk: int, pause: float) -> Path:
    """A stand-in for `zfs send -v -P pool/fs@s1`: data on stdout, OpenZFS's -P lines on stderr."""
    script = tmp_path / "fake-zfs-send"
    total = chunks * chunk
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            printf 'full\\tpool/fs@s1\\t{total}\\n' >&2
            printf 'size\\t{total}\\n' >&2
            echo 'a warning that is not progress' >&2
            i=0
            while [ $i -lt {chunks} ]; do
                head -c {chunk} /dev/zero
                i=$((i + 1))
                printf '00:00:%02d\\t%d\\tpool/fs@s1\\n' $i $((i * {chunk})) >&2
                sleep {pause}
            done
            """
        )
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("send", [LOCAL, "hostb"], ids=["local", "pull"])
def test_progress_at_least_every_second(hostb: SshdHost, tmp_path: Path, send: str) -> None:
    sender = _fake_zfs_send(tmp_path, chunks=28, chunk=100_000, pause=0.1)
    events: list[tuple[float, StreamProgress]] = []
    start = time.monotonic()
    spec = StreamSpec(send, (str(sender),), LOCAL, ("dd", "of=/dev/null", "status=none"))
    result = run_stream(
        spec,
        is_local=is_local,
        ssh=hostb.ssh_options(),
        on_progress=lambda p: events.append((time.monotonic(), p)),
    )
    times = [start] + [t for t, _ in events]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(events) >= 3
    assert max(gaps) <= 1.05, gaps
    sent = [p.bytes_sent for _, p in events]
    assert sent == sorted(sent)
    assert 0 < sent[0] < 2_800_000
    assert sent[-1] == result.bytes_sent == 2_800_000
    assert all(p.total == 2_800_000 for _, p in events)
    assert any(p.rate > 0 for _, p in events)
    # Progress lines are dropped from the stderr kept for errors; the rest stays.
    assert result.stderr["send"] == "a warning that is not progress"


def test_a_failing_progress_callback_does_not_break_the_stream(
    hostb: SshdHost, tmp_path: Path
) -> None:
    sender = _fake_zfs_send(tmp_path, chunks=3, chunk=1000, pause=0.0)

    def broken(_: StreamProgress) -> None:
        raise RuntimeError("display broke")

    spec = StreamSpec(LOCAL, (str(sender),), LOCAL, ("dd", "of=/dev/null", "status=none"))
    assert (
        run_stream(spec, is_local=is_local, ssh=hostb.ssh_options(), on_progress=broken).bytes_sent
        == 3000
    )


def test_unknown_host_key_in_the_data_path(
    hostb: SshdHost, sshd_cluster: SshdCluster, tmp_path: Path, payload: tuple[Path, str]
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    config = sshd_cluster.write_client_config(tmp_path / "cfg", known_hosts=empty)
    spec = StreamSpec(
        LOCAL, ("cat", str(payload[0])), "hostb", ("dd", "of=/dev/null", "status=none")
    )
    with pytest.raises(HostKeyError) as info:
        run_stream(spec, is_local=is_local, ssh=SshOptions(config_file=str(config)))
    assert "host key for hostb is not in known_hosts" in str(info.value)
    assert not info.value.retryable
    # accept-new trusts it (and records it, as OpenSSH does).
    run_stream(
        spec,
        is_local=is_local,
        ssh=SshOptions(config_file=str(config), accept_unknown_host_keys=True),
    )
    assert f"[127.0.0.1]:{hostb.port}" in empty.read_text()


def test_changed_host_key_in_the_data_path(
    sshd_host: Callable[..., SshdHost], sshd_cluster: SshdCluster, payload: tuple[Path, str]
) -> None:
    host = sshd_host("rekeyed2")
    spec = StreamSpec(
        LOCAL, ("cat", str(payload[0])), "rekeyed2", ("dd", "of=/dev/null", "status=none")
    )
    run_stream(spec, is_local=is_local, ssh=host.ssh_options())
    sshd_cluster.regenerate_host_key("rekeyed2")
    with pytest.raises(HostKeyError) as info:
        run_stream(spec, is_local=is_local, ssh=host.ssh_options())
    assert "host key for rekeyed2 has CHANGED" in str(info.value)


def test_unreachable_host_in_the_data_path(
    sshd_cluster: SshdCluster, tmp_path: Path, payload: tuple[Path, str]
) -> None:
    config = sshd_cluster.write_client_config(
        tmp_path / "cfg",
        known_hosts=sshd_cluster.known_hosts,
        names=[],
        port_overrides={"nohost": free_port()},
    )
    spec = StreamSpec(
        LOCAL, ("cat", str(payload[0])), "nohost", ("dd", "of=/dev/null", "status=none")
    )
    with pytest.raises(HostUnreachable) as info:
        run_stream(spec, is_local=is_local, ssh=SshOptions(config_file=str(config)))
    assert not isinstance(info.value, HostKeyError)
    assert info.value.retryable
    assert "cannot connect to nohost" in str(info.value) and "Connection refused" in str(info.value)


def test_transport_runs_local_ends_without_ssh(
    hostb: SshdHost, payload: tuple[Path, str], tmp_path: Path
) -> None:
    transport = SshTransport("hosta", hostb.ssh_options(), local_env={"ZREPQ_MARK": "local"})
    try:
        assert transport.is_local("hosta") and transport.is_local("localhost")
        assert not transport.is_local("hostb")
        local = transport.runner("localhost").run(
            ["sh", "-c", "echo $ZREPQ_MARK; echo $SSH_CONNECTION"]
        )
        assert local.stdout == "local\n\n"
        remote = transport.runner("hostb")
        assert remote is transport.runner("hostb")  # cached
        assert remote.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.strip()
        out = tmp_path / "out.bin"
        transport.stream(
            StreamSpec(
                "hostb", ("cat", str(payload[0])), "hosta", ("dd", f"of={out}", "status=none")
            )
        )
        assert _sha256(out) == payload[1]
    finally:
        transport.close()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_standin_zfs_send_recv_over_ssh(
    sshd_host: Callable[..., SshdHost], tmp_path: Path, direction: str
) -> None:
    """The real thing, with the stand-in `zfs` on both ends: `zfs send -v -P | ssh zfs recv`."""
    from tests.harness.standin import StandinHost

    remote_sshd = sshd_host("standinb")
    for child in remote_sshd.root.iterdir():  # fresh remote state for each run
        subprocess.run(["rm", "-rf", str(child)], check=True)
    here = StandinHost(tmp_path / "hosta", LOCAL)
    there = StandinHost(remote_sshd.root, "standinb")
    here.create_pool("poola")
    there.create_pool("poolb")
    src, dst = (here, there) if direction == "push" else (there, here)
    src_pool, dst_pool = ("poola", "poolb") if direction == "push" else ("poolb", "poola")
    src.zfs("create", f"{src_pool}/fs")
    src.write(f"{src_pool}/fs", "data.bin", os.urandom(2 << 20))
    src.zfs("snapshot", f"{src_pool}/fs@zrep_000001")
    spec = StreamSpec(
        src.name, ("zfs", "send", "-v", "-P", f"{src_pool}/fs@zrep_000001"),
        dst.name, ("zfs", "recv", f"{dst_pool}/fs"),
    )  # fmt: skip
    events: list[StreamProgress] = []
    transport = SshTransport(LOCAL, remote_sshd.ssh_options(), local_env=here.env)
    try:
        result = transport.stream(spec, on_progress=events.append)
        assert dst.snapshots(f"{dst_pool}/fs") == [f"{dst_pool}/fs@zrep_000001"]
        assert dst.tree(f"{dst_pool}/fs") == src.tree(f"{src_pool}/fs")
        assert events and events[-1].total is not None
        if direction == "push":
            assert result.bytes_sent >= 2 << 20
        # Again: the destination exists now, and the error says so and names recv.
        with pytest.raises(PipelineError) as info:
            transport.stream(spec)
    finally:
        transport.close()
    assert str(info.value).startswith(f"recv on {dst.name} failed (exit 1): cannot receive")
