"""The engine on a real Redis lease: a holder that loses its lease stops and writes nothing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
import redis

from tests.harness.fleet import Fleet
from workers.engine import run
from workers.engine.errors import LockHeld, LockLost
from workers.engine.requests import InitRequest, SyncRequest
from workers.keys import lock_key
from workers.lease import RedisLocks


def test_lost_lease_mid_stream_stops_and_leaves_no_late_writes(
    fleet: Callable[..., Fleet], redis_client: redis.Redis
) -> None:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    src = a.fs("prod")
    a.zfs.zfs("create", src)
    run(f.context("hosta"), InitRequest(fs=src, dest_host="hostb", dest_fs=b.fs("prod")))
    a.zfs.write(src, "big.bin", os.urandom(8_000_000))
    slow = {"ZREP_INFILTER": "pv -q -L 1m"}  # ~8 s stream
    ctx = f.context("hosta", slow, locks=RedisLocks(redis_client, owner="hosta", ttl=3.0))
    errors: list[BaseException] = []

    def sync_slowly() -> None:
        try:
            run(ctx, SyncRequest(fs=src))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=sync_slowly)
    t.start()
    key = lock_key("zrep", "hosta", src)
    deadline = time.monotonic() + 10
    while not redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    # Another run takes over the lease (as after an expiry while this holder was paused).
    redis_client.set(key, "intruder:1:sync:x", px=30_000)
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], LockLost), errors
    # Fencing: no `_unsent` rename, no zrep:sent, no error flag, the new holder's lock intact.
    snaps = a.zfs.snapshots(src)
    assert snaps == [f"{src}@zrep_000000", f"{src}@zrep_000001"]
    assert a.zfs.get("zrep:sent", f"{src}@zrep_000001") == "-"
    assert a.zfs.get("zrepq:zrep:last-error", src) == "-"
    assert redis_client.get(key) == b"intruder:1:sync:x"
    # While the intruder holds it, a sync is refused; once it is gone the pair syncs fine.
    with pytest.raises(LockHeld, match="intruder"):
        run(f.context("hosta", locks=RedisLocks(redis_client, owner="hosta")), SyncRequest(fs=src))
    redis_client.delete(key)
    res = run(
        f.context("hosta", locks=RedisLocks(redis_client, owner="hosta")), SyncRequest(fs=src)
    )
    assert res.status == "synced" and res.snapshot == f"{src}@zrep_000002"
    assert b.zfs.tree(b.fs("prod")) == a.zfs.tree(src)
