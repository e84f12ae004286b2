"""`zrepq metrics`: a Prometheus exporter for what Flower's `/metrics` does not know.

Flower exports Celery's view (events, task runtimes, workers online). zrepq's own view is
per dataset: when did it last sync, how much did it send, how far behind is the standby, how
often has it failed. This process serves it on `[metrics] address:port` (`/metrics`), reading
at every scrape the workers' sync records and queue lengths in Redis, and every
`[metrics] status_interval` seconds (0: never) the workers' `zrep.status` rows and a ping,
which give the lag from the snapshots on disk (so datasets synced by zrep from cron count too).

It keeps no state worth keeping: run it anywhere that reaches Redis, restart it at will, run
two for redundancy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from producer.api import Producer
from producer.fleet import alive_hosts, queue_lengths, records, status_rows

log = logging.getLogger(__name__)

_DS = ["tag", "host", "dataset"]


class StatusPoller:
    """Background poll of `zrep.status` on every live host (the on-disk truth)."""

    def __init__(self, producer: Producer, interval: float, timeout: float = 60.0) -> None:
        self.producer = producer
        self.interval = interval
        self.timeout = timeout
        self.rows: list[dict[str, Any]] = []
        self.alive: set[str] = set()
        self.last_poll: float | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def poll_once(self) -> None:
        try:
            hosts = sorted(self.producer.hosts())
            alive = alive_hosts(self.producer)
            rows, errors = status_rows(
                self.producer, [h for h in hosts if h in alive], timeout=self.timeout
            )
            if errors:
                log.warning("status failed on %s", errors)
                self.errors += len(errors)
            with self._lock:
                self.rows, self.alive, self.last_poll = rows, alive, time.time()
        except Exception as e:  # keep polling whatever happens
            self.errors += 1
            log.warning("status poll failed: %s", e)

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self.interval > 0:
            threading.Thread(target=self.run, name="status-poll", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> tuple[list[dict[str, Any]], set[str], float | None]:
        with self._lock:
            return list(self.rows), set(self.alive), self.last_poll


class ZrepqCollector(Collector):
    def __init__(self, producer: Producer, poller: StatusPoller | None = None) -> None:
        self.producer = producer
        self.poller = poller

    def collect(self) -> Iterator[Any]:
        now = time.time()
        up = GaugeMetricFamily("zrepq_exporter_redis_up", "1 if Redis answered this scrape")
        try:
            hosts = sorted(self.producer.hosts())
            recs = records(self.producer)
            queued = queue_lengths(self.producer, hosts)
            up.add_metric([], 1)
        except Exception as e:
            log.warning("scrape: %s", e)
            up.add_metric([], 0)
            yield up
            return
        yield up

        g_hosts = GaugeMetricFamily("zrepq_hosts_registered", "Storage hosts with a worker")
        g_hosts.add_metric([], len(hosts))
        yield g_hosts
        g_q = GaugeMetricFamily(
            "zrepq_queue_messages", "Messages waiting in the host's queue", labels=["host"]
        )
        for h, n in queued.items():
            g_q.add_metric([h], n)
        yield g_q

        last_ok = GaugeMetricFamily(
            "zrepq_sync_last_success_timestamp_seconds",
            "When the last successful sync through the queue ended",
            labels=_DS,
        )
        last_try = GaugeMetricFamily(
            "zrepq_sync_last_attempt_timestamp_seconds",
            "When the last sync attempt through the queue ended",
            labels=_DS,
        )
        last_bytes = GaugeMetricFamily(
            "zrepq_sync_last_bytes", "Bytes sent by the last successful sync", labels=_DS
        )
        last_secs = GaugeMetricFamily(
            "zrepq_sync_last_duration_seconds", "Duration of the last successful sync", labels=_DS
        )
        failures = CounterMetricFamily(
            "zrepq_sync_failures", "Failed syncs (kept in Redis, survives restarts)", labels=_DS
        )
        syncs = CounterMetricFamily("zrepq_syncs", "Successful syncs", labels=_DS)
        consecutive = GaugeMetricFamily(
            "zrepq_sync_consecutive_failures", "Failed syncs since the last success", labels=_DS
        )
        last_failed = GaugeMetricFamily(
            "zrepq_sync_last_failed", "1 if the last sync attempt failed", labels=_DS
        )
        lag_from_records: dict[tuple[str, str, str], float] = {}
        for r in recs:
            labels = [str(r.get("tag")), str(r.get("host")), str(r.get("dataset"))]
            if r.get("last_success"):
                last_ok.add_metric(labels, float(r["last_success"]))
                last_bytes.add_metric(labels, float(r.get("last_bytes") or 0))
                last_secs.add_metric(labels, float(r.get("last_seconds") or 0))
                lag_from_records[(labels[0], labels[1], labels[2])] = now - r["last_success"]
            if r.get("last_attempt"):
                last_try.add_metric(labels, float(r["last_attempt"]))
            failures.add_metric(labels, float(r.get("failures") or 0))
            syncs.add_metric(labels, float(r.get("syncs") or 0))
            consecutive.add_metric(labels, float(r.get("consecutive_failures") or 0))
            last_failed.add_metric(labels, 1.0 if r.get("last_status") == "failed" else 0.0)
        yield from (last_ok, last_try, last_bytes, last_secs, failures, syncs, consecutive)
        yield last_failed

        lag = GaugeMetricFamily(
            "zrepq_replication_lag_seconds",
            "Age of the last snapshot the standby has (from zrep:sent on disk when polled, "
            "else from the last successful sync through the queue)",
            labels=[*_DS, "dest"],
        )
        paused = GaugeMetricFamily("zrepq_dataset_paused", "1 if replication is paused", labels=_DS)
        flagged = GaugeMetricFamily(
            "zrepq_dataset_error", "1 if the dataset carries zrepq's sync error flag", labels=_DS
        )
        seen: set[tuple[str, str, str]] = set()
        rows, alive, last_poll = self.poller.snapshot() if self.poller else ([], set(), None)
        for row in rows:
            key = ("zrep", str(row["host"]), str(row["dataset"]))
            dest = f"{row.get('dest_host')}:{row.get('dest_fs')}"
            if row.get("last_sent_time"):
                lag.add_metric([*key, dest], max(0.0, now - float(row["last_sent_time"])))
                seen.add(key)
            paused.add_metric(list(key), 1.0 if row.get("paused") else 0.0)
            flagged.add_metric(list(key), 1.0 if row.get("error") else 0.0)
        for r in recs:
            key = (str(r.get("tag")), str(r.get("host")), str(r.get("dataset")))
            if key not in seen and key in lag_from_records:
                lag.add_metric([*key, str(r.get("dest", ""))], max(0.0, lag_from_records[key]))
        yield from (lag, paused, flagged)

        if self.poller is not None and self.poller.interval > 0:
            w = GaugeMetricFamily(
                "zrepq_worker_up", "1 if the host's worker answered", labels=["host"]
            )
            for h in hosts:
                w.add_metric([h], 1.0 if h in alive else 0.0)
            yield w
            t = GaugeMetricFamily(
                "zrepq_status_poll_timestamp_seconds", "When zrep.status was last collected"
            )
            t.add_metric([], last_poll or 0)
            yield t
            errs = CounterMetricFamily("zrepq_status_poll_errors", "Failed status polls")
            errs.add_metric([], self.poller.errors)
            yield errs


def serve(producer: Producer, address: str, port: int, status_interval: float) -> None:
    """Serve /metrics until interrupted."""
    registry = CollectorRegistry()
    poller = StatusPoller(producer, status_interval) if status_interval > 0 else None
    registry.register(ZrepqCollector(producer, poller))
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("zrepq metrics on http://%s:%d/metrics", address, port)
    print(f"zrepq metrics: serving http://{address}:{port}/metrics", flush=True)
    if poller is not None:
        poller.start()
    try:
        while thread.is_alive():
            thread.join(3600)
    finally:
        if poller is not None:
            poller.stop()
        server.shutdown()
