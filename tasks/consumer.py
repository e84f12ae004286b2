"""The worker's broker consumer: Celery's, surviving a broker that goes away mid-task.

Celery 5.7 closes the broken broker connection when it is lost (after `collect()` released
part of it). With tasks in flight (acks-late, unacked), closing the channel restores the
unacked messages through the connection `collect()` may already have released, and kombu
raises `AttributeError` there (`'NoneType' object has no attribute 'hostname'`), which
`ignore_errors` does not cover: the consumer calls it unrecoverable and the worker exits. We
saw it when Redis restarted under a running `sync all` (tests/faults/test_faults_redis.py),
intermittently. Nothing is lost by going on: the unacked messages stay in Redis's unacked
index and are restored by the reconnected consumer (visibility timeout), as after a crash.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc: Any) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as e:
            log.warning(
                "the lost broker connection could not be closed cleanly (%r); reconnecting", e
            )
            self.connection = None
