"""The engine's settings: the `[zrep]` table, and over it zrep's own environment variables.

zrep's names (`ZREPTAG`, `ZREP_SAVE_COUNT`, ...) keep exactly zrep's meaning: a variable that
is set wins over the file's key of the same setting, and is read as zrep reads it
(`workers.engine.config.zrep_value`). A file key that is a string is zrep's notation too
(`send_flags = "-c -L"`); booleans and numbers are typed. The result is an `EngineConfig`,
checked once, when the settings are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from workers.engine.config import ZREP_VARIABLES, EngineConfig, zrep_value
from workers.engine.errors import ConfigError, ValidationError
from workers.settings.sections import ZrepSection


def engine_config(zrep: ZrepSection, env: Mapping[str, str]) -> EngineConfig:
    """`EngineConfig` from the file's [zrep] table and zrep's variables in `env`."""
    values: dict[str, Any] = {}
    for field, var in ZREP_VARIABLES.items():
        if var in env:
            values[field] = zrep_value(field, env[var])
            continue
        value = getattr(zrep, field, None)
        if isinstance(value, str):
            values[field] = zrep_value(field, value)
        elif value is not None:
            values[field] = value
    return EngineConfig.from_values(values)


def checked_engine_config(
    zrep: ZrepSection,
    env: Mapping[str, str],
    where: Callable[[str], str],
    problems: list[str],
) -> EngineConfig | None:
    """`engine_config`, or None with the problem added, named as the admin wrote it: zrep's
    variable when it came from the environment, else `[zrep] key in FILE` (`where(key)`)."""
    try:
        return engine_config(zrep, env)
    except ConfigError as e:
        field = next((f for f, var in ZREP_VARIABLES.items() if _names(e.message, var)), None)
        from_file = field is not None and ZREP_VARIABLES[field] not in env
        if from_file and field in ZrepSection.model_fields and getattr(zrep, field) is not None:
            problems.append(f"{where(str(field))}: {e.message}")
        else:
            problems.append(e.message)
    except ValidationError as e:  # the tag
        problems.append(f"{'ZREPTAG' if 'ZREPTAG' in env else where('tag')}: {e.message}")
    return None


def _names(message: str, var: str) -> bool:
    """Does `message` name variable `var` (not merely one that starts like it)?"""
    return re.search(rf"\b{re.escape(var)}\b", message) is not None
