"""`zrepq-worker`: start the Celery worker for this storage host.

It consumes only this host's queue (`zrepq.host.<host>`), sends events (Flower), and its
concurrency caps how many sends run at once on this host. The app is named by its import
string, as `celery -A` does, so nothing here imports `tasks`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from workers.engine.errors import ValidationError
from workers.engine.names import validate_host
from workers.exec.transport import local_host_name
from workers.keys import queue_name


def worker_argv(host: str, concurrency: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.app",
        "worker",
        "-Q",
        queue_name(host),
        "-n",
        f"zrepq@{host}",
        "-E",  # task events: Flower shows every task and its progress
        "-c",
        str(concurrency),
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        os.environ.get("ZREPQ_LOGLEVEL", "INFO"),
        *extra,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    host = os.environ.get("ZREPQ_HOST") or local_host_name()
    try:
        validate_host(host)
        concurrency = int(os.environ.get("ZREPQ_CONCURRENCY", "2"))
        if concurrency < 1:
            raise ValueError
    except ValidationError as e:
        sys.exit(f"zrepq-worker: {e}")
    except ValueError:
        sys.exit("zrepq-worker: ZREPQ_CONCURRENCY must be a positive number")
    # The engine names this host the same way (ZREP_SRC_HOST), whatever uname says.
    os.environ["ZREP_SRC_HOST"] = host
    argv_ = worker_argv(host, concurrency, args)
    os.execv(argv_[0], argv_)  # noqa: S606 (argv list; no shell wanted)


if __name__ == "__main__":
    main()
