"""zrepq's settings: one TOML file plus environment variables, validated once, at start.

    /etc/zrepq/zrepq.toml      (or $ZREPQ_CONFIG; ZREPQ_CONFIG=none reads no file)
    environment variables      override the file, key by key

Every key has an environment name: zrepq's own `ZREPQ_*` and zrep's own names for the
`[zrep]` table (`ZREPTAG`, `ZREP_SAVE_COUNT`, ..., which keep exactly zrep's meaning). The
result is checked as a whole, and every problem is reported with the key as the admin wrote
it (`[broker] visibility_timeout in /etc/zrepq/zrepq.toml`, or `ZREPQ_LEASE_TTL`), so a
typo stops the worker at start instead of a sync at 3 a.m.

The rest of zrepq reads settings as an environment mapping (`Settings.env()`): the engine
(`EngineConfig.from_env`), the SSH options and the Celery app all take the same canonical
names, so an environment-only setup, as before this file existed, behaves the same.

Redis is reached as `redis://`, `rediss://` (TLS), `unix://`, or through Redis Sentinel
(`sentinels = ["h1:26379", ...]` + `sentinel_master`), which becomes Celery's `sentinel://`
broker transport, a redbeat sentinel URL and a redis-py `Sentinel` client for zrepq's own
keys (leases, host registry, sync records).
"""

from __future__ import annotations

import difflib
import os
import shlex
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic import ValidationError as SchemaError

from workers.engine.config import EngineConfig
from workers.engine.errors import ConfigError, ValidationError
from workers.engine.names import validate_host
from workers.filelock import DEFAULT_LOCK_DIR

DEFAULT_CONFIG = "/etc/zrepq/zrepq.toml"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_METRICS_PORT = 9478


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSection(_Section):
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


class WorkerSection(_Section):
    host: str | None = None
    concurrency: int = Field(default=2, ge=1, le=256)
    loglevel: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    lease_ttl: float = Field(default=60.0, ge=3)
    remote_command: str = "zrepq-local"
    check_timeout: float = Field(default=30.0, gt=0)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v:
            _valid_host(v)
        return v or None

    @field_validator("loglevel", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class LocksSection(_Section):
    """How `zrepq-local` locks (workers always use Redis leases on the [broker])."""

    dir: Path = Path(DEFAULT_LOCK_DIR)
    redis: bool = False  # take the workers' Redis leases (the [broker] settings) instead

    @field_validator("dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"{str(v)!r}: give an absolute path")
        return v


class HostSection(_Section):
    """Per-host overrides in a fleet-wide file: `[hosts.hosta] concurrency = 4`."""

    concurrency: int | None = Field(default=None, ge=1, le=256)


class SshSection(_Section):
    config: Path | None = None
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    cipher: str | None = None
    args: list[str] = Field(default_factory=list)


class ZrepSection(_Section):
    """zrep's own settings; each one is the zrep environment variable in the comment."""

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


class FlowerSection(_Section):
    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"{v!r}: Flower's address is an http:// or https:// URL")
        return v.rstrip("/") if v else None


class SchedulerSection(_Section):
    lock_timeout: float = Field(default=60.0, ge=5)
    max_interval: float = Field(default=10.0, gt=0)
    key_prefix: str = "zrepq:beat:"


class MetricsSection(_Section):
    address: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_METRICS_PORT, ge=1, le=65535)
    status_interval: float = Field(default=300.0, ge=0)


