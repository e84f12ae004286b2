"""Where settings come from: the TOML file, and over it the environment, key by key.

Both are pydantic-settings sources: the file is read by its `TomlConfigSettingsSource`, the
environment by `EnvSource`, which knows zrepq's own names (`ZREPQ_BROKER_URL` is `[broker]
url`) and remembers which key each variable set, so that a bad value is reported under the
name the admin wrote.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

from workers.engine.errors import ConfigError
from workers.settings.sections import EnvNames

DEFAULT_CONFIG = "/etc/zrepq/zrepq.toml"

# Names zrepq once read and no longer does, with what to use instead: a setting that would
# otherwise be ignored without a word stops the process at start.
RETIRED: dict[str, str] = {
    "ZREPQ_REDIS_URL": (
        "no longer read; for zrepq-local to take the workers' Redis leases set "
        "[locks] redis = true (ZREPQ_LOCK_REDIS=1): it uses the [broker] settings"
    ),
}


def config_path(env: Mapping[str, str]) -> Path | None:
    """The file to read: $ZREPQ_CONFIG (which must exist), else the default if it exists."""
    given = env.get("ZREPQ_CONFIG")
    if given is not None:
        if given.strip().lower() in ("", "none", "-"):
            return None
        return Path(given)
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def read_file(settings_cls: type[BaseSettings], file: Path | None) -> dict[str, Any]:
    """The file's tables as TOML gives them (not validated); `ConfigError` if unreadable."""
    if file is None:
        return {}
    try:
        with file.open("rb"):  # the source skips a file it cannot find: say so instead
            pass
        return TomlConfigSettingsSource(settings_cls, toml_file=file)()
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {file} does not exist (set ZREPQ_CONFIG=none to use "
            "only the environment)"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {file}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file} is not valid TOML: {e}") from None


class EnvSource(PydanticBaseSettingsSource):
    """The variables of `names` found in `env`, as `{table: {key: value}}`.

    `origin` maps each (table, key) set here to its variable. An empty variable means "not
    set", as in zrep's shell.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], env: Mapping[str, str], names: EnvNames
    ) -> None:
        super().__init__(settings_cls)
        self.env = env
        self.names = names
        self.origin: dict[tuple[str, str], str] = {}
        self.problems: list[str] = []  # variables whose text `parse` refused, named

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # values come by table from __call__

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for name, (table, key, parse) in self.names.items():
            value: Any = self.env.get(name)
            if value is None or value == "":
                continue
            if parse is not None:
                try:
                    value = parse(value)
                except ValueError as e:
                    self.problems.append(f"{name}: {e}")
                    continue
            out.setdefault(table, {})[key] = value
            self.origin[(table, key)] = name
        return out


def merge(file: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`file`'s tables with `over`'s keys laid over them one by one."""
    out = dict(file)
    for table, values in over.items():
        below = out.get(table)
        out[table] = {**below, **values} if isinstance(below, dict) else dict(values)
    return out


def retired(env: Mapping[str, str]) -> list[str]:
    return [f"{name}: {why}" for name, why in RETIRED.items() if env.get(name)]


def environ(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if env is None else env)
