"""The engine's own contracts: argv built in one place, zfs's words typed in one place, one
request model per verb (and the tasks built from them), and a timeout on every command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tasks import contract as c
from workers.engine import Context, EngineConfig, commands, requests, run, verbs
from workers.engine.errors import (
    CommandError,
    CommandTimedOut,
    ConfigError,
    DatasetBusy,
    DatasetMissing,
    HoldExists,
    NoSuchDataset,
    NoSuchHold,
    PermissionDenied,
    PipelineError,
    PoolNeedsUpgrade,
    StaleResumeToken,
    ValidationError,
)
from workers.engine.zfs_errors import only, says, typed, typed_stream
from workers.exec.transport import SshTransport
from workers.settings import load

# ---- argv: commands.py -------------------------------------------------------------------


def test_argv_builders_spell_zfs_commands_as_zrepq_always_ran_them() -> None:
    assert commands.get(["zrep:src-fs", "type"], "p/fs", fields="property,value,source",
                        parsable=True) == (
        "zfs", "get", "-H", "-p", "-o", "property,value,source", "zrep:src-fs,type", "p/fs",
    )  # fmt: skip
    assert commands.get(["guid"], "p/fs", fields="name,property,value,source", parsable=True,
                        depth=1, types="snapshot") == (
        "zfs", "get", "-H", "-p", "-d", "1", "-t", "snapshot",
        "-o", "name,property,value,source", "guid", "p/fs",
    )  # fmt: skip
    assert commands.release("t", "p/fs@a", "p/fs@b") == ("zfs", "release", "t", "p/fs@a", "p/fs@b")
    assert commands.snapshot("p/fs@s", recursive=True) == ("zfs", "snapshot", "-r", "p/fs@s")
    assert commands.send(["-t", "tok"]) == ("zfs", "send", "-v", "-P", "-t", "tok")


def test_send_and_recv_arguments_follow_the_zrep_settings() -> None:
    plain = EngineConfig.from_env({})
    assert commands.incremental(plain, "p/fs@a", "p/fs@b") == ["-I", "p/fs@a", "p/fs@b"]
    assert commands.full(plain, "p/fs@a") == ["-p", "p/fs@a"]
    assert commands.sync_recv_flags(plain, force=True) == ["-F"]
    assert commands.init_recv_flags(plain) == ["-u", "-o", "readonly=on", "-F", "-x", "zrep:master"]
    rec = EngineConfig.from_env({"ZREP_R": "-R", "ZREP_SEND_FLAGS": "-c", "ZREPTAG": "off"})
    assert commands.incremental(rec, "p/fs@a", "p/fs@b") == ["-R", "-c", "-i", "p/fs@a", "p/fs@b"]
    assert commands.sync_recv_flags(rec, force=False) == ["-x", "off:master"]


# ---- zfs's words: zfs_errors.py ----------------------------------------------------------


def _err(stderr: str, cls: type[CommandError] = CommandError) -> CommandError:
    return cls("`zfs x` on h failed (exit 1): ...", argv=("zfs", "x"), stderr=stderr, host="h")


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("cannot open 'p/x': dataset does not exist\n", NoSuchDataset),
        ("could not find any snapshots to destroy; check snapshot names.\n", NoSuchDataset),
        ("cannot hold snapshot 'p/x@s': tag already exists on this dataset\n", HoldExists),
        ("cannot release hold from snapshot 'p/x@s': no such tag on this dataset\n", NoSuchHold),
        ("cannot destroy snapshot p/x@s: dataset is busy\n", DatasetBusy),
        ("cannot set property for 'p/x': permission denied\n", PermissionDenied),
        ("cannot do that: something else\n", CommandError),
    ],
)
def test_zfs_stderr_becomes_a_typed_error_with_the_same_record(
    stderr: str, kind: type[CommandError]
) -> None:
    err = _err(stderr)
    got = typed(err)
    assert type(got) is kind
    assert got.to_record() == err.to_record()  # the class says more; the record is unchanged


def test_a_multi_snapshot_release_is_harmless_only_if_every_line_is() -> None:
    benign = (NoSuchHold, NoSuchDataset)
    two = (
        "cannot release hold from snapshot 'p/x@a': no such tag on this dataset\n"
        "cannot release hold from snapshot 'p/x@b': dataset does not exist\n"
    )
    assert only(two, benign) and says(two, NoSuchDataset)
    assert not only(two + "cannot release hold from snapshot 'p/x@c': dataset is busy\n", benign)
    assert not only("", benign)


def test_stream_errors_are_typed_by_what_zfs_said() -> None:
    stale = _err("cannot resume send: 'p/x@s' used in the initial send no longer exists\n")
    stale = PipelineError(stale.message, stderr=stale.stderr)
    assert type(typed_stream(stale, resuming=True)) is StaleResumeToken
    assert type(typed_stream(stale, resuming=False)) is PipelineError  # not a resume: as it is
    upgrade = PipelineError(
        "recv failed", stderr="cannot receive new filesystem stream: pool must be upgraded to "
        "receive this stream.\n",
    )  # fmt: skip
    assert type(typed_stream(upgrade, resuming=False)) is PoolNeedsUpgrade


# ---- one request model per verb, the tasks built from them --------------------------------


def test_every_task_is_its_verbs_request_plus_the_envelope() -> None:
    for name, model in c.SCHEMAS.items():
        assert list(model.model_fields)[:2] == ["host", "tag"], name
        if name in (c.SYNC_ALL, c.STATUS, c.EXPIRE):
            continue  # fanned out or formatted by their handlers
        assert any(base in verbs.VERBS for base in model.__mro__), name
    # A field is typed once: a task's model is its request's subclass.
    assert issubclass(c.InitArgs, requests.InitRequest)
    assert issubclass(c.SyncArgs, requests.SyncRequest)
    assert issubclass(c.SyncAllArgs, requests.SyncFlags)


def test_requests_refuse_bad_names_and_arguments_before_anything_runs() -> None:
    with pytest.raises(ValidationError, match="invalid dataset name"):
        requests.SyncRequest(fs="pool/a;reboot")
    with pytest.raises(ValidationError, match=r"sync: invalid arguments: quiet_secs"):
        requests.parse(requests.SyncRequest, {"fs": "pool/a", "quiet_secs": 10}, "sync")
    with pytest.raises(ValidationError, match=r"zrep.rollback: invalid arguments: snapshot"):
        c.validate(c.ROLLBACK, {"host": "h"})
    # zrep.sync keeps its older forms for the services that call it so.
    rollback = c.validate(c.SYNC, {"host": "h", "fs": "pool/a@zrep_000001"})
    assert isinstance(rollback, c.SyncArgs) and rollback.fs == "pool/a@zrep_000001"
    synconly = c.validate(c.SYNC, {"host": "h", "fs": "pool/a", "snapshot": False})
    assert isinstance(synconly, c.SyncArgs)
    assert requests.narrow(requests.SynconlyRequest, synconly).model_dump() == {
        "fs": "pool/a", "force": False, "resume": None, "ignore_pause": False,
    }  # fmt: skip


# ---- a timeout on every control command ---------------------------------------------------


def test_the_command_timeout_is_a_setting_and_must_be_sensible() -> None:
    def timeout(value: str | None) -> float:
        env = {"ZREPQ_CONFIG": "none"}
        if value is not None:
            env["ZREPQ_COMMAND_TIMEOUT"] = value
        return load(env).engine_config().command_timeout

    assert timeout(None) == 600
    assert timeout("2.5") == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="ZREPQ_COMMAND_TIMEOUT"):
            timeout(bad)
    with pytest.raises(ConfigError, match="ZREPQ_COMMAND_TIMEOUT"):
        EngineConfig(command_timeout=0)


def test_a_hung_zfs_command_is_stopped_and_reported_retryable(tmp_path: Path) -> None:
    fake = tmp_path / "zfs"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    transport = SshTransport("hosta", local_env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    config = EngineConfig(command_timeout=0.3)
    try:
        with pytest.raises(CommandTimedOut) as info:
            run(Context(transport, config), requests.LastsentRequest(fs="pool/fs"))
    finally:
        transport.close()
    err = info.value
    assert err.retryable and err.host == "hosta" and err.kind == "timeout"
    assert err.argv[:2] == ("zfs", "get")
    assert "hosta" in err.message and "timed out after 0.3s" in err.message
    assert "zfs get -H -p -d 1 -t snapshot" in err.message  # the argv, as one could paste it
    assert not isinstance(err, DatasetMissing)
