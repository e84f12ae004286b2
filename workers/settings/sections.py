"""The tables of zrepq's configuration file that the storage hosts read, typed.

One file serves the whole fleet (`/etc/zrepq/zrepq.toml`): the tables here are the worker's
and `zrepq-local`'s ([broker], [worker], [locks], [hosts.NAME], [ssh], [zrep]); the others
([scheduler], [flower], [metrics], [producer]) are typed where their readers live
(`tasks/settings.py`, `producer/settings.py`). A worker accepts those tables without reading
them; a table that nobody reads is an error (`FLEET_TABLES`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from workers.engine.errors import ValidationError
from workers.engine.names import validate_host
from workers.filelock import DEFAULT_LOCK_DIR

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

# Every table of the fleet's file, in the order `zrepq config` shows them and an unknown
# table's message lists them.
FLEET_TABLES = (
    "broker",
    "worker",
    "locks",
    "hosts",
    "ssh",
    "zrep",
    "flower",
    "scheduler",
    "metrics",
    "producer",
)


def _host_name(name: str | None) -> str | None:
    if name:
        try:
            validate_host(name)
        except ValidationError as e:
            raise ValueError(e.message) from None
    return name or None


# An optional host name: validated like every name that reaches a command line.
HostName = Annotated[str | None, AfterValidator(_host_name)]


class Section(BaseModel):
    """One table: unknown keys are errors, values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSection(Section):
    url: str = DEFAULT_BROKER
    result_backend: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sentinels: list[str] = Field(default_factory=list)
    sentinel_master: str | None = None
    sentinel_password: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_verify: Literal["required", "optional", "none"] = "required"
    visibility_timeout: float = Field(default=12 * 3600.0, gt=0)
    result_expires: int = Field(default=7 * 86400, ge=0)
    socket_timeout: float = Field(default=30.0, gt=0)

    @field_validator("url", "result_backend")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for part in v.split(";"):
            scheme = urlsplit(part.strip()).scheme
            if scheme not in ("redis", "rediss", "unix", "sentinel", "socket"):
                raise ValueError(
                    f"{part.strip()!r}: use redis://, rediss:// (TLS), unix:// or sentinel:// "
                    "(or set sentinels and sentinel_master)"
                )
        return v

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, v: list[str]) -> list[str]:
        for item in v:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{item!r}: write each sentinel as HOST:PORT")
        return v