class ProducerSection(_Section):
    default_host: str | None = None

    @field_validator("default_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v:
            _valid_host(v)
        return v or None


class FileModel(_Section):
    broker: BrokerSection = Field(default_factory=BrokerSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    locks: LocksSection = Field(default_factory=LocksSection)
    hosts: dict[str, HostSection] = Field(default_factory=dict)
    ssh: SshSection = Field(default_factory=SshSection)
    zrep: ZrepSection = Field(default_factory=ZrepSection)
    flower: FlowerSection = Field(default_factory=FlowerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    producer: ProducerSection = Field(default_factory=ProducerSection)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, v: dict[str, HostSection]) -> dict[str, HostSection]:
        for name in v:
            _valid_host(name)
        return v


def _valid_host(name: str) -> None:
    try:
        validate_host(name)
    except ValidationError as e:
        raise ValueError(e.message) from None


def _words(value: str) -> list[str]:
    return shlex.split(value)


def _items(value: str) -> list[str]:
    return [x for x in value.replace(",", " ").split() if x]


# Environment name -> (table, key, how the string becomes the TOML value).
_ENV: dict[str, tuple[str, str, Callable[[str], Any] | None]] = {
    "ZREPQ_BROKER_URL": ("broker", "url", None),
    "ZREPQ_RESULT_BACKEND": ("broker", "result_backend", None),
    "ZREPQ_REDIS_USERNAME": ("broker", "username", None),
    "ZREPQ_REDIS_PASSWORD": ("broker", "password", None),
    "ZREPQ_REDIS_PASSWORD_FILE": ("broker", "password_file", None),
    "ZREPQ_SENTINELS": ("broker", "sentinels", _items),
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
    "ZREPQ_SSH_ARGS": ("ssh", "args", _words),
    "ZREPQ_FLOWER_URL": ("flower", "url", None),
    "ZREPQ_FLOWER_USER": ("flower", "username", None),
    "ZREPQ_FLOWER_PASSWORD": ("flower", "password", None),
    "ZREPQ_BEAT_LOCK_TIMEOUT": ("scheduler", "lock_timeout", None),
    "ZREPQ_BEAT_MAX_INTERVAL": ("scheduler", "max_interval", None),
    "ZREPQ_METRICS_ADDRESS": ("metrics", "address", None),
    "ZREPQ_METRICS_PORT": ("metrics", "port", None),
    "ZREPQ_METRICS_STATUS_INTERVAL": ("metrics", "status_interval", None),
    "ZREPQ_DEFAULT_HOST": ("producer", "default_host", None),
}

# [zrep] key -> zrep's variable. The environment keeps zrep's meaning (read by the engine);
# the file's typed value is turned into what zrep would have in its environment.
_ZREP_ENV: dict[str, str] = {
    "tag": "ZREPTAG",
    "save_count": "ZREP_SAVE_COUNT",
    "recursive": "ZREP_R",
    "send_flags": "ZREP_SEND_FLAGS",
    "inc_flag": "ZREP_INC_FLAG",
    "resume": "ZREP_RESUME",
    "outfilter": "ZREP_OUTFILTER",
    "infilter": "ZREP_INFILTER",
    "skip_expire": "ZREP_SKIP_EXPIRE",
    "rename_unsent": "ZREP_RENAME_UNSENT",
    "create_flags": "ZREP_CREATE_FLAGS",
    "init_remote_properties": "ZREP_INIT_REMOTE_PROPERTIES",
    "dateformat": "ZREP_DATEFORMAT",
    "rundir": "ZREP_RUNDIR",
}

# Names zrepq once read and no longer does, with what to use instead: a setting that would
# otherwise be ignored without a word stops the process at start.
_RETIRED: dict[str, str] = {
    "ZREPQ_REDIS_URL": (
        "no longer read; for zrepq-local to take the workers' Redis leases set "
        "[locks] redis = true (ZREPQ_LOCK_REDIS=1): it uses the [broker] settings"
    ),
}

_SECRET_KEYS = {"password", "sentinel_password"}


def _zrep_value(key: str, value: Any) -> str:
    if key == "recursive":
        return "-R" if value else ""
    if key == "resume":  # empty would mean "unset", which is on: off must say so
        return "yes" if value else "no"
    if key == "rename_unsent":
        return "yes" if value else "no"
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def config_path(env: Mapping[str, str]) -> Path | None:
    """The file to read: $ZREPQ_CONFIG (which must exist), else the default if it exists."""
    given = env.get("ZREPQ_CONFIG")
    if given is not None:
        if given.strip().lower() in ("", "none", "-"):
            return None
        return Path(given)
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


@dataclass(frozen=True)
class Settings:
    """Validated settings: the merged model, where it came from, and the environment."""

    model: FileModel
    path: Path | None
    source_env: Mapping[str, str]

    # ---- derived values ------------------------------------------------------------------

    @property
    def broker(self) -> BrokerSection:
        return self.model.broker

    @property
    def sentinel(self) -> bool:
        return bool(self.broker.sentinels) or self.broker.url.startswith("sentinel://")

    def password(self) -> str | None:
        b = self.broker
        if b.password is not None:
            return b.password.get_secret_value()
        if b.password_file is not None:
            return b.password_file.read_text().strip()
        return None

    def _sentinel_nodes(self) -> list[tuple[str, int]]:
        nodes = list(self.broker.sentinels)
        if not nodes:
            for part in self.broker.url.split(";"):
                p = urlsplit(part.strip())
                nodes.append(f"{p.hostname}:{p.port or 26379}")
        out = []
        for n in nodes:
            host, _, port = n.rpartition(":")
            out.append((host, int(port)))
        return out

    def _with_auth(self, url: str) -> str:
        """`url` with the configured username/password, unless it carries its own."""
        password = self.password()
        if not password and not self.broker.username:
            return url
        parts = urlsplit(url)
        if parts.password or parts.username or parts.scheme == "unix":
            return url
        user = quote(self.broker.username or "", safe="")
        cred = f"{user}:{quote(password or '', safe='')}@" if password else f"{user}@"
        return urlunsplit(parts._replace(netloc=cred + parts.netloc))

    def broker_url(self) -> str:
        if self.broker.sentinels:
            db = urlsplit(self.broker.url).path or "/0"
            return ";".join(
                self._with_auth(f"sentinel://{h}:{p}{db}") for h, p in self._sentinel_nodes()
            )
        return ";".join(self._with_auth(u.strip()) for u in self.broker.url.split(";"))

    def backend_url(self) -> str:
        if self.broker.result_backend:
            return ";".join(
                self._with_auth(u.strip()) for u in self.broker.result_backend.split(";")
            )
        return self.broker_url()

    def _ssl_options(self) -> dict[str, Any] | None:
        if not (
            self.broker.url.startswith("rediss://")
            or (self.broker.result_backend or "").startswith("rediss://")
        ):
            return None
        b = self.broker
        reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL}.get(
            b.tls_verify, ssl.CERT_NONE
        )
        opts: dict[str, Any] = {"ssl_cert_reqs": reqs}
        if b.tls_ca_file:
            opts["ssl_ca_certs"] = str(b.tls_ca_file)
        if b.tls_cert_file:
            opts["ssl_certfile"] = str(b.tls_cert_file)
        if b.tls_key_file:
            opts["ssl_keyfile"] = str(b.tls_key_file)
        return opts

    def _transport_options(self) -> dict[str, Any]:
        b = self.broker
        opts: dict[str, Any] = {
            "visibility_timeout": b.visibility_timeout,
            "socket_keepalive": True,
            "socket_timeout": b.socket_timeout,
            "socket_connect_timeout": 10,
            "health_check_interval": 25,
            "retry_on_timeout": True,
        }
        if self.sentinel:
            opts["master_name"] = b.sentinel_master
            if b.sentinel_password is not None:
                opts["sentinel_kwargs"] = {"password": b.sentinel_password.get_secret_value()}
        return opts

    def celery(self) -> dict[str, Any]:
        """The Celery settings that depend on configuration (tasks/app.py adds the rest)."""
        b = self.broker
        transport = self._transport_options()
        conf: dict[str, Any] = {
            "broker_url": self.broker_url(),
            "result_backend": self.backend_url(),
            "broker_transport_options": transport,
            "result_backend_transport_options": dict(transport),
            "visibility_timeout": b.visibility_timeout,
            "result_expires": b.result_expires,
            # redbeat: the schedule lives in Redis, under zrepq's prefix; one beat holds the
            # lock, a standby takes over when it expires.
            "redbeat_key_prefix": self.model.scheduler.key_prefix,
            "redbeat_lock_timeout": int(self.model.scheduler.lock_timeout),
            "beat_max_loop_interval": self.model.scheduler.max_interval,
        }
        ssl_opts = self._ssl_options()
        if ssl_opts is not None:
            conf["broker_use_ssl"] = dict(ssl_opts)
            conf["redis_backend_use_ssl"] = dict(ssl_opts)
            conf["redbeat_redis_use_ssl"] = dict(ssl_opts)
        if self.sentinel:
            db = int((urlsplit(b.url.split(";")[0]).path or "/0").strip("/") or 0)
            conf["redbeat_redis_url"] = "redis-sentinel://"
            rb: dict[str, Any] = {
                "sentinels": self._sentinel_nodes(),
                "service_name": b.sentinel_master,
                "db": db,
                "socket_timeout": b.socket_timeout,
            }
            if self.password():
                rb["password"] = self.password()
            if b.sentinel_password is not None:
                rb["sentinel_kwargs"] = {"password": b.sentinel_password.get_secret_value()}
            conf["redbeat_redis_options"] = rb
        else:
            conf["redbeat_redis_url"] = self._with_auth(b.url.split(";")[0].strip())
            conf["redbeat_redis_options"] = {}
        return conf

    def redis(self, *, socket_timeout: float | None = None) -> Any:
        """A redis-py client on the broker's Redis, for zrepq's own keys."""
        import redis
        from redis.sentinel import Sentinel

        timeout = socket_timeout or min(self.broker.socket_timeout, 10.0)
        b = self.broker
        if self.sentinel:
            skw: dict[str, Any] = {"socket_timeout": timeout}
            if b.sentinel_password is not None:
                skw["password"] = b.sentinel_password.get_secret_value()
            db = int((urlsplit(b.url.split(";")[0]).path or "/0").strip("/") or 0)
            sentinel = Sentinel(
                self._sentinel_nodes(),
                sentinel_kwargs=skw,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                password=self.password(),
                username=b.username,
                db=db,
            )
            return sentinel.master_for(str(b.sentinel_master))
        url = self._with_auth(b.url.split(";")[0].strip())
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 25,
        }
        ssl_opts = self._ssl_options()
        if ssl_opts is not None and url.startswith("rediss://"):
            kwargs.update(ssl_opts)
        return redis.Redis.from_url(url, **kwargs)

    def host(self) -> str:
        """This worker's host name: [worker] host, ZREP_SRC_HOST, else `uname -n`."""
        from workers.exec.transport import local_host_name

        return self.model.worker.host or local_host_name(self.source_env)

    def concurrency(self, host: str | None = None) -> int:
        """Parallel tasks on `host`: [hosts.HOST] concurrency, else [worker] concurrency."""
        if "ZREPQ_CONCURRENCY" in self.source_env:
            return self.model.worker.concurrency
        per_host = self.model.hosts.get(host or self.host())
        if per_host is not None and per_host.concurrency is not None:
            return per_host.concurrency
        return self.model.worker.concurrency

    def env(self) -> dict[str, str]:
        """The canonical environment: the source environment plus every file setting."""
        out = dict(self.source_env)
        m = self.model
        if self.path is not None:
            out["ZREPQ_CONFIG"] = str(self.path)
        for name, (table, key, _) in _ENV.items():
            if name in self.source_env:
                continue
            value = getattr(getattr(m, table), key)
            if value is None or (isinstance(value, list) and not value):
                continue
            default = getattr(type(getattr(m, table))(), key)
            if value == default or isinstance(value, SecretStr):
                continue  # secrets stay in the file; every process reads it itself
            if isinstance(value, bool):
                out[name] = "1" if value else ""
            elif isinstance(value, list):
                out[name] = shlex.join(value) if key == "args" else ",".join(value)
            else:
                out[name] = str(value)
        for key, var in _ZREP_ENV.items():
            value = getattr(m.zrep, key)
            if var not in self.source_env and value is not None:
                out[var] = _zrep_value(key, value)
        return out


