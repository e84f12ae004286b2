"""One settings object per process: which tables each process reads, env over file key by key,
the typed parts each layer is given, and that tasks and producers read the file once."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from producer import settings as producer_settings
from producer.settings import ProducerFile, load_producer
from tasks.settings import AppFile
from workers.engine.config import ZREP_VARIABLES
from workers.engine.errors import ConfigError
from workers.settings import FLEET_TABLES, WorkerFile, load

REPO = Path(__file__).resolve().parents[2]


def _file(tmp_path: Path, text: str) -> dict[str, str]:
    cfg = tmp_path / "zrepq.toml"
    cfg.write_text(text)
    return {"ZREPQ_CONFIG": str(cfg)}


def test_each_process_checks_the_tables_it_reads_and_accepts_the_fleets_others(
    tmp_path: Path,
) -> None:
    env = _file(tmp_path, "[worker]\nconcurrency = 3\n[metrics]\nprot = 1\n[scheduler]\n")
    assert load(env).model.worker.concurrency == 3  # a worker never reads [metrics]
    with pytest.raises(ConfigError, match=r"\[metrics\] prot in .*did you mean port\?"):
        load_producer(env)  # `zrepq config` checks every table of the fleet's file
    env = _file(tmp_path, "[scheduler]\nlock_timout = 6\n")
    load(env)
    with pytest.raises(ConfigError, match=r"\[scheduler\] lock_timout in .*lock_timeout\?"):
        load(env, model=AppFile)  # every `celery -A tasks.app` process reads [scheduler]
    env = _file(tmp_path, '[metric]\nport = 1\n[brokr]\nurl = "redis://x"\n')
    for model in (WorkerFile, AppFile, ProducerFile):
        with pytest.raises(ConfigError) as info:
            load(env, model=model)
        assert (
            "[metric] in " in info.value.message and "did you mean metrics?" in info.value.message
        )
        assert "[brokr] in " in info.value.message and "did you mean broker?" in info.value.message


def test_the_fleets_tables_and_documented_names_are_all_read() -> None:
    assert set(ProducerFile.model_fields) == set(FLEET_TABLES)
    names = ProducerFile.env_names()
    assert len(names) == 46  # every ZREPQ_* variable of the fleet's tables
    for name, (table, key, _) in names.items():
        section = ProducerFile.model_fields[table].annotation
        assert key in getattr(section, "model_fields", {}), name
    # The deployment reads docs/configuration.md: every name it documents is read.
    text = (REPO / "docs" / "configuration.md").read_text()
    documented: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("| `["):
            continue
        cell = line.split("|")[2]
        full = ""
        for word in re.findall(r"`([A-Z_]+)`", cell):
            full = word if word.startswith("ZREPQ_") else full.rsplit("_", 1)[0] + word
            documented.add(full)
    assert documented and documented <= set(ProducerFile.env_names()), documented - set(
        ProducerFile.env_names()
    )
    zrep_names = set(re.findall(r"`(ZREP[A-Z_]*)`", text.split("## Keys")[0]))
    assert zrep_names <= set(ZREP_VARIABLES.values()), zrep_names - set(ZREP_VARIABLES.values())


def test_zreps_variables_win_over_the_file_key_by_key_with_zreps_meaning(tmp_path: Path) -> None:
    env = _file(
        tmp_path,
        '[zrep]\ntag = "dr"\nsave_count = 9\nrename_unsent = true\nsend_flags = "-c -L"\n',
    )
    c = load(env).engine_config()
    assert (c.tag, c.save_count, c.inc_flag, c.send_flags) == ("dr", 9, "-i", ("-c", "-L"))
    assert c.rename_unsent
    c = load({**env, "ZREP_SAVE_COUNT": "3", "ZREP_RENAME_UNSENT": ""}).engine_config()
    assert (c.tag, c.save_count) == ("dr", 3)
    assert not c.rename_unsent  # zrep: only "yes" renames; set but empty is no
    assert load({"ZREPQ_CONFIG": "none", "ZREP_R": "-R"}).engine_config().recursive


@pytest.mark.parametrize(
    "toml, env, said",
    [
        ('send_flags = "-X"', {}, r"\[zrep\] send_flags in \S+: ZREP_SEND_FLAGS: '-X'"),
        ("", {"ZREP_SEND_FLAGS": "-X"}, r"^\s+ZREP_SEND_FLAGS: '-X'"),
        ('rundir = "var/run"', {}, r"\[zrep\] rundir in \S+: ZREP_RUNDIR must be an absolute"),
        ('tag = "bad tag"', {}, r"\[zrep\] tag in \S+: invalid"),
        ("save_count = 0", {}, r"\[zrep\] save_count in \S+: Input should be greater"),
    ],
)
def test_a_bad_zrep_setting_is_named_as_the_admin_wrote_it(
    tmp_path: Path, toml: str, env: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load({**_file(tmp_path, f"[zrep]\n{toml}\n"), **env})
    assert re.search(said, info.value.message, re.MULTILINE), info.value.message


@pytest.mark.parametrize(
    ("toml", "env", "said"),
    [
        ("", {"ZREP_SEND_FLAGS": '-c "x'}, "ZREP_SEND_FLAGS: cannot split '-c \"x'"),
        ("", {"ZREP_CREATE_FLAGS": "-o 'a=b"}, "ZREP_CREATE_FLAGS: cannot split"),
        ("", {"ZREP_INIT_REMOTE_PROPERTIES": "a:b='c"}, "ZREP_INIT_REMOTE_PROPERTIES: cannot"),
        ("", {"ZREP_OUTFILTER": 'gzip "-1'}, "ZREP_OUTFILTER: cannot split"),
        ("", {"ZREP_INFILTER": "gzip -d \\"}, "ZREP_INFILTER: cannot split .* no escaped"),
        ("", {"ZREPQ_SSH_ARGS": '-o "A=b'}, "ZREPQ_SSH_ARGS: cannot split"),
        ("", {"SSH": 'ssh -c "aes128-ctr'}, "SSH: cannot split"),
        ("", {"ZREPQ_REMOTE_COMMAND": "zrepq-local 'x"}, "ZREPQ_REMOTE_COMMAND: cannot split"),
        (
            "[zrep]\nsend_flags = '-c \"'",
            {},
            r"\[zrep\] send_flags in \S+: ZREP_SEND_FLAGS: cannot split",
        ),
        ('[worker]\nremote_command = "z \'"', {}, r"\[worker\] remote_command in \S+: cannot"),
    ],
)
def test_an_unbalanced_quote_is_a_configuration_error_naming_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load({**_file(tmp_path, toml + "\n"), **env})
    message = info.value.message
    assert re.search(said, message), message
    assert "(an unbalanced quote or a trailing backslash?)" in message


def test_the_ssh_layer_gets_ssh_options(tmp_path: Path) -> None:
    env = {
        **_file(tmp_path, '[ssh]\nuser = "repl"\nport = 2222\nargs = ["-o", "A=b c"]\n'),
        "SSH": "/usr/bin/ssh -c aes128-ctr",  # zrep's own variable adds its arguments
        "ZREPQ_SSH_ACCEPT_NEW": "yes",
    }
    ssh = load(env).ssh_options()
    assert (ssh.user, ssh.port, ssh.accept_unknown_host_keys) == ("repl", 2222, True)
    assert ssh.extra_ssh_args == ("-c", "aes128-ctr", "-o", "A=b c")
    assert load({**env, "ZREPQ_SSH_ARGS": "-v"}).ssh_options().extra_ssh_args[-1] == "-v"


def test_locks_follow_the_locks_and_worker_tables(tmp_path: Path) -> None:
    env = {**_file(tmp_path, "[worker]\nlease_ttl = 9\n"), "ZREPQ_LOCK_DIR": str(tmp_path)}
    s = load(env)
    files = s.locks("hosta")
    assert type(files).__name__ == "FileLocks" and getattr(files, "directory") == tmp_path  # noqa: B009
    # a client: the worker's Redis leases, with zrepq-local's lock files of this host
    leases: Any = s.locks("hosta", client=s.redis())
    assert type(leases).__name__ == "LeaseAndFile"
    assert type(leases.lease).__name__ == "RedisLocks" and leases.lease.ttl == 9
    assert leases.files.directory == tmp_path
    redis_locks: Any = load({**env, "ZREPQ_LOCK_REDIS": "1"}).locks("hosta")
    assert type(redis_locks.lease).__name__ == "RedisLocks"


def _no_load(*_: Any, **__: Any) -> Any:
    raise AssertionError("settings loaded again")


def test_a_task_builds_its_context_without_reading_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks import contract as c
    from tasks import handlers
    from tasks.app import app, settings_of

    assert settings_of(app) is settings_of(app)  # built once, with the app
    monkeypatch.setattr("tasks.app.load", _no_load)
    monkeypatch.setattr("workers.runtime.load", _no_load)
    host = handlers.this_host()
    task: Any = SimpleNamespace(request=SimpleNamespace(id="t1"))
    for _ in range(3):
        ctx = handlers._context(task, c.validate(c.LIST, {"host": host, "tag": "dr"}), None)
        assert ctx.host == host and ctx.config.tag == "dr"


def test_a_producer_reads_its_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.api import Producer

    calls: list[Any] = []
    real = producer_settings.load

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("model"))
        return real(*args, **kwargs)

    monkeypatch.setattr(producer_settings, "load", counted)
    monkeypatch.setattr("tasks.app.load", _no_load)
    monkeypatch.setenv("ZREPQ_CONFIG", "none")
    monkeypatch.setenv("ZREPQ_DEFAULT_HOST", "hostd")
    producer_settings.default_app.cache_clear()
    try:
        p = Producer()
        assert p.default_host == "hostd"
        assert producer_settings.settings_of(p.app).model.producer.default_host == "hostd"
        Producer()  # the same app, the same settings
        assert calls == [ProducerFile]
    finally:
        producer_settings.default_app.cache_clear()
