"""`zrepq-worker` with per-task zfs call timing, for the sync-all benchmark.

    ZREPQ_BENCH_CALLTIME=/path/log.jsonl python -m bench.timed_worker

Exactly `workers.main.main()` (same settings, same Celery argv), except that the final
`exec` of `celery worker` happens in this process, after `bench.calltime` has wrapped the
exec layer. Every `zrep.sync` (and `zrep.synconly`) task then appends one JSON line to
$ZREPQ_BENCH_CALLTIME: `{task_id, fs, pid, start, end, commands, streams, zfs_s, stream_s,
cpu_self, cpu_children}` (wall-clock start/end; CPU seconds of this process and of the
children it reaped).

With ZREPQ_BENCH_PROFILE=/path/prefix, each pool process also runs pyinstrument around its
`zrep.sync` tasks and writes `<prefix>.<pid>.txt` when it exits: where the time goes that the
zfs commands do not explain.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

from bench import calltime

SYNC_TASKS = ("zrep.sync", "zrep.synconly")  # the tasks timed (a sync all's, datapath's)
_started: dict[str, float] = {}
_cpu: dict[str, tuple[float, float]] = {}
_real_execv = os.execv
_profiler: Any = None


def _rusage() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _connect_signals(path: str) -> None:
    from celery.signals import task_postrun, task_prerun

    @task_prerun.connect(weak=False)
    def _pre(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task is not None and task.name in SYNC_TASKS and task_id:
            _started[task_id] = time.time()
            _cpu[task_id] = _rusage()
            calltime.start()
            if _profiler is not None:
                _profiler.start()

    @task_postrun.connect(weak=False)
    def _post(task_id: str | None = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
        if task_id is None or task_id not in _started:
            return
        if _profiler is not None:
            _profiler.stop()
        acc = calltime.stop()
        s0, c0 = _cpu.pop(task_id, (0.0, 0.0))
        s1, c1 = _rusage()
        record = {
            "task_id": task_id,
            "fs": (kwargs or {}).get("fs"),
            "pid": os.getpid(),
            "start": _started.pop(task_id),
            "end": time.time(),
            **acc.to_dict(),
            "cpu_self": s1 - s0,  # this worker process: engine, Celery, paramiko, spawning
            "cpu_children": c1 - c0,  # the local zfs, ssh and filter processes it ran
        }
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)


def _setup_profiler(prefix: str) -> None:
    from celery.signals import worker_process_init, worker_process_shutdown

    @worker_process_init.connect(weak=False)
    def _init(**_: Any) -> None:
        global _profiler
        from pyinstrument import Profiler

        _profiler = Profiler(interval=0.001)

    @worker_process_shutdown.connect(weak=False)
    def _done(**_: Any) -> None:
        if _profiler is not None and _profiler.last_session is not None:
            text = _profiler.output_text(unicode=False, color=False, show_all=False)
            with open(f"{prefix}.{os.getpid()}.txt", "w") as f:
                f.write(text)


def _exec_in_process(path: str, argv: list[str]) -> None:
    """Stands in for `os.execv(python, [python, -m, celery, ...])` in workers.main."""
    if argv[1:3] != ["-m", "celery"]:
        _real_execv(path, argv)  # not the celery exec: do what main asked
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *argv[3:]]
    celery_main()
    sys.exit(0)


def main() -> None:
    path = os.environ.get("ZREPQ_BENCH_CALLTIME")
    if not path:
        sys.exit("bench.timed_worker: set ZREPQ_BENCH_CALLTIME to the log path")
    calltime.install()
    _connect_signals(path)
    if os.environ.get("ZREPQ_BENCH_PROFILE"):
        _setup_profiler(os.environ["ZREPQ_BENCH_PROFILE"])
    import workers.main

    workers.main.os.execv = _exec_in_process  # type: ignore[assignment]
    workers.main.main()


if __name__ == "__main__":
    main()
