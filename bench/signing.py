"""What signed task messages cost per task: signing on the producer, verifying and the
replay guard on the worker, next to an unsigned publish, all in the same run.

- sign: `Signer.envelope` of a `zrep.sync` message (canonical JSON + Ed25519);
- verify: `signing.verify` of that envelope (canonical JSON + Ed25519 verify);
- replay guard: `Gate.admit` + `Gate.finished` on a loopback Redis (SET NX EX, SET XX);
- publish: `send_task` of N sync messages onto a Redis queue by an app with a key and by
  one without (the baseline), CPU per message.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.common import Lab, Section, median, metered, missing_tools, percentile, section_main

PARAMS = {
    "full": {"ops": 20_000, "tasks": 10_000},
    "quick": {"ops": 5_000, "tasks": 5_000},
    "smoke": {"ops": 300, "tasks": 300},
}
TARGET_US = 500.0  # sign + verify + replay guard per task, µs of CPU (a publish is ~250 µs)


def _per_op(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def run(mode: str) -> Section:
    sec = Section("6")
    why = missing_tools("redis")
    if why:
        sec.skipped = why
        return sec
    from tasks import contract as c
    from tasks.app import make_app
    from tasks.guard import Gate
    from workers.auth.policy import Policy
    from workers.auth.signing import Signer, TrustedKeys, generate, verify

    p = PARAMS[mode]
    keys = Path(tempfile.mkdtemp(prefix="zrepq-bench-keys-"))
    generate("bench", keys)
    (keys / "trusted").mkdir()
    (keys / "trusted" / "bench.pub").write_text((keys / "bench.pub").read_text())
    signer = Signer.from_file(keys / "bench.key", None, 3600)
    trusted = TrustedKeys.from_dir(keys / "trusted")
    kwargs = c.validate(c.SYNC, {"host": "hosta", "fs": "pool/prod/db"}).model_dump()
    env = signer.envelope(c.SYNC, "id-0", kwargs)
    sign = _per_op(lambda: signer.envelope(c.SYNC, "id-0", kwargs), p["ops"])
    check = _per_op(lambda: verify(trusted, c.SYNC, "id-0", kwargs, env), p["ops"])
    with Lab("signing") as lab:
        server = lab.redis()
        client = server.client(socket_timeout=5)
        gate = Gate("hosta", trusted, Policy(), True, client)
        ids = iter(range(10**9))

        def guard() -> None:
            tid = f"t{next(ids)}"
            v = gate.admit(c.SYNC, tid, kwargs, signer.envelope(c.SYNC, tid, kwargs))
            gate.finished(tid, v)

        replay = _per_op(guard, p["ops"])
        base = {"ZREPQ_CONFIG": "none", "ZREPQ_BROKER_URL": server.url}
        cpu: dict[str, float] = {}
        n = p["tasks"]
        for label, env_ in [
            ("unsigned", base),
            ("signed", {**base, "ZREPQ_SIGNING_KEY": str(keys / "bench.key")}),
        ]:
            app = make_app(env_)
            queue = c.queue_for("hosta")
            app.send_task(c.SYNC, kwargs=kwargs, queue=queue, retry=False)  # connect
            with metered() as m:
                for i in range(n):
                    app.send_task(c.SYNC, kwargs={**kwargs, "fs": f"pool/fs{i}"}, queue=queue)
            cpu[label] = m.cpu / n
            client.flushdb()
    us = 1e6
    # The guard's own time minus the signature it signs for its message.
    guard_only = max(0.0, median(replay) - median(sign))
    total = median(sign) + median(check) + guard_only
    sec.row(
        "sign (producer) + verify + replay guard (worker), per task: p50",
        f"{total * us:.0f} µs",
        f"unsigned publish: {cpu['unsigned'] * us:.0f} µs CPU per task",
        f"sign {median(sign) * us:.0f} / verify {median(check) * us:.0f} / "
        f"guard {guard_only * us:.0f} µs",
        f"<= {TARGET_US:.0f} µs",
        total * us <= TARGET_US,
    )
    sec.row(
        f"publish {n:,} sync tasks, CPU per task: signed vs unsigned",
        f"{cpu['signed'] * us:.0f} µs",
        f"{cpu['unsigned'] * us:.0f} µs",
        f"+{(cpu['signed'] - cpu['unsigned']) * us:.0f} µs "
        f"({cpu['signed'] / cpu['unsigned']:.2f}x)",
    )
    sec.note(
        f"p99: sign {percentile(sign, 99) * us:.0f} µs, verify {percentile(check, 99) * us:.0f}"
        f" µs, sign + replay guard on loopback Redis {percentile(replay, 99) * us:.0f} µs"
    )
    return sec


if __name__ == "__main__":
    sys.exit(section_main(run))