def _where(path: Path | None, table: str, key: str, env_name: str | None) -> str:
    if env_name is not None:
        return env_name
    return f"[{table}] {key} in {path}" if path else f"[{table}] {key}"


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def load(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Settings:
    """Read the file and the environment; raise `ConfigError` listing every bad key."""
    env = dict(os.environ if env is None else env)
    file = Path(path) if path is not None else config_path(env)
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"configuration file {file} does not exist (set ZREPQ_CONFIG=none to use "
                "only the environment)"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {file}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file} is not valid TOML: {e}") from None
    problems: list[str] = [f"{name}: {why}" for name, why in _RETIRED.items() if env.get(name)]
    tables = list(FileModel.model_fields)
    for table in list(raw):
        if table not in tables:
            problems.append(
                f"[{table}] in {file}: unknown table{_suggest(table, tables)}; "
                f"known: {', '.join(tables)}"
            )
            raw.pop(table)
        elif not isinstance(raw[table], dict):
            problems.append(f"{table} in {file}: must be a table ([{table}])")
            raw.pop(table)
    from_env: dict[tuple[str, str], str] = {}
    for name, (table, key, parse) in _ENV.items():
        if name not in env:
            continue
        value: Any = env[name]
        if value == "":
            continue  # an empty variable means "not set", as in zrep's shell
        if parse is not None:
            value = parse(value)
        raw.setdefault(table, {})[key] = value
        from_env[(table, key)] = name
    try:
        model = FileModel.model_validate(raw)
    except SchemaError as e:
        for err in e.errors():
            loc = [str(p) for p in err["loc"]]
            table = loc[0] if loc else "?"
            key = ".".join(loc[1:]) or table
            env_name = from_env.get((table, loc[1] if len(loc) > 1 else ""))
            where = _where(file, table, key, env_name)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                section = getattr(FileModel.model_fields.get(table), "annotation", None)
                known = list(getattr(section, "model_fields", {}))
                msg = f"unknown key{_suggest(loc[-1], known)}"
            shown = ""
            if env_name is not None and loc[-1] not in _SECRET_KEYS:
                shown = f" (got {env[env_name]!r})"
            problems.append(f"{where}: {msg}{shown}")
        raise ConfigError(_report(problems, file)) from None
    settings = Settings(model=model, path=file, source_env=env)
    problems += _cross_checks(settings, file, from_env)
    if problems:
        raise ConfigError(_report(problems, file))
    return settings


