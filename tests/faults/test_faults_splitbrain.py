"""Scenarios 7 and 8: split brain is refused, and so is a host whose key changed.

Split brain, three ways, each refused with a clear error and nothing overwritten:
- both sides claim master (someone set `zrep:master=yes` on the standby): sync, `sync all`
  and a repeated takeover refuse;
- a takeover -L on the standby while the old master is alive and being written to: refused;
  and after a real failover, a write on the old master makes the new master's sync refuse
  instead of rolling the old master back (no `recv -F` on routine syncs);
- a recursive (`ZREP_R=-R`) send never carries `zrep:master` to the standby (zrep issue 206),
  and is refused like any other when the standby claims master.
Host key: nb gets a new host key; every connection to nb is refused naming nb, nothing runs
there, other hosts are unaffected, and once the key is back everything works again.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

from tests.faults.conftest import Pair
from tests.faults.helpers import (
    done,
    figure,
    init_pair,
    leaf,
    make_fs,
    mutating_calls,
    producer,
    prop,
    same_content,
    snaps,
)
from tests.harness.netns import NetBed, NetHost


def test_both_sides_claiming_master_is_refused(pair: Callable[..., Pair]) -> None:
    _bed, p, na, nb, fs = pair("sb", size=200_000)
    nb.zfs.zfs("set", "zrep:master=yes", fs)
    na.zfs.write(fs, "new.txt", b"not to be sent\n")
    na_before, nb_before, nb_tree = snaps(na, fs), snaps(nb, fs), nb.zfs.tree(fs)

    rec = done(p.sync(fs, host="na"))
    assert not rec["ok"] and rec["error"]["kind"] == "split-brain", rec
    assert "also master. Split brain detected" in rec["error"]["message"]
    assert "nb" in rec["error"]["message"]
    figure("split brain: both masters", rec["error"]["message"])
    summary = done(p.sync_all(["na"])["na"])
    row = next(r for r in summary["result"]["datasets"] if r["dataset"] == fs)
    assert row["status"] == "failed" and "Split brain" in row["error"], row
    rec = done(p.takeover(fs, host="na"))
    assert not rec["ok"] and rec["error"]["kind"] == "split-brain", rec
    # Nothing moved on either side.
    assert snaps(na, fs) == na_before and snaps(nb, fs) == nb_before
    assert nb.zfs.tree(fs) == nb_tree


def test_takeover_while_the_old_master_writes_is_refused(pair: Callable[..., Pair]) -> None:
    _bed, p, na, nb, fs = pair("tk", size=200_000)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            na.zfs.write(fs, f"live/{i % 50}.txt", f"write {i}\n".encode())
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        rec = done(p.takeover(fs, host="nb", local_only=True))
    finally:
        stop.set()
        t.join(5)
    assert not rec["ok"] and rec["error"]["kind"] == "split-brain", rec
    assert "na" in rec["error"]["message"] and "still master" in rec["error"]["message"]
    figure("split brain: takeover -L while master alive", rec["error"]["message"])
    assert prop(nb, "zrep:master", fs) == "-" and prop(nb, "readonly", fs) == "on"
    assert prop(na, "zrep:master", fs) == "yes"
    rec = done(p.sync(fs, host="na"))  # the master goes on, with everything it wrote
    assert rec["ok"], rec
    assert same_content(na, fs, nb, fs)

    # A real failover, then someone writes on the old master: the new master's sync must not
    # roll those writes back; it refuses and says how to proceed.
    assert done(p.failover(fs, host="na"))["ok"]
    na.zfs.write(fs, "late-write-on-old-master.txt", b"precious\n")
    rec = done(p.sync(fs, host="nb"))
    assert not rec["ok"] and rec["error"]["kind"] == "conflict", rec
    assert "modified since its most recent snapshot" in rec["error"]["message"]
    assert na.zfs.read(fs, "late-write-on-old-master.txt") == b"precious\n"


def _zrepq_local(
    bed: NetBed, host: NetHost, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`zrepq-local ARGS` run on `host` (inside its namespace), as an admin would."""
    assert bed.redis is not None
    full = bed.worker_environment(host, ZREP_SRC_HOST=host.name, ZREPQ_LOCK_REDIS="1", **env)
    argv = host.exec_argv(sys.executable, "-c", "from workers.cli import run; run()", *args)
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=120)


def test_recursive_send_never_makes_a_second_master(netbed: Callable[..., NetBed]) -> None:
    bed = netbed(2)
    na, nb = bed["na"], bed["nb"]
    fs = f"tank/{leaf('rr')}"
    make_fs(na, fs, size=100_000)
    make_fs(na, f"{fs}/kid", size=100_000)
    res = _zrepq_local(bed, na, "init", fs, "nb", fs, ZREP_R="-R")
    assert res.returncode == 0, res.stderr
    na.zfs.write(f"{fs}/kid", "more.txt", b"kid data\n")
    res = _zrepq_local(bed, na, "sync", fs, ZREP_R="-R")
    assert res.returncode == 0, res.stderr
    for ds in (fs, f"{fs}/kid"):
        assert prop(nb, "zrep:master", ds) == "-", ds  # -x zrep:master on receive
        assert same_content(na, ds, nb, ds), ds
    # Again, so a standby made master by the stream would have shown as split brain here.
    res = _zrepq_local(bed, na, "sync", fs, ZREP_R="-R")
    assert res.returncode == 0, res.stderr

    nb.zfs.zfs("set", "zrep:master=yes", fs)
    kid_before = (snaps(nb, f"{fs}/kid"), nb.zfs.tree(f"{fs}/kid"))
    res = _zrepq_local(bed, na, "sync", fs, ZREP_R="-R")
    assert res.returncode != 0
    assert "Split brain detected" in res.stderr, res.stderr
    assert (snaps(nb, f"{fs}/kid"), nb.zfs.tree(f"{fs}/kid")) == kid_before


def test_changed_host_key_is_refused_naming_the_host(netbed: Callable[..., NetBed]) -> None:
    bed = netbed(3)
    p = producer(bed)
    na, nb, nc = bed["na"], bed["nb"], bed["nc"]
    fs, other, back = (f"tank/{leaf(x)}" for x in ("hk", "hk", "hk"))
    make_fs(na, fs, size=100_000)
    make_fs(na, other, size=100_000)
    make_fs(nb, back, size=100_000)
    init_pair(p, na, fs, nb, fs)
    init_pair(p, nb, back, nc, back)
    bed.change_host_key("nb")
    changed_at = time.time()
    na.zfs.write(fs, "x.txt", b"x\n")
    try:
        for r in (p.sync(fs, host="na"), p.init(other, "nb", other, host="na")):
            rec = done(r)
            assert not rec["ok"], rec
            err = rec["error"]
            assert err["kind"] == "host-key" and err["retryable"] is False, err
            assert "host key for nb" in err["message"] and "CHANGED" in err["message"], err
            figure("host key changed", err["message"][:140])
        assert mutating_calls(nb, changed_at) == []
        assert [c for c in nb.zfs.calls() if c["t"] >= changed_at] == []  # nothing ran on nb
        # nb itself still reaches the others: only connections *to* nb are refused.
        nb.zfs.write(back, "y.txt", b"y\n")
        assert done(p.sync(back, host="nb"))["ok"]
    finally:
        bed.restore_host_key("nb")
    rec = done(p.sync(fs, host="na"))
    assert rec["ok"], rec
    assert same_content(na, fs, nb, fs)
