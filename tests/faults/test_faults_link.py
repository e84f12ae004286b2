"""Scenario 4: the destination's network link goes down in the middle of a stream, then up.

nb's cable is pulled (its veth end on the bridge set down) while na streams to it with resume
on. ssh notices the dead link (ServerAliveInterval), the pipeline fails, and once the link is
back the task reports a clear error naming the host; nb keeps the partial receive as a resume
token, and the next sync resumes it: it sends only what was missing, not the whole stream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tests.faults.conftest import Pair
from tests.faults.helpers import (
    done,
    figure,
    outcome_of,
    prop,
    same_content,
    send_processes,
    snaps,
    wait_for,
    wait_no_strays,
)

SIZE = 12_000_000  # ~3 s through pv -L 4m


def test_link_dropped_mid_stream_then_resumed(pair: Callable[..., Pair]) -> None:
    bed, p, na, nb, fs = pair("link", size=200_000)
    na.zfs.write(fs, "data/big.bin", os.urandom(SIZE))

    r = p.sync(fs, host="na", resume=True)
    assert wait_for(lambda: send_processes(na, fs), 60)

    def sent_so_far() -> int:
        info = r.info if r.state == "PROGRESS" and isinstance(r.info, dict) else {}
        return int(info.get("bytes_sent") or 0)

    # Cut somewhere past the first 3 MB (progress is reported about once a second).
    assert wait_for(lambda: sent_so_far() > 3_000_000, 30, 0.1), "no progress reported"
    progress = {"bytes_sent": sent_so_far()}
    bed.link("nb", False)
    down_at = time.monotonic()
    try:
        # ssh gives up on the dead link (ServerAliveInterval 2 x 3); the task cannot finish
        # its checks on nb until the link is back, so keep it down a little longer than that.
        time.sleep(9)
        assert not r.ready() or not outcome_of(r)["ok"]
    finally:
        bed.link("nb", True)
    rec = done(r, timeout=120)
    figure("link drop: task failed after link down (s)", round(time.monotonic() - down_at, 1))
    assert not rec["ok"], rec
    err = rec["error"]
    figure("link drop: error", f"{err['kind']}: {err['message'][:160]}")
    assert err["kind"] in ("unreachable", "pipeline"), err
    assert "nb" in err["message"], err
    assert "kept for a resumable receive" in err["message"], err

    # nb ends its half of the stream once the link is back, and keeps a resume token.
    assert wait_no_strays(bed, timeout=30) == {}
    token = prop(nb, "receive_resume_token", fs)
    assert token != "-", "no resume token on the destination"
    before = snaps(nb, fs)

    rec = done(p.sync(fs, host="na", resume=True), timeout=120)
    assert rec["ok"], rec
    res = rec["result"]
    assert res["resumed"], res
    figure(
        "link drop: bytes before the cut / resumed bytes / stream size",
        (progress.get("bytes_sent"), res["bytes_sent"], SIZE),
    )
    # Resumed, not resent: what was already on nb was not sent again.
    assert res["bytes_sent"] < SIZE - 1_000_000, res
    assert same_content(na, fs, nb, fs)
    assert snaps(na, fs) == snaps(nb, fs)
    assert len(snaps(nb, fs)) == len(before) + 2  # the interrupted one and this sync's
    assert prop(nb, "receive_resume_token", fs) == "-"
