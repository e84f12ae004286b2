"""The worker's consumer goes on reconnecting where Celery 5.7's would exit (tasks/consumer.py)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.utils.imports import symbol_by_name
from celery.worker.consumer import Consumer as CeleryConsumer

from tasks.app import make_app
from tasks.consumer import Consumer


def test_the_app_runs_its_workers_with_zrepqs_consumer() -> None:
    app = make_app({"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert symbol_by_name(app.conf.worker_consumer) is Consumer


def test_a_lost_connection_that_kombu_cannot_close_is_dropped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def half_released(self: Any, exc: Any) -> None:
        self.connection = "closing"
        raise AttributeError("'NoneType' object has no attribute 'hostname'")

    monkeypatch.setattr(CeleryConsumer, "on_connection_error_after_connected", half_released)
    consumer = Consumer.__new__(Consumer)  # no broker: only the error path is exercised
    consumer.on_connection_error_after_connected(ConnectionError("Connection closed by server."))
    assert consumer.connection is None


def test_other_errors_still_reach_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, exc: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(CeleryConsumer, "on_connection_error_after_connected", broken)
    with pytest.raises(OSError, match="disk full"):
        Consumer.__new__(Consumer).on_connection_error_after_connected(ConnectionError())