class WorkerSection(Section):
    host: HostName = None
    concurrency: int = Field(default=2, ge=1, le=256)
    loglevel: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    lease_ttl: float = Field(default=60.0, ge=3)
    remote_command: str = "zrepq-local"
    check_timeout: float = Field(default=30.0, gt=0)

    @field_validator("loglevel", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class LocksSection(Section):
    """How `zrepq-local` locks (workers always use Redis leases on the [broker])."""

    dir: Path = Path(DEFAULT_LOCK_DIR)
    redis: bool = False  # take the workers' Redis leases (the [broker] settings) instead

    @field_validator("dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"{str(v)!r}: give an absolute path")
        return v


class HostSection(Section):
    """Per-host overrides in a fleet-wide file: `[hosts.hosta] concurrency = 4`."""

    concurrency: int | None = Field(default=None, ge=1, le=256)


class SshSection(Section):
    config: Path | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    cipher: str | None = None
    args: list[str] = Field(default_factory=list)


class ZrepSection(Section):
    """zrep's own settings; each one is the zrep environment variable in the comment, and each
    key is the `EngineConfig` field of the same name."""

    tag: str | None = None  # ZREPTAG
    save_count: int | None = Field(default=None, ge=1)  # ZREP_SAVE_COUNT
    recursive: bool | None = None  # ZREP_R=-R
    send_flags: str | None = None  # ZREP_SEND_FLAGS
    inc_flag: Literal["-I", "-i"] | None = None  # ZREP_INC_FLAG
    resume: bool | None = None  # ZREP_RESUME
    outfilter: str | None = None  # ZREP_OUTFILTER
    infilter: str | None = None  # ZREP_INFILTER
    skip_expire: bool | None = None  # ZREP_SKIP_EXPIRE
    rename_unsent: bool | None = None  # ZREP_RENAME_UNSENT
    create_flags: str | None = None  # ZREP_CREATE_FLAGS
    init_remote_properties: str | None = None  # ZREP_INIT_REMOTE_PROPERTIES
    dateformat: str | None = None  # ZREP_DATEFORMAT
    rundir: str | None = None  # ZREP_RUNDIR (zrep's global lock file lives there)


def words(value: str) -> list[str]:
    """A variable holding shell words (`ZREPQ_SSH_ARGS`)."""
    return shlex.split(value)


def items(value: str) -> list[str]:
    """A variable holding a list separated by commas or spaces (`ZREPQ_SENTINELS`)."""
    return [x for x in value.replace(",", " ").split() if x]


# How an environment variable's string becomes the table's value (None: as it is).
Parse = Callable[[str], Any] | None
EnvNames = Mapping[str, tuple[str, str, Parse]]


class WorkerFile(BaseSettings):
    """The tables a storage host reads: `zrepq-worker`, the Celery worker, `zrepq-local`.

    A pydantic-settings model over two sources, laid key by key (`workers.settings.load`):
    the TOML file, and over it the environment names in `ENV`. `OTHER_TABLES` are the
    fleet's tables this process does not read (accepted in the file, never validated here).
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, case_sensitive=True)

    broker: BrokerSection = Field(default_factory=BrokerSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    locks: LocksSection = Field(default_factory=LocksSection)
    hosts: dict[str, HostSection] = Field(default_factory=dict)
    ssh: SshSection = Field(default_factory=SshSection)
    zrep: ZrepSection = Field(default_factory=ZrepSection)

    # Environment name -> (table, key, parse). zrep's own names for the [zrep] table are not
    # here: they keep zrep's meaning and are read by `workers.settings.zrep`.
    ENV: ClassVar[EnvNames] = {
        "ZREPQ_BROKER_URL": ("broker", "url", None),
        "ZREPQ_RESULT_BACKEND": ("broker", "result_backend", None),
        "ZREPQ_REDIS_USERNAME": ("broker", "username", None),
        "ZREPQ_REDIS_PASSWORD": ("broker", "password", None),
        "ZREPQ_REDIS_PASSWORD_FILE": ("broker", "password_file", None),
        "ZREPQ_SENTINELS": ("broker", "sentinels", items),
        "ZREPQ_SENTINEL_MASTER": ("broker", "sentinel_master", None),
        "ZREPQ_SENTINEL_PASSWORD": ("broker", "sentinel_password", None),
        "ZREPQ_REDIS_TLS_CA": ("broker", "tls_ca_file", None),
        "ZREPQ_REDIS_TLS_CERT": ("broker", "tls_cert_file", None),
        "ZREPQ_REDIS_TLS_KEY": ("broker", "tls_key_file", None),
        "ZREPQ_REDIS_TLS_VERIFY": ("broker", "tls_verify", None),
        "ZREPQ_VISIBILITY_TIMEOUT": ("broker", "visibility_timeout", None),
        "ZREPQ_RESULT_EXPIRES": ("broker", "result_expires", None),
        "ZREPQ_HOST": ("worker", "host", None),
        "ZREPQ_CONCURRENCY": ("worker", "concurrency", None),
        "ZREPQ_LOGLEVEL": ("worker", "loglevel", None),
        "ZREPQ_LEASE_TTL": ("worker", "lease_ttl", None),
        "ZREPQ_REMOTE_COMMAND": ("worker", "remote_command", None),
        "ZREPQ_CHECK_TIMEOUT": ("worker", "check_timeout", None),
        "ZREPQ_LOCK_DIR": ("locks", "dir", None),
        "ZREPQ_LOCK_REDIS": ("locks", "redis", None),
        "ZREPQ_SSH_CONFIG": ("ssh", "config", None),
        "ZREPQ_SSH_USER": ("ssh", "user", None),
        "ZREPQ_SSH_PORT": ("ssh", "port", None),
        "ZREPQ_SSH_IDENTITY": ("ssh", "identity", None),
        "ZREPQ_SSH_KNOWN_HOSTS": ("ssh", "known_hosts", None),
        "ZREPQ_SSH_ACCEPT_NEW": ("ssh", "accept_new", None),
        "ZREPQ_SSH_CIPHER": ("ssh", "cipher", None),
        "ZREPQ_SSH_ARGS": ("ssh", "args", words),
    }

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, v: dict[str, HostSection]) -> dict[str, HostSection]:
        for name in v:
            _host_name(name)
        return v

    @classmethod
    def other_tables(cls) -> tuple[str, ...]:
        """The fleet's tables this model does not read."""
        return tuple(t for t in FLEET_TABLES if t not in cls.model_fields)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load` reads the file and the environment itself, keeping where each value came
        # from for its messages; the model validates what it is given and reads nothing.
        return (init_settings,)
