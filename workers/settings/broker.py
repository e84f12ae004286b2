"""The [broker] Redis, reached the same way by Celery, redbeat and zrepq's own keys.

Redis is reached as `redis://`, `rediss://` (TLS), `unix://`, or through Redis Sentinel
(`sentinels = ["h1:26379", ...]` + `sentinel_master`), which becomes Celery's `sentinel://`
broker transport, a redbeat sentinel URL (`tasks/app.py`) and a redis-py `Sentinel` client
for zrepq's own keys (leases, host registry, sync records).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from workers.settings.sections import BrokerSection

# What goes over the broker, and how a lost connection is retried.
WIRE: dict[str, Any] = {
    # JSON only: a pickle from the queue would be code execution on a storage host.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
    # A result written while Redis restarts is retried, not lost: a lost member result
    # would fail the whole `sync all` summary (ChordError) although the syncs ran.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 30,
    "result_backend_max_sleep_between_retries_ms": 2000,
}


@dataclass(frozen=True)
class Broker:
    """URLs, TLS and Sentinel options, and clients, from one [broker] table."""

    section: BrokerSection

    @property
    def sentinel(self) -> bool:
        return bool(self.section.sentinels) or self.section.url.startswith("sentinel://")

    def password(self) -> str | None:
        b = self.section
        if b.password is not None:
            return b.password.get_secret_value()
        if b.password_file is not None:
            return b.password_file.read_text().strip()
        return None

    def sentinel_password(self) -> str | None:
        secret = self.section.sentinel_password
        return None if secret is None else secret.get_secret_value()

    def sentinel_nodes(self) -> list[tuple[str, int]]:
        nodes = list(self.section.sentinels)
        if not nodes:
            for part in self.section.url.split(";"):
                p = urlsplit(part.strip())
                nodes.append(f"{p.hostname}:{p.port or 26379}")
        out = []
        for n in nodes:
            host, _, port = n.rpartition(":")
            out.append((host, int(port)))
        return out

    def db(self) -> int:
        """The database number of the (first) broker URL."""
        return int((urlsplit(self.section.url.split(";")[0]).path or "/0").strip("/") or 0)

    def with_auth(self, url: str) -> str:
        """`url` with the configured username/password, unless it carries its own."""
        password = self.password()
        if not password and not self.section.username:
            return url
        parts = urlsplit(url)
        if parts.password or parts.username or parts.scheme == "unix":
            return url
        user = quote(self.section.username or "", safe="")
        cred = f"{user}:{quote(password or '', safe='')}@" if password else f"{user}@"
        return urlunsplit(parts._replace(netloc=cred + parts.netloc))

    def first_url(self) -> str:
        """The first broker URL, with credentials (redbeat and zrepq's own client use it)."""
        return self.with_auth(self.section.url.split(";")[0].strip())

    def url(self) -> str:
        """Celery's broker URL (`sentinel://...;sentinel://...` with sentinels)."""
        if self.section.sentinels:
            db = urlsplit(self.section.url).path or "/0"
            return ";".join(
                self.with_auth(f"sentinel://{h}:{p}{db}") for h, p in self.sentinel_nodes()
            )
        return ";".join(self.with_auth(u.strip()) for u in self.section.url.split(";"))

    def backend_url(self) -> str:
        if self.section.result_backend:
            return ";".join(
                self.with_auth(u.strip()) for u in self.section.result_backend.split(";")
            )
        return self.url()

    def ssl_options(self) -> dict[str, Any] | None:
        b = self.section
        if not (b.url.startswith("rediss://") or (b.result_backend or "").startswith("rediss://")):
            return None
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

    def transport_options(self) -> dict[str, Any]:
        b = self.section
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
                opts["sentinel_kwargs"] = {"password": self.sentinel_password()}
        return opts

    def celery(self) -> dict[str, Any]:
        """Celery's settings for talking to this broker: where the queues and the results
        are, how to reach them, and the wire format (the worker's app adds how tasks run,
        `tasks/app.py`; `zrepq-worker --check` uses these alone)."""
        transport = self.transport_options()
        conf: dict[str, Any] = {
            **WIRE,
            "broker_url": self.url(),
            "result_backend": self.backend_url(),
            "broker_transport_options": transport,
            "result_backend_transport_options": dict(transport),
            # Redis emulates acks: a message unacked for `visibility_timeout` is delivered
            # again, even while the first run goes on. A sync can take hours, so the timeout
            # must be longer than the longest one; a duplicate that still slips through meets
            # the lease and is reported as a duplicate, not run twice. (Set in all three
            # places Celery reads it.)
            "visibility_timeout": self.section.visibility_timeout,
            "result_expires": self.section.result_expires,
        }
        ssl_opts = self.ssl_options()
        if ssl_opts is not None:
            conf["broker_use_ssl"] = dict(ssl_opts)
            conf["redis_backend_use_ssl"] = dict(ssl_opts)
        return conf

    def client(self, *, socket_timeout: float | None = None) -> Any:
        """A redis-py client on the broker's Redis, for zrepq's own keys."""
        import redis
        from redis.sentinel import Sentinel

        b = self.section
        timeout = socket_timeout or min(b.socket_timeout, 10.0)
        if self.sentinel:
            skw: dict[str, Any] = {"socket_timeout": timeout}
            if b.sentinel_password is not None:
                skw["password"] = self.sentinel_password()
            sentinel = Sentinel(
                self.sentinel_nodes(),
                sentinel_kwargs=skw,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                password=self.password(),
                username=b.username,
                db=self.db(),
            )
            return sentinel.master_for(str(b.sentinel_master))
        url = self.first_url()
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 25,
        }
        ssl_opts = self.ssl_options()
        if ssl_opts is not None and url.startswith("rediss://"):
            kwargs.update(ssl_opts)
        return redis.Redis.from_url(url, **kwargs)
