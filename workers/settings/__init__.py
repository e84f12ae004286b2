"""zrepq's settings: one TOML file plus environment variables, validated once, at start.

    /etc/zrepq/zrepq.toml      (or $ZREPQ_CONFIG; ZREPQ_CONFIG=none reads no file)
    environment variables      override the file, key by key

Every key has an environment name: zrepq's own `ZREPQ_*` and zrep's own names for the
`[zrep]` table (`ZREPTAG`, `ZREP_SAVE_COUNT`, ..., which keep exactly zrep's meaning). The
result is checked as a whole, and every problem is reported with the key as the admin wrote
it (`[broker] visibility_timeout in /etc/zrepq/zrepq.toml`, or `ZREPQ_LEASE_TTL`), so a
typo stops the worker at start instead of a sync at 3 a.m.

    sections.py   the storage hosts' tables, typed (the fleet's others: tasks/, producer/)
    sources.py    the file and the environment names, as pydantic-settings sources
    load.py       `load()`: both sources, validated, every problem named
    zrep.py       [zrep] + zrep's variables -> the engine's `EngineConfig`
    broker.py     [broker] -> Celery's connection settings and a redis-py client
    settings.py   `Settings`: the typed parts each layer is given
"""

from workers.engine.errors import ConfigError
from workers.settings.load import load
from workers.settings.sections import FLEET_TABLES, WorkerFile
from workers.settings.settings import Settings
from workers.settings.sources import DEFAULT_CONFIG, config_path

EX_CONFIG = 78  # sysexits.h: the exit status of a process stopped by a bad setting

__all__ = [
    "DEFAULT_CONFIG",
    "EX_CONFIG",
    "FLEET_TABLES",
    "ConfigError",
    "Settings",
    "WorkerFile",
    "config_path",
    "load",
]
