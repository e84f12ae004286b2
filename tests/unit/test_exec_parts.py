"""The pure parts of workers.exec and workers.lease: quoting, planning, parsing, classifying."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from workers.engine.errors import HostKeyError, HostUnreachable, ValidationError
from workers.engine.ports import Locks, Runner, StreamSpec, Transport
from workers.exec.local import LocalRunner
from workers.exec.progress import RateMeter, SendProgress
from workers.exec.quoting import (
    batch_outputs,
    filter_argv,
    remote_batch,
    remote_command,
    remote_pipeline,
    stage_statuses,
)
from workers.exec.remote import ParamikoRunner
from workers.exec.ssh_options import SshOptions
from workers.exec.stages import plan_stages
from workers.exec.stderr import gist, ssh_connection_error
from workers.exec.transport import SshTransport, local_host_name
from workers.filelock import FileLocks
from workers.keys import lock_key
from workers.lease import RedisLocks


def _port_members(port: type) -> dict[str, object]:
    """The methods and properties a `ports` protocol asks for."""
    return {n: v for n, v in vars(port).items() if not n.startswith("_")}


def _params(fn: object, *, bound: bool) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in params[0 if bound else 1 :]]


@pytest.mark.parametrize(
    "make, port",
    [
        (lambda: SshTransport("hosta"), Transport),
        (lambda: LocalRunner("hosta"), Runner),
        (lambda: ParamikoRunner("hostb"), Runner),  # nothing connects until run()
        (lambda: RedisLocks(redis.Redis(), owner="hosta"), Locks),
        (lambda: FileLocks("/run/zrepq/locks", owner="hosta"), Locks),  # nothing until hold()
    ],
    ids=["SshTransport", "LocalRunner", "ParamikoRunner", "RedisLocks", "FileLocks"],
)
def test_implementations_satisfy_the_ports(make: Any, port: type) -> None:
    """Each implementation has every member of its port, with the port's parameters (names,
    kinds, defaults; more only if optional): what the engine calls is there, as it calls it."""
    impl = make()
    members = _port_members(port)
    assert members
    for name, wanted in members.items():
        assert hasattr(impl, name), f"{type(impl).__name__} lacks {port.__name__}.{name}"
        if isinstance(wanted, property):
            assert isinstance(getattr(type(impl), name), property), name
            continue
        have, want = _params(getattr(impl, name), bound=True), _params(wanted, bound=False)
        assert have[: len(want)] == want, name
        assert all(default is not inspect.Parameter.empty for *_, default in have[len(want) :])


def test_remote_command_survives_a_posix_shell() -> None:
    words = ["zfs", "set", "zrep:note=it's $(here) `now`; really", "pool/my fs"]
    line = remote_command(words)
    out = subprocess.run(["sh", "-c", f"printf '%s\\0' {line}"], capture_output=True, check=True)
    assert out.stdout.decode().split("\0")[:-1] == words


def test_remote_pipeline_reports_every_stage_but_the_last() -> None:
    script = remote_pipeline([["sh", "-c", "exit 3"], ["cat"], ["true"]])
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0
    assert stage_statuses(done.stderr.splitlines()) == {0: 3, 1: 0}
    assert remote_pipeline([["zfs", "recv", "a b"]]) == "zfs recv 'a b'"


def test_remote_batch_reports_each_command_and_stops_at_the_first_failure() -> None:
    mark = "zrepq-batch-0123"
    argvs = [["printf", "a\\nb"], ["sh", "-c", "echo e >&2; exit 4"], ["echo", "never"]]
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-c", remote_batch(argvs, mark)], capture_output=True)
        assert done.returncode == 0
        found = batch_outputs(done.stdout.decode(), done.stderr.decode(), mark)
        assert found == [(0, "a\nb", ""), (4, "", "e\n")]
    # a script cut after its first command: only that one is reported
    cut = batch_outputs(f"\n{mark} 0\nout", f"\n{mark} 0\n\n{mark} status 0 0\n\n{mark} 1\n", mark)
    assert cut == [(0, "out", "")]
    with pytest.raises(ValidationError):
        remote_batch([], mark)


def test_filters_are_argv_without_shell_operators() -> None:
    assert filter_argv("zstd -c -T0") == ("zstd", "-c", "-T0")
    assert filter_argv("mbuffer -q -m '1 G'") == ("mbuffer", "-q", "-m", "1 G")
    for bad in ("", "zstd -c | mbuffer", "gzip > /tmp/x", "'unclosed"):
        with pytest.raises(ValidationError):
            filter_argv(bad)


def test_plan_groups_consecutive_remote_steps_into_one_ssh() -> None:
    spec = StreamSpec(
        "hostb", ("zfs", "send", "p/a@1"), "hosta", ("zfs", "recv", "p/a"), "zstd -c", "zstd -dc"
    )
    stages = plan_stages(spec, is_local=lambda h: h == "hosta", ssh=SshOptions())
    assert [s.label for s in stages] == [
        "ssh hostb (send | outfilter)",
        "infilter on hosta",
        "recv on hosta",
    ]
    remote = stages[0].argv
    assert remote[-2] == "hostb"
    assert remote[-1].startswith("{ zfs send p/a@1; printf ") and remote[-1].endswith("| zstd -c")


def test_openssh_argv_follows_the_options(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.write_text("Host hostb\n  HostName 10.0.0.2\n  UserKnownHostsFile /k/one /k/two\n")
    opts = SshOptions(
        config_file=str(cfg),
        user="zrep",
        port=2222,
        identity_file="/keys/id",
        known_hosts="/extra/known hosts",
        accept_unknown_host_keys=True,
        cipher="aes128-gcm@openssh.com",
        extra_ssh_args=("-o", "Compression=no"),
        connect_timeout=2.5,
    )
    assert opts.openssh_argv("hostb") == [
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
        "-F", str(cfg), "-o", "ConnectTimeout=3",
        "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
        "-c", "aes128-gcm@openssh.com",
        "-o", 'UserKnownHostsFile=/k/one /k/two "/extra/known hosts"',
        "-i", "/keys/id", "-p", "2222", "-l", "zrep", "-o", "Compression=no", "hostb",
    ]  # fmt: skip
    with pytest.raises(ValidationError):
        opts.openssh_argv("-oProxyCommand=evil")


def test_resolve_reads_the_config_and_lets_options_win(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.write_text(
        "Host hostb\n  HostName 127.0.0.1\n  Port 2200\n  User backup\n  IdentityFile ~/k1\n"
        "  IdentitiesOnly yes\n  UserKnownHostsFile /k/u\n  GlobalKnownHostsFile /dev/null\n"
    )
    r = SshOptions(config_file=str(cfg)).resolve("hostb")
    assert (r.hostname, r.port, r.user, r.identities_only) == ("127.0.0.1", 2200, "backup", True)
    assert r.user_known_hosts == ("/k/u",) and r.global_known_hosts == ("/dev/null",)
    assert r.identity_files[0].endswith("/k1") and not r.identity_files[0].startswith("~")
    assert r.describe() == "hostb (127.0.0.1:2200)" and r.known_hosts_key == "[127.0.0.1]:2200"
    o = SshOptions(config_file=str(cfg), port=22, user="root", identity_file="/k0").resolve("hostb")
    assert (o.port, o.user, o.identity_files[0]) == (22, "root", "/k0")
    assert o.known_hosts_key == "127.0.0.1"


def test_send_progress_parses_openzfs_lines_and_carries_over_snapshots() -> None:
    p = SendProgress()
    kept = [
        line
        for line in [
            "incremental\tzrep_000001\tpool/fs@zrep_000002\t1000",
            "incremental\tzrep_000002\tpool/fs@zrep_000003\t2000",
            "size\t3000",
            "10:00:01\t400\tpool/fs@zrep_000002",
            "10:00:02\t900\tpool/fs@zrep_000002",
            "warning: something real",
            "10:00:03\t300\t7\tpool/fs@zrep_000003",  # -vv adds a blocks column
        ]
        if not p.feed(line)
    ]
    assert kept == ["warning: something real"]
    assert p.bytes == 1200 and p.estimated_total() == 3000 and p.seen
    q = SendProgress(total=99)
    q.feed("full\tpool/fs@s\t5000")
    q.feed("size\t5000")
    assert q.estimated_total() == 99  # the caller's total wins
    assert SendProgress().feed("full\tpool/fs@s\t5000") and not SendProgress().feed("12:00 5 x")


def test_rate_meter_smooths() -> None:
    m = RateMeter(tau=1.0)
    m.update(0.0, 0)
    assert m.update(1.0, 100) == 100
    r = m.update(2.0, 100)  # a stall pulls the rate down, not to zero
    assert 0 < r < 100


@pytest.mark.parametrize(
    ("stderr", "kind", "words"),
    [
        (
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict "
            "checking.\nHost key verification failed.",
            HostKeyError,
            "is not in known_hosts",
        ),
        (
            "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@\n"
            "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n"
            "Host key verification failed.",
            HostKeyError,
            "CHANGED",
        ),
        ("ssh: connect to host 127.0.0.1 port 9: Connection refused", HostUnreachable, "refused"),
        (
            "ssh: Could not resolve hostname nohost: Name or service not known",
            HostUnreachable,
            "resolve",
        ),
        ("root@127.0.0.1: Permission denied (publickey).", HostUnreachable, "authentication"),
    ],
)
def test_ssh_exit_255_is_classified(stderr: str, kind: type[HostUnreachable], words: str) -> None:
    err = ssh_connection_error("hostb", stderr)
    assert type(err) is kind and err is not None
    assert words in str(err) and "hostb" in str(err)
    assert "@@@" not in str(err)
    assert ssh_connection_error("hostb", "cannot receive: destination exists") is None


def test_gist_skips_ssh_chatter() -> None:
    added = "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts."
    text = f"{added}\n\nreal error\nmore"
    assert gist(text) == "real error"


def test_local_host_name() -> None:
    assert local_host_name({"ZREP_SRC_HOST": "alias"}) == "alias"
    name = local_host_name({})
    assert name and "." not in name


def test_lock_keys_live_under_the_zrepq_prefix() -> None:
    assert lock_key("zrep", "hosta", "pool/fs:x") == "zrepq:lock:hosta:zrep:pool/fs:x"


def test_openssh_gets_keepalives_unless_configured(tmp_path: Path) -> None:
    """A dead link must end a stream in about a minute, not TCP's ~15."""
    argv = SshOptions().openssh_argv("hostb")
    assert argv[-1] == "hostb"
    assert argv[-5:-1] == ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    own = SshOptions(extra_ssh_args=("-o", "ServerAliveInterval=3")).openssh_argv("hostb")
    assert "ServerAliveInterval=15" not in own and "ServerAliveInterval=3" in own
    cfg = tmp_path / "cfg"
    cfg.write_text("Host hostb\n  ServerAliveInterval 2\n")
    assert not any(
        "ServerAlive" in a for a in SshOptions(config_file=str(cfg)).openssh_argv("hostb")
    )
    assert "ServerAliveInterval=15" in SshOptions(config_file=str(cfg)).openssh_argv("hostc")
    assert not any(
        "ServerAlive" in a for a in SshOptions(server_alive_interval=0).openssh_argv("h")
    )
