"""The settings of the fleet's tools: every table of the file, [flower], [metrics] and
[producer] included.

`zrepq` (the CLI, `zrepq metrics`, `zrepq config`) and the Python API read the whole file,
so `zrepq config` checks every table a fleet's processes read. They read it once per
process: the producer's Celery app is built from these settings (`producer_app`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, cast
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from celery import Celery
from pydantic import Field, SecretStr, field_validator, model_validator

from tasks.app import make_app
from tasks.app import settings_of as app_settings_of
from tasks.settings import AppFile, Env, HostName, Section, Settings, load

DEFAULT_METRICS_PORT = 9478


class FlowerSection(Section):
    url: Annotated[str | None, Env("ZREPQ_FLOWER_URL")] = None
    username: Annotated[str | None, Env("ZREPQ_FLOWER_USER")] = None
    password: Annotated[SecretStr | None, Env("ZREPQ_FLOWER_PASSWORD")] = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"{v!r}: Flower's address is an http:// or https:// URL")
        return v.rstrip("/") if v else None

    # Flower's basic auth is a list of `user:password` separated by commas (`--basic-auth`):
    # a `:` in the name or a `,` in either would make other credentials than the ones meant.
    @field_validator("username")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and (not v or ":" in v or "," in v):
            raise ValueError("Flower's user name must be non-empty, without ':' or ','")
        return v

    @field_validator("password")
    @classmethod
    def _password(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and (not v.get_secret_value() or "," in v.get_secret_value()):
            raise ValueError("Flower's password must be non-empty, without ','")
        return v

    @model_validator(mode="after")
    def _both(self) -> FlowerSection:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (Flower's basic auth)")
        return self

    def basic_auth(self) -> str | None:
        """Flower's `--basic-auth` value (`user:password`), None without credentials."""
        if self.username is None or self.password is None:
            return None
        return f"{self.username}:{self.password.get_secret_value()}"


class MetricsSection(Section):
    address: Annotated[str, Env("ZREPQ_METRICS_ADDRESS")] = "127.0.0.1"
    port: Annotated[int, Env("ZREPQ_METRICS_PORT")] = Field(
        default=DEFAULT_METRICS_PORT, ge=1, le=65535
    )
    status_interval: Annotated[float, Env("ZREPQ_METRICS_STATUS_INTERVAL")] = Field(
        default=300.0, ge=0
    )


class ProducerSection(Section):
    default_host: Annotated[HostName, Env("ZREPQ_DEFAULT_HOST")] = None


class ProducerFile(AppFile):
    """Every table of the fleet's file."""

    flower: FlowerSection = Field(default_factory=FlowerSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    producer: ProducerSection = Field(default_factory=ProducerSection)


ProducerSettings = Settings[ProducerFile]

_OF_APP: WeakKeyDictionary[Celery, ProducerSettings] = WeakKeyDictionary()


def load_producer(env: Mapping[str, str] | None = None) -> ProducerSettings:
    """This process's settings (`env`: default, the process's environment)."""
    return load(env, model=ProducerFile)


def producer_app(env: Mapping[str, str] | None = None) -> Celery:
    """A Celery app for sending, built from the producer's settings (`env`: default, this
    process's environment)."""
    cfg = load_producer(env)
    app = make_app(config=cfg)
    _OF_APP[app] = cfg
    return app


@lru_cache(maxsize=1)
def default_app() -> Celery:
    """This process's producer app, built once (what `Producer()` sends with)."""
    return producer_app()


def settings_of(app: Celery) -> ProducerSettings:
    """The producer's settings of `app`: those it was built from, or, for an app built by
    `tasks.app.make_app`, the same file and environment read for the producer's tables."""
    cfg = app_settings_of(app)
    if isinstance(cfg.model, ProducerFile):
        return cast(ProducerSettings, cfg)
    known = _OF_APP.get(app)
    if known is None:
        known = _OF_APP[app] = load(cfg.source_env, cfg.path, model=ProducerFile)
    return known