def _cross_checks(
    s: Settings, file: Path | None, from_env: dict[tuple[str, str], str]
) -> list[str]:
    problems: list[str] = []
    b = s.broker

    def where(table: str, key: str) -> str:
        return _where(file, table, key, from_env.get((table, key)))

    if s.sentinel and not b.sentinel_master:
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
    ssh = s.model.ssh
    for key in ("config", "identity", "known_hosts"):
        p = getattr(ssh, key)
        if p is not None and not p.expanduser().exists():
            problems.append(f"{where('ssh', key)}: {p} does not exist")
    # zrep's own settings, checked as the engine will read them.
    engine_env = s.env()
    try:
        EngineConfig.from_env(engine_env)
    except ConfigError as e:
        var = next((v for v in _ZREP_ENV.values() if v in e.message), None)
        zkey = next((k for k, v in _ZREP_ENV.items() if v == var), None)
        if var is not None and zkey is not None and var not in s.source_env and file:
            problems.append(f"[zrep] {zkey} in {file}: {e.message}")
        else:
            problems.append(e.message)
    except ValidationError as e:
        problems.append(
            f"{'ZREPTAG' if 'ZREPTAG' in s.source_env else where('zrep', 'tag')}: {e.message}"
        )
    return problems


def _report(problems: list[str], file: Path | None) -> str:
    head = "invalid configuration" + (f" ({file} and environment)" if file else " (environment)")
    return head + ":\n  " + "\n  ".join(problems)


__all__ = ["DEFAULT_CONFIG", "ConfigError", "FileModel", "Settings", "config_path", "load"]
