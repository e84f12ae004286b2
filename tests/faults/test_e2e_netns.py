"""Scenario 1: three hosts on a real (virtual) network, the whole life of several pairs.

na, nb, nc are network namespaces with their own sshd, worker and stand-in zfs; every pool is
called `tank` on every host, as on a real fleet. A→B (two datasets), B→C and C→A are
initialised, written, synced with `sync all` on every host at once, one pair goes through a
failover and a takeover back, another is refreshed (pulled) by its standby, and `status` runs on
every host. Every destination is checked byte for byte, and the bytes are seen crossing the
veth links.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from producer.watch import wait
from tests.faults.helpers import (
    done,
    leaf,
    make_fs,
    producer,
    prop,
    same_content,
    snaps,
    stray_processes,
)
from tests.harness.netns import NetBed


def test_three_hosts_end_to_end(netbed: Callable[..., NetBed]) -> None:
    bed = netbed(3)
    p = producer(bed)
    na, nb, nc = bed["na"], bed["nb"], bed["nc"]
    ab1, ab2, bc, ca = (f"tank/{leaf(x)}" for x in ("ab", "ab", "bc", "ca"))
    pairs = [(na, ab1, nb), (na, ab2, nb), (nb, bc, nc), (nc, ca, na)]
    for src, fs, _dst in pairs:
        make_fs(src, fs, size=600_000, files=3)

    # -- init: full streams across the links -----------------------------------------------
    before = {n: bed.link_bytes(n) for n in bed.hosts}
    inits = {fs: p.init(fs, dst.name, fs, host=src.name) for src, fs, dst in pairs}
    for fs, rec in wait(inits, timeout=180, show=False).items():
        assert rec["ok"], (fs, rec)
        assert rec["result"]["bytes_sent"] > 600_000
    for src, fs, dst in pairs:
        assert same_content(src, fs, dst, fs), fs
        assert prop(dst, "zrep:src-host", fs) == src.name
        assert prop(dst, "readonly", fs) == "on"
    # Each destination's link carried at least what it received (nothing went via localhost).
    for name, expect in (("nb", 1_200_000), ("nc", 600_000), ("na", 600_000)):
        assert bed.link_bytes(name) - before[name] > expect, name

    # -- new data everywhere, then `sync all` on every host at once ------------------------
    for src, fs, _dst in pairs:
        src.zfs.write(fs, "data/new.bin", os.urandom(200_000))
        src.zfs.remove(fs, "data/blob0.bin")
    summaries = wait(p.sync_all(["na", "nb", "nc"]), timeout=180, show=False)
    expect_masters = {"na": {ab1, ab2}, "nb": {bc}, "nc": {ca}}
    for host, rec in summaries.items():
        assert rec["ok"], (host, rec)
        rows = {r["dataset"]: r for r in rec["result"]["datasets"]}
        assert set(rows) == expect_masters[host], (host, rows)
        assert all(r["status"] == "synced" for r in rows.values()), rows
        assert rec["result"]["failed"] == 0
        assert rec["result"]["counts"] == {"synced": len(expect_masters[host])}
    for src, fs, dst in pairs:
        assert same_content(src, fs, dst, fs), fs
        assert list(snaps(src, fs).items()) == list(snaps(dst, fs).items())

    # -- failover A→B and takeover back ------------------------------------------------------
    rec = done(p.failover(ab1, host="na"))
    assert rec["ok"], rec
    assert rec["result"]["role"] == "master" and rec["result"]["host"] == "nb"
    assert prop(nb, "zrep:master", ab1) == "yes" and prop(na, "zrep:master", ab1) == "-"
    assert prop(na, "readonly", ab1) == "on" and prop(nb, "readonly", ab1) == "off"
    nb.zfs.write(ab1, "written-on-b.txt", b"b is master now\n")
    rec = done(p.sync(ab1, host="nb"))  # the new direction: B→A
    assert rec["ok"] and rec["result"]["dest_host"] == "na", rec
    assert same_content(nb, ab1, na, ab1)
    rec = done(p.takeover(ab1, host="na"))  # asks nb to fail over back to na
    assert rec["ok"], rec
    assert prop(na, "zrep:master", ab1) == "yes" and prop(nb, "zrep:master", ab1) == "-"
    assert na.zfs.read(ab1, "written-on-b.txt") == b"b is master now\n"
    na.zfs.write(ab1, "back-on-a.txt", b"a again\n")
    rec = done(p.sync(ab1, host="na"))
    assert rec["ok"] and rec["result"]["dest_host"] == "nb", rec
    assert same_content(na, ab1, nb, ab1)

    # -- refresh: the standby pulls ----------------------------------------------------------
    nb.zfs.write(bc, "pulled.bin", os.urandom(100_000))
    rec = done(p.refresh(bc, host="nc"))
    assert rec["ok"] and rec["result"]["status"] == "synced", rec
    assert same_content(nb, bc, nc, bc)

    # -- status everywhere -------------------------------------------------------------------
    for host, masters in expect_masters.items():
        rec = done(p.status(host, all=True))
        assert rec["ok"], rec
        rows = {r["dataset"]: r for r in rec["result"]["rows"]}
        standbys = {fs for src, fs, dst in pairs if dst.name == host}
        assert set(rows) == masters | standbys, (host, rows)
        for fs in masters:
            assert rows[fs]["master"] and rows[fs]["src_host"] == host
            assert rows[fs]["last_sent"].startswith(f"{fs}@zrep_")
            assert rows[fs]["error"] is None
            assert re.search(rf"^{re.escape(fs)}\s+last: \d{{4}}/", rec["result"]["text"], re.M)
        for fs in standbys:
            assert not rows[fs]["master"] and rows[fs]["dest_host"] == host

    # -- the control and data paths really crossed the network --------------------------------
    for site in bed.hosts.values():
        log = (site.workdir / "sshd.log").read_text(errors="replace")
        peers = set(re.findall(r"Connection from (\S+) port", log))
        assert peers - {bed.gateway}, site.name  # (the gateway: the bed's readiness probe)
        assert peers <= {h.address for h in bed.hosts.values()} | {bed.gateway}, peers
    assert stray_processes(bed) == {}
