"""`load`: read the file and the environment once, validate them as a whole, or say what is
wrong with every key, named as the admin wrote it.

    invalid configuration (/etc/zrepq/zrepq.toml and environment):
      [worker] concurency in /etc/zrepq/zrepq.toml: unknown key (did you mean concurrency?)
      ZREPQ_LEASE_TTL: Input should be a valid number, ... (got 'soon')
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast, overload

from pydantic import ValidationError as SchemaError

from workers.engine.config import shell_words
from workers.engine.errors import ConfigError
from workers.settings.sections import FLEET_TABLES, WorkerFile
from workers.settings.settings import Settings
from workers.settings.sources import EnvSource, config_path, environ, merge, read_file, retired
from workers.settings.zrep import checked_engine_config

F = TypeVar("F", bound=WorkerFile)

_SECRET_KEYS = {"password", "sentinel_password"}


@overload
def load(
    env: Mapping[str, str] | None = None, path: str | Path | None = None
) -> Settings[WorkerFile]: ...
@overload
def load(
    env: Mapping[str, str] | None = None, path: str | Path | None = None, *, model: type[F]
) -> Settings[F]: ...
def load(
    env: Mapping[str, str] | None = None,
    path: str | Path | None = None,
    *,
    model: type[WorkerFile] = WorkerFile,
) -> Settings[Any]:
    """The settings `model` reads, from the file and `env` (default: this process's); raise
    `ConfigError` listing every bad key. The fleet's other tables are accepted unread."""
    source_env = environ(env)
    file = Path(path) if path is not None else config_path(source_env)
    raw = read_file(model, file)
    problems = retired(source_env)
    _check_tables(raw, model, file, problems)
    env_source = EnvSource(model, source_env, model.env_names())
    merged = merge(raw, env_source())
    problems += env_source.problems
    origin = env_source.origin
    try:
        tables = model(**merged)
    except SchemaError as e:
        problems += _schema_problems(e, model, file, origin, source_env)
        raise ConfigError(_report(problems, file)) from None

    def where(table: str, key: str) -> str:
        return _where(file, table, key, origin.get((table, key)))

    problems += _cross_checks(tables, where)
    problems += _word_checks(tables, source_env, where)
    engine = checked_engine_config(
        tables.zrep, source_env, lambda key: where("zrep", key), problems
    )
    if problems or engine is None:
        raise ConfigError(_report(problems, file))
    engine = replace(engine, command_timeout=tables.worker.command_timeout)
    return Settings(model=tables, path=file, source_env=source_env, engine=engine)


def _check_tables(
    raw: dict[str, Any], model: type[WorkerFile], file: Path | None, problems: list[str]
) -> None:
    """Drop from `raw` what `model` must not validate: unknown tables (a problem each), values
    that are not tables (a problem each), and the fleet's tables other processes read."""
    others = model.other_tables()
    for table in list(raw):
        if table not in FLEET_TABLES:
            problems.append(
                f"[{table}] in {file}: unknown table{_suggest(table, list(FLEET_TABLES))}; "
                f"known: {', '.join(FLEET_TABLES)}"
            )
            raw.pop(table)
        elif not isinstance(raw[table], dict):
            problems.append(f"{table} in {file}: must be a table ([{table}])")
            raw.pop(table)
        elif table in others:
            raw.pop(table)


def _schema_problems(
    e: SchemaError,
    model: type[WorkerFile],
    file: Path | None,
    origin: dict[tuple[str, str], str],
    env: Mapping[str, str],
) -> list[str]:
    problems = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        table = loc[0] if loc else "?"
        key = ".".join(loc[1:]) or table
        env_name = origin.get((table, loc[1] if len(loc) > 1 else ""))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            section = getattr(model.model_fields.get(table), "annotation", None)
            known = list(getattr(section, "model_fields", {}))
            msg = f"unknown key{_suggest(loc[-1], known)}"
        shown = ""
        if env_name is not None and loc[-1] not in _SECRET_KEYS:
            shown = f" (got {env[env_name]!r})"
        problems.append(f"{_where(file, table, key, env_name)}: {msg}{shown}")
    return problems


def _cross_checks(tables: WorkerFile, where: Any) -> list[str]:
    """What the schema cannot see: keys that only make sense together, files that exist."""
    problems: list[str] = []
    b = tables.broker
    sentinel = bool(b.sentinels) or b.url.startswith("sentinel://")
    if sentinel and not b.sentinel_master:
        problems.append(
            f"{where('broker', 'sentinel_master')}: required with Redis Sentinel "
            "(the name of the master the sentinels watch)"
        )
    if b.password is not None and b.password_file is not None:
        problems.append(f"{where('broker', 'password_file')}: give password or password_file")
    if b.password_file is not None:
        try:
            b.password_file.read_text()
        except OSError as e:
            problems.append(f"{where('broker', 'password_file')}: cannot read it: {e}")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        p = getattr(b, key)
        if p is not None and not p.exists():
            problems.append(f"{where('broker', key)}: {p} does not exist")
    ssh = tables.ssh
    for key in ("config", "identity", "known_hosts"):
        p = cast(Path | None, getattr(ssh, key))
        if p is not None and not p.expanduser().exists():
            problems.append(f"{where('ssh', key)}: {p} does not exist")
    sg = tables.signing
    for key in ("key", "policy"):
        p = cast(Path | None, getattr(sg, key))
        if p is not None and not p.is_file():
            problems.append(f"{where('signing', key)}: {p} does not exist")
    if sg.trusted is not None and not sg.trusted.is_dir():
        problems.append(f"{where('signing', 'trusted')}: {sg.trusted} is not a directory")
    return problems


def _word_checks(tables: WorkerFile, env: Mapping[str, str], where: Any) -> list[str]:
    """The settings split into argv only when a command runs: split them now, so a bad one
    stops the process at start, named, instead of failing a task later."""
    problems: list[str] = []
    checks = (
        ("SSH", env.get("SSH", "")),
        (where("worker", "remote_command"), tables.worker.remote_command),
    )
    for name, text in checks:
        try:
            shell_words(name, text)
        except ConfigError as e:
            problems.append(e.message)
    return problems


def _where(path: Path | None, table: str, key: str, env_name: str | None) -> str:
    if env_name is not None:
        return env_name
    return f"[{table}] {key} in {path}" if path else f"[{table}] {key}"


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _report(problems: list[str], file: Path | None) -> str:
    head = "invalid configuration" + (f" ({file} and environment)" if file else " (environment)")
    return head + ":\n  " + "\n  ".join(problems)
