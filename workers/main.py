"""`zrepq-worker`: start the Celery worker for this storage host, or check that it works.

It consumes only this host's queue (`zrepq.host.<host>`), sends events (Flower), and its
concurrency caps how many sends run at once on this host. The app is named by its import
string, as `celery -A` does, so starting the worker imports nothing of `tasks`.

Settings (`workers.settings`) are read and validated before anything starts: a bad key
stops the worker with a message naming it, and exit status 78 (EX_CONFIG), which the systemd
unit treats as "do not restart". The Celery process it becomes reads them again, from the
same file and environment, once, when it loads the app (`tasks/app.py`): nothing is handed
over through the environment.

`zrepq-worker --check` is the liveness probe (systemd timer, container health check): the
worker's node must answer a ping, consume this host's queue, and run a probe task sent
through that queue (unless every pool slot is busy with real work). Workers have been seen
to keep answering pings after a Redis reconnect while consuming nothing; the probe catches
that. It sends the probe by name from a bare Celery client on the [broker] settings.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery

from workers.auth.policy import Policy, PolicyError
from workers.auth.signing import startup_problem
from workers.engine.errors import ConfigError, ValidationError
from workers.engine.names import validate_host
from workers.keys import PROBE_TASK, node_name, queue_name
from workers.settings import EX_CONFIG, Settings, WorkerFile, load

EX_UNAVAILABLE = 69  # the check failed: the worker is not doing its job
APP = "tasks.app"  # zrepq's Celery app, by import string (`celery -A`)


def celery_argv(*args: str) -> list[str]:
    """The command line of a Celery process on zrepq's app: `celery -A tasks.app ARGS`."""
    return [sys.executable, "-m", "celery", "-A", APP, *args]


def worker_argv(
    host: str, concurrency: int, extra: Sequence[str] = (), loglevel: str | None = None
) -> list[str]:
    return celery_argv(
        "worker",
        "-Q",
        queue_name(host),
        "-n",
        node_name(host),
        "-E",  # task events: Flower shows every task and its progress
        "-c",
        str(concurrency),
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        loglevel or os.environ.get("ZREPQ_LOGLEVEL", "INFO"),
        *extra,
    )


def _settings() -> tuple[Settings[WorkerFile], str]:
    try:
        cfg = load()
        host = cfg.host()
        validate_host(host)
        sg = cfg.model.signing
        problem = startup_problem(sg.required, sg.trusted)
        if problem is None:
            Policy.load(sg.policy)  # a bad policy stops the worker here, naming the problem
    except (ConfigError, ValidationError) as e:
        print(f"zrepq-worker: {e.message}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    except PolicyError as e:
        problem = str(e)
    if problem is not None:
        print(f"zrepq-worker: {problem}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    return cfg, host


def check(cfg: Settings[Any], host: str, timeout: float | None = None) -> tuple[bool, str]:
    """Is this host's worker alive and consuming its queue? (ok, one line saying why)."""
    timeout = timeout or cfg.model.worker.check_timeout
    app = Celery("zrepq-check", set_as_current=False)
    app.conf.update(cfg.broker.celery())
    node, queue = node_name(host), queue_name(host)
    try:
        replies = app.control.ping(destination=[node], timeout=min(5.0, timeout)) or []
        if not any(node in r for r in replies):
            return False, f"{node} did not answer a ping: the worker is down or cut off"
        insp = app.control.inspect(destination=[node], timeout=min(5.0, timeout))
        queues: dict[str, Any] = insp.active_queues() or {}
        names = [q.get("name") for q in queues.get(node) or []]
        if queue not in names:
            return False, f"{node} answers but does not consume {queue} (it consumes {names})"
        res = app.send_task(
            PROBE_TASK,
            kwargs={"host": host},
            queue=queue,
            expires=timeout,
            retry=False,
        )
        try:
            res.get(timeout=timeout, propagate=True)
            return True, f"{node} consumes {queue} (probe ran)"
        except Exception as exc:  # a timeout or a failed probe
            active: dict[str, Any] = insp.active() or {}
            stats: dict[str, Any] = insp.stats() or {}
            busy = len(active.get(node) or [])
            slots = int(stats.get(node, {}).get("pool", {}).get("max-concurrency", 0) or 0)
            if slots and busy >= slots:
                res.revoke()
                return True, f"{node} is busy ({busy} of {slots} slots); probe not run"
            return False, (
                f"{node} answers pings but did not run a probe from {queue} within "
                f"{timeout:g} s ({type(exc).__name__}: {exc}); {busy} task(s) active"
            )
        finally:
            res.forget()
    except OSError as e:
        return False, f"cannot reach the broker: {e}"
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cfg, host = _settings()
    if args[:1] == ["--check"]:
        t0 = time.monotonic()
        ok, why = check(cfg, host)
        print(
            f"zrepq-worker --check: {'ok' if ok else 'FAILED'}: {why} "
            f"({time.monotonic() - t0:.1f} s)"
        )
        sys.exit(0 if ok else EX_UNAVAILABLE)
    if args[:1] == ["--print-config"]:
        print(
            f"host={host} concurrency={cfg.concurrency(host)} queue={queue_name(host)} "
            f"config={cfg.path or '-'}"
        )
        sys.exit(0)
    argv_ = worker_argv(host, cfg.concurrency(host), args, cfg.model.worker.loglevel)
    os.execv(argv_[0], argv_)  # noqa: S606 (argv list; no shell wanted)


if __name__ == "__main__":
    main()
