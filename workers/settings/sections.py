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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
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
    "signing",
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


def words(value: str) -> list[str]:
    """A variable holding shell words (`ZREPQ_SSH_ARGS`); `ValueError` saying why it cannot
    be split (the caller names the variable)."""
    try:
        return shlex.split(value)
    except ValueError as e:  # "No closing quotation" / "No escaped character"
        raise ValueError(
            f"cannot split {value!r} into words: {str(e).lower()} "
            "(an unbalanced quote or a trailing backslash?)"
        ) from None


def items(value: str) -> list[str]:
    """A variable holding a list separated by commas or spaces (`ZREPQ_SENTINELS`)."""
    return [x for x in value.replace(",", " ").split() if x]


@dataclass(frozen=True)
class Env:
    """A key's environment variable (`url: Annotated[str, Env("ZREPQ_BROKER_URL")]`), and how
    its string becomes the key's value (None: as it is; pydantic converts it)."""

    name: str
    parse: Callable[[str], Any] | None = None


class Section(BaseModel):
    """One table: unknown keys are errors, values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSection(Section):
    url: Annotated[str, Env("ZREPQ_BROKER_URL")] = DEFAULT_BROKER
    result_backend: Annotated[str | None, Env("ZREPQ_RESULT_BACKEND")] = None
    username: Annotated[str | None, Env("ZREPQ_REDIS_USERNAME")] = None
    password: Annotated[SecretStr | None, Env("ZREPQ_REDIS_PASSWORD")] = None
    password_file: Annotated[Path | None, Env("ZREPQ_REDIS_PASSWORD_FILE")] = None
    sentinels: Annotated[list[str], Env("ZREPQ_SENTINELS", items)] = Field(default_factory=list)
    sentinel_master: Annotated[str | None, Env("ZREPQ_SENTINEL_MASTER")] = None
    sentinel_password: Annotated[SecretStr | None, Env("ZREPQ_SENTINEL_PASSWORD")] = None
    tls_ca_file: Annotated[Path | None, Env("ZREPQ_REDIS_TLS_CA")] = None
    tls_cert_file: Annotated[Path | None, Env("ZREPQ_REDIS_TLS_CERT")] = None
    tls_key_file: Annotated[Path | None, Env("ZREPQ_REDIS_TLS_KEY")] = None
    tls_verify: Annotated[
        Literal["required", "optional", "none"], Env("ZREPQ_REDIS_TLS_VERIFY")
    ] = "required"
    visibility_timeout: Annotated[float, Env("ZREPQ_VISIBILITY_TIMEOUT")] = Field(
        default=12 * 3600.0, gt=0
    )
    result_expires: Annotated[int, Env("ZREPQ_RESULT_EXPIRES")] = Field(default=7 * 86400, ge=0)
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
    host: Annotated[HostName, Env("ZREPQ_HOST")] = None
    concurrency: Annotated[int, Env("ZREPQ_CONCURRENCY")] = Field(default=2, ge=1, le=256)
    loglevel: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], Env("ZREPQ_LOGLEVEL")
    ] = "INFO"
    lease_ttl: Annotated[float, Env("ZREPQ_LEASE_TTL")] = Field(default=60.0, ge=3)
    remote_command: Annotated[str, Env("ZREPQ_REMOTE_COMMAND")] = "zrepq-local"
    check_timeout: Annotated[float, Env("ZREPQ_CHECK_TIMEOUT")] = Field(default=30.0, gt=0)
    # Every control command (zfs get/set/snapshot/destroy, the far side's zrepq-local) is
    # bounded by this: a hung pool or host fails the task instead of holding its lease forever.
    command_timeout: Annotated[float, Env("ZREPQ_COMMAND_TIMEOUT")] = Field(
        default=600.0, gt=0, allow_inf_nan=False
    )

    @field_validator("loglevel", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class LocksSection(Section):
    """How `zrepq-local` locks (workers always use Redis leases on the [broker])."""

    dir: Annotated[Path, Env("ZREPQ_LOCK_DIR")] = Path(DEFAULT_LOCK_DIR)
    # Take the workers' Redis leases (the [broker] settings) instead.
    redis: Annotated[bool, Env("ZREPQ_LOCK_REDIS")] = False

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
    config: Annotated[Path | None, Env("ZREPQ_SSH_CONFIG")] = None
    user: Annotated[str | None, Env("ZREPQ_SSH_USER")] = None
    port: Annotated[int | None, Env("ZREPQ_SSH_PORT")] = Field(default=None, ge=1, le=65535)
    identity: Annotated[Path | None, Env("ZREPQ_SSH_IDENTITY")] = None
    known_hosts: Annotated[Path | None, Env("ZREPQ_SSH_KNOWN_HOSTS")] = None
    accept_new: Annotated[bool, Env("ZREPQ_SSH_ACCEPT_NEW")] = False
    cipher: Annotated[str | None, Env("ZREPQ_SSH_CIPHER")] = None
    args: Annotated[list[str], Env("ZREPQ_SSH_ARGS", words)] = Field(default_factory=list)


class ZrepSection(Section):
    """zrep's own settings; each one is the zrep environment variable in the comment, and each
    key is the `EngineConfig` field of the same name. The variables keep zrep's meaning and
    are read by `workers.settings.zrep`, not as `Env` names."""

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
    bookmarks: bool | None = None  # ZREPQ_BOOKMARKS: the replication cursor (zrepq's own)
    decrypt: bool | None = None  # ZREPQ_DECRYPT: send encrypted datasets decrypted (zrepq's)
    recv_unmounted: bool | None = None  # ZREPQ_RECV_UNMOUNTED: receive with -u (zrepq's)
    # ZREPQ_LOCK_MARKS: zrep's lock-pid/lock-time marks set when zrep is installed (zrepq's)
    lock_marks: Literal["auto", "always", "never"] | None = None


class SigningSection(Section):
    """Signed task messages (`workers/auth/signing.py`) and this worker's policy
    (`workers/auth/policy.py`).

    A producer (the CLI, the API, the scheduler, Flower, a worker handing a task on) signs
    with `key` as `identity`; a worker accepts messages signed by the keys in `trusted` and
    runs what `policy` allows. Deny by default: a worker with `required` and no trusted key
    does not start.
    """

    identity: Annotated[str | None, Env("ZREPQ_SIGNING_IDENTITY")] = None  # default: key's name
    key: Annotated[Path | None, Env("ZREPQ_SIGNING_KEY")] = None  # NAME.key (zrepq keygen)
    trusted: Annotated[Path | None, Env("ZREPQ_SIGNING_TRUSTED")] = None  # dir of NAME.pub
    ttl: Annotated[float, Env("ZREPQ_SIGNING_TTL")] = Field(
        default=86400.0, ge=10, allow_inf_nan=False
    )
    required: Annotated[bool, Env("ZREPQ_SIGNING_REQUIRED")] = True
    policy: Annotated[Path | None, Env("ZREPQ_POLICY")] = None


# Environment name -> (table, key, parse).
EnvNames = Mapping[str, tuple[str, str, Callable[[str], Any] | None]]


class WorkerFile(BaseSettings):
    """The tables a storage host reads: `zrepq-worker`, the Celery worker, `zrepq-local`.

    A pydantic-settings model over two sources, laid key by key (`workers.settings.load`):
    the TOML file, and over it each key's environment variable (its `Env`). The fleet's
    tables this process does not read (`other_tables`) are accepted in the file, never
    validated here.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, case_sensitive=True)

    broker: BrokerSection = Field(default_factory=BrokerSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    locks: LocksSection = Field(default_factory=LocksSection)
    hosts: dict[str, HostSection] = Field(default_factory=dict)
    ssh: SshSection = Field(default_factory=SshSection)
    zrep: ZrepSection = Field(default_factory=ZrepSection)
    signing: SigningSection = Field(default_factory=SigningSection)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, v: dict[str, HostSection]) -> dict[str, HostSection]:
        for name in v:
            _host_name(name)
        return v

    @classmethod
    def env_names(cls) -> EnvNames:
        """Every `Env` name of this model's tables (zrep's own names are read apart)."""
        out: dict[str, tuple[str, str, Callable[[str], Any] | None]] = {}
        for table, info in cls.model_fields.items():
            section = info.annotation
            if not (isinstance(section, type) and issubclass(section, Section)):
                continue  # [hosts.NAME]: no environment names
            for key, field in section.model_fields.items():
                for env in (m for m in field.metadata if isinstance(m, Env)):
                    out[env.name] = (table, key, env.parse)
        return out

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
