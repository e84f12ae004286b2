"""The zfs and zpool calls of the benchmark's peers, each in the exact shape the tool makes it.

bench/ runs syncoid (Debian's sanoid 2.1.0) and zfs-autobackup 3.3 against the stand-in
(bench/peers.py); every call they made there (their call logs) is here, so the stand-in is
held to OpenZFS 2.1 and 2.3 for them as for zrepq (`--zfs=standin,real`). What each tool
reads from the output is said per test; the assertions are on the whole output, less the
values no two pools share (guids, times, sizes in bytes).

Left out: calls the tools make only on paths the benchmark never takes (syncoid's bookmark
fallback and `--force-delete`; zfs-autobackup's encryption, clones, resume of a cut stream).
"""

from __future__ import annotations

import os
import re

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    exists,
    get,
    guid,
    ok,
    scratch_pool,
    send_recv,
    snapshots,
    tree,
    write_file,
    zfs_version,
)

SYNCOID_SNAP = "syncoid_bench_2026-12-04:22:19:46-GMT00:00"  # syncoid's own name form
ZAB_SNAP1, ZAB_SNAP2 = "bench-20261204222013", "bench-20261204222014"

POOL_PROPS_21 = [
    "size", "capacity", "altroot", "health", "guid", "version", "bootfs", "delegation",
    "autoreplace", "cachefile", "failmode", "listsnapshots", "autoexpand", "dedupratio",
    "free", "allocated", "readonly", "ashift", "comment", "expandsize", "freeing",
    "fragmentation", "leaked", "multihost", "checkpoint", "load_guid", "autotrim",
    "compatibility",
]  # fmt: skip
POOL_PROPS_23 = [
    *POOL_PROPS_21, "bcloneused", "bclonesaved", "bcloneratio", "dedup_table_size",
    "dedup_table_quota", "last_scrubbed_txg",
]  # fmt: skip
FEATURES_21 = {
    "async_destroy": "enabled", "empty_bpobj": "active", "lz4_compress": "active",
    "multi_vdev_crash_dump": "enabled", "spacemap_histogram": "active",
    "enabled_txg": "active", "hole_birth": "active", "extensible_dataset": "active",
    "embedded_data": "active", "bookmarks": "enabled", "filesystem_limits": "enabled",
    "large_blocks": "enabled", "large_dnode": "enabled", "sha512": "enabled",
    "skein": "enabled", "edonr": "enabled", "userobj_accounting": "active",
    "encryption": "enabled", "project_quota": "active", "device_removal": "enabled",
    "obsolete_counts": "enabled", "zpool_checkpoint": "enabled", "spacemap_v2": "active",
    "allocation_classes": "enabled", "resilver_defer": "enabled", "bookmark_v2": "enabled",
    "redaction_bookmarks": "enabled", "redacted_datasets": "enabled",
    "bookmark_written": "enabled", "log_spacemap": "active", "livelist": "enabled",
    "device_rebuild": "enabled", "zstd_compress": "enabled", "draid": "enabled",
}  # fmt: skip
FEATURES_23 = {
    **FEATURES_21, "zilsaxattr": "enabled", "head_errlog": "active", "blake3": "enabled",
    "block_cloning": "enabled", "vdev_zaps_v2": "active", "redaction_list_spill": "enabled",
    "raidz_expansion": "enabled", "fast_dedup": "enabled", "longname": "enabled",
    "large_microzap": "enabled",
}  # fmt: skip


def lines(text: str) -> list[list[str]]:
    return [ln.split("\t") for ln in text.splitlines()]


def source_fs(b: ZfsBackend, name: str = "src") -> str:
    fs = f"{b.base}/{name}"
    ok(b, "create", fs)
    write_file(b, fs, "f.txt", b"hello\n")
    write_file(b, fs, "data.bin", os.urandom(50000))
    return fs


def is_newer_line(b: ZfsBackend) -> bool:
    return zfs_version(b) >= (2, 2, 0)


# ------------------------------------------------------------------------------ both tools


def test_zpool_get_one_feature_value(b: ZfsBackend) -> None:
    """syncoid: `zpool get -o value -H feature@extensible_dataset POOL | grep 'active|enabled'`
    decides whether it receives with -s (resumable)."""
    assert ok_zpool(b, "get", "-o", "value", "-H", "feature@extensible_dataset", b.pool) == (
        "active\n"
    )
    with scratch_pool(b, "nf", "-d") as bare:
        out = ok_zpool(b, "get", "-o", "value", "-H", "feature@extensible_dataset", bare)
        assert out == "disabled\n"
    res = b.zpool("get", "-o", "value", "-H", "feature@extensible_dataset", f"{b.pool}zz")
    if is_newer_line(b):  # 2.2 reads pool and vdev properties through another path
        assert_fails(res, f"Cannot get properties of {b.pool}zz: no such pool available.")
    else:
        assert_fails(res, f"cannot open '{b.pool}zz': no such pool")


def test_zpool_get_all_parsable(b: ZfsBackend) -> None:
    """zfs-autobackup: `zpool get -H -p all POOL`, read as {property: value}; the features
    `enabled` or `active` decide `send -L -e` and `recv -s`."""
    out = ok_zpool(b, "get", "-H", "-p", "all", b.pool)
    rows = lines(out)
    assert all(len(r) == 4 and r[0] == b.pool for r in rows), out
    newer = is_newer_line(b)
    props = POOL_PROPS_23 if newer else POOL_PROPS_21
    features = FEATURES_23 if newer else FEATURES_21
    names = [r[1] for r in rows]
    assert names == props + [f"feature@{f}" for f in features], out
    got = {r[1]: (r[2], r[3]) for r in rows}
    for f, state in features.items():
        assert got[f"feature@{f}"] == (state, "local"), f
    for prop, value in {
        "health": "ONLINE", "altroot": "-", "version": "-", "bootfs": "-",
        "delegation": "on", "autoreplace": "off", "cachefile": "-", "failmode": "wait",
        "listsnapshots": "off", "autoexpand": "off", "dedupratio": "1.00", "readonly": "off",
        "ashift": "0", "comment": "-", "expandsize": "-", "freeing": "0", "leaked": "0",
        "multihost": "off", "checkpoint": "-", "autotrim": "off", "compatibility": "off",
    }.items():  # fmt: skip
        assert got[prop][0] == value, (prop, got[prop])
    for prop in ("size", "capacity", "guid", "free", "allocated", "fragmentation", "load_guid"):
        assert got[prop][0].isdigit(), (prop, got[prop])
    assert int(got["size"][0]) == int(got["free"][0]) + int(got["allocated"][0])
    sources = {r[1]: r[3] for r in rows}
    assert sources["size"] == "-" and sources["failmode"] == "default"
    if newer:
        assert got["dedup_table_quota"] == ("auto", "default")
        assert got["bcloneratio"][0] == "1.00"


def ok_zpool(b: ZfsBackend, *args: str) -> str:
    return b.zpool(*args).check().stdout


def test_destroy_one_snapshot(b: ZfsBackend) -> None:
    """Both prune their old snapshot with a plain `zfs destroy FS@SNAP`."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@{SYNCOID_SNAP}")
    ok(b, "snapshot", f"{fs}@s2")
    assert ok(b, "destroy", f"{fs}@{SYNCOID_SNAP}") == ""
    assert snapshots(b, fs) == ["s2"]


# ----------------------------------------------------------------------------- syncoid


def test_get_unset_user_property_four_columns(b: ZfsBackend) -> None:
    """syncoid: `zfs get -H syncoid:sync FS`, the third column ("-" = sync it)."""
    fs = source_fs(b)
    assert ok(b, "get", "-H", "syncoid:sync", fs) == f"{fs}\tsyncoid:sync\t-\t-\n"
    ok(b, "set", "syncoid:sync=false", fs)
    assert ok(b, "get", "-H", "syncoid:sync", fs) == f"{fs}\tsyncoid:sync\tfalse\tlocal\n"


def test_get_name_tells_whether_target_exists(b: ZfsBackend) -> None:
    """syncoid: `zfs get -H name TARGET 2>&1`: the target exists when the output starts
    with its name and the exit status is 0."""
    fs = source_fs(b)
    assert ok(b, "get", "-H", "name", fs) == f"{fs}\tname\t{fs}\t-\n"
    res = b.zfs("get", "-H", "name", f"{b.base2}/nope")
    assert res.stdout == ""
    assert_fails(res, f"cannot open '{b.base2}/nope': dataset does not exist")


def test_get_receive_resume_token_four_columns(b: ZfsBackend) -> None:
    """syncoid: `zfs get -H receive_resume_token TARGET`, third column; "-" is none. A cut
    resumable receive leaves the token there (and in `get all`, for zfs-autobackup)."""
    fs = source_fs(b)
    write_file(b, fs, "payload", os.urandom(2 << 20))
    ok(b, "snapshot", f"{fs}@s1")
    dst = f"{b.base2}/dst"
    ok(b, "create", dst)
    assert ok(b, "get", "-H", "receive_resume_token", dst) == (
        f"{dst}\treceive_resume_token\t-\t-\n"
    )
    props = dict(r for r in lines(ok(b, "get", "-H", "-o", "property,value", "-p", "all", dst)))
    assert "receive_resume_token" not in props
    cut = f"{dst}/cut"
    res = b.sh(f"zfs send {fs}@s1 | head -c 1000000 | zfs recv -s {cut}")
    assert res.returncode == 1
    row = ok(b, "get", "-H", "receive_resume_token", cut).rstrip("\n").split("\t")
    assert row[:2] == [cut, "receive_resume_token"] and row[3] == "-"
    assert row[2].startswith("1-")
    props = dict(r for r in lines(ok(b, "get", "-H", "-o", "property,value", "-p", "all", cut)))
    assert props["receive_resume_token"] == row[2]


def test_get_snapshot_guid_and_creation_depth_one(b: ZfsBackend) -> None:
    """syncoid: `zfs get -Hpd 1 -t snapshot guid,creation FS`: per snapshot, oldest first,
    a guid line and a creation line; a child's snapshots are not listed."""
    fs = source_fs(b)
    ok(b, "create", f"{fs}/child")
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "snapshot", f"{fs}/child@s1")
    ok(b, "snapshot", f"{fs}@{SYNCOID_SNAP}")
    rows = lines(ok(b, "get", "-Hpd", "1", "-t", "snapshot", "guid,creation", fs))
    expect = []
    for snap in ("s1", SYNCOID_SNAP):
        name = f"{fs}@{snap}"
        expect += [[name, "guid", str(guid(b, name)), "-"]]
        expect += [[name, "creation", get(b, "creation", name), "-"]]
    assert rows == expect
    assert all(r[2].isdigit() for r in rows)


def test_get_used_parsable(b: ZfsBackend) -> None:
    """syncoid: `zfs get -H -p used TARGET` (a hint when no snapshot matches). OpenZFS counts
    space when a transaction group is written: `zpool sync` first."""
    fs = source_fs(b)
    b.zpool("sync", b.pool).check()
    row = ok(b, "get", "-H", "-p", "used", fs).rstrip("\n").split("\t")
    assert row[:2] == [fs, "used"] and row[3] == "-"
    assert int(row[2]) > 50000


def test_list_name_origin_recursive(b: ZfsBackend) -> None:
    """syncoid --recursive: `zfs list -o name,origin -t filesystem,volume -Hr FS`; the parent
    first, then its descendants, "-" for no origin (snapshots not listed)."""
    fs = source_fs(b)
    ok(b, "create", f"{fs}/b")
    ok(b, "create", f"{fs}/a")
    ok(b, "create", f"{fs}/a/x")
    ok(b, "snapshot", "-r", f"{fs}@s1")
    out = ok(b, "list", "-o", "name,origin", "-t", "filesystem,volume", "-Hr", fs)
    assert lines(out) == [[n, "-"] for n in (fs, f"{fs}/a", f"{fs}/a/x", f"{fs}/b")]


def test_snapshot_name_with_colons(b: ZfsBackend) -> None:
    """syncoid names its snapshots `syncoid_HOST_YYYY-MM-DD:HH:MM:SS-GMT00:00`."""
    fs = source_fs(b)
    assert ok(b, "snapshot", f"{fs}@{SYNCOID_SNAP}") == ""
    assert snapshots(b, fs) == [SYNCOID_SNAP]


def test_send_estimate_before_the_stream(b: ZfsBackend) -> None:
    """syncoid: `zfs send -nvP FS@S` and `zfs send -nvP -I FS@A FS@B` (stdout and stderr
    together): the last line is `size<TAB>BYTES`."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@s1")
    write_file(b, fs, "more.bin", os.urandom(40000))
    ok(b, "snapshot", f"{fs}@{SYNCOID_SNAP}")
    out = lines(b.sh(f"zfs send -nvP {fs}@s1 2>&1").check().stdout)
    assert [r[0] for r in out] == ["full", "size"] and out[0][1] == f"{fs}@s1"
    assert out[0][2] == out[1][1] and out[1][1].isdigit()
    res = b.sh(f"zfs send -nvP -I '{fs}@s1' '{fs}@{SYNCOID_SNAP}' 2>&1").check()
    out = lines(res.stdout)
    assert [r[:3] for r in out[:-1]] == [["incremental", "s1", f"{fs}@{SYNCOID_SNAP}"]]
    assert out[-1][0] == "size" and int(out[-1][1]) >= 40000


def test_resumable_forced_receive_full_then_incremental(b: ZfsBackend) -> None:
    """syncoid's transfers: `zfs send FS@S | zfs receive -s -F TARGET` for a new target;
    then `zfs rollback -R TARGET@MATCH` (a no-op when MATCH is its newest snapshot) and
    `zfs send -I FS@MATCH FS@NEW | zfs receive -s -F TARGET 2>&1`."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@s1")
    dst = f"{b.base2}/dst"
    res = b.sh(f"zfs send '{fs}'@'s1' | zfs receive -s -F '{dst}'")
    res.check()
    assert res.stdout == "" and res.stderr == ""
    assert tree(b, dst) == tree(b, fs)
    write_file(b, fs, "f.txt", b"changed\n")
    ok(b, "snapshot", f"{fs}@{SYNCOID_SNAP}")
    assert ok(b, "rollback", "-R", f"{dst}@s1") == ""
    assert snapshots(b, dst) == ["s1"]
    res = b.sh(f"zfs send -I '{fs}'@'s1' '{fs}'@'{SYNCOID_SNAP}' | zfs receive -s -F '{dst}' 2>&1")
    res.check()
    assert res.stdout == ""
    assert snapshots(b, dst) == ["s1", SYNCOID_SNAP]
    assert guid(b, f"{dst}@{SYNCOID_SNAP}") == guid(b, f"{fs}@{SYNCOID_SNAP}")
    assert tree(b, dst) == tree(b, fs)
    ok(b, "destroy", f"{dst}@s1")
    assert snapshots(b, dst) == [SYNCOID_SNAP]


# ---------------------------------------------------------------------- zfs-autobackup


def test_get_selection_property_of_every_filesystem(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs get -t volume,filesystem -o name,value,source -H autobackup:NAME`
    (no dataset: all of them); `child` on the parent selects its descendants, whose source
    reads "inherited from PARENT"."""
    parent = f"{b.base}/sel"
    ok(b, "create", parent)
    ok(b, "create", f"{parent}/d0")
    ok(b, "create", f"{parent}/d0/x")
    ok(b, "snapshot", f"{parent}/d0@s1")
    ok(b, "set", "autobackup:bench=child", parent)
    out = ok(b, "get", "-t", "volume,filesystem", "-o", "name,value,source", "-H",
             "autobackup:bench")  # fmt: skip
    ours = [r for r in lines(out) if r[0] == b.base or r[0].startswith(f"{b.base}/")]
    assert ours == [
        [b.base, "-", "-"],
        [parent, "child", "local"],
        [f"{parent}/d0", "child", f"inherited from {parent}"],
        [f"{parent}/d0/x", "child", f"inherited from {parent}"],
    ]
    assert any(r == [b.pool, "-", "-"] for r in lines(out))


def test_list_snapshot_names_depth_one(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs list -d 1 -r -t snapshot -H -o name FS`, oldest first."""
    fs = source_fs(b)
    ok(b, "create", f"{fs}/child")
    for s in (ZAB_SNAP1, "other", ZAB_SNAP2):
        ok(b, "snapshot", "-r", f"{fs}@{s}")
    out = ok(b, "list", "-d", "1", "-r", "-t", "snapshot", "-H", "-o", "name", fs)
    assert out.split() == [f"{fs}@{s}" for s in (ZAB_SNAP1, "other", ZAB_SNAP2)]


def test_snapshot_of_several_datasets_in_one_call(b: ZfsBackend) -> None:
    """zfs-autobackup: one `zfs snapshot A@S B@S ...` per pool, one transaction group."""
    a, c = source_fs(b, "a"), source_fs(b, "c")
    assert ok(b, "snapshot", f"{a}@{ZAB_SNAP1}", f"{c}@{ZAB_SNAP1}") == ""
    assert snapshots(b, a) == [ZAB_SNAP1] and snapshots(b, c) == [ZAB_SNAP1]
    assert get(b, "createtxg", f"{a}@{ZAB_SNAP1}") == get(b, "createtxg", f"{c}@{ZAB_SNAP1}")


def test_get_written_since_snapshot(b: ZfsBackend) -> None:
    """zfs-autobackup without --allow-empty: `zfs get -H -ovalue -p written@FS@SNAP FS`."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@{ZAB_SNAP1}")
    assert ok(b, "get", "-H", "-ovalue", "-p", f"written@{fs}@{ZAB_SNAP1}", fs) == "0\n"
    write_file(b, fs, "new.bin", os.urandom(30000))
    b.zpool("sync", b.pool).check()  # OpenZFS counts what was written at the next txg
    out = ok(b, "get", "-H", "-ovalue", "-p", f"written@{fs}@{ZAB_SNAP1}", fs)
    assert int(out) >= 30000


def test_list_default_columns_says_whether_it_exists(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs list NAME` (filesystem or snapshot), exit 0 or 1: it exists
    when there is output."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@{ZAB_SNAP1}")
    for name in (fs, f"{fs}@{ZAB_SNAP1}"):
        out = ok(b, "list", name).splitlines()
        assert out[0].split() == ["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"]
        assert len(out) == 2 and out[1].split()[0] == name
    res = b.zfs("list", f"{b.base2}/nope")
    assert res.stdout == ""
    assert_fails(res, f"cannot open '{b.base2}/nope': dataset does not exist")


def test_option_probes_fail_with_exit_1(b: ZfsBackend) -> None:
    """zfs-autobackup probes `zfs send -L|-e|-c NAME` and `zfs recv -s NAME` (stdin at its
    end) on a name that does not exist: exit 1 means the option is known (2 would not)."""
    for opt in ("-L", "-e", "-c"):
        res = b.zfs("send", opt, "zfs_autobackup_option_test")
        assert_fails(res, "cannot open 'zfs_autobackup_option_test': dataset does not exist")
    res = b.sh("zfs recv -s zfs_autobackup_option_test < /dev/null")
    assert_fails(res, "cannot receive: failed to read from stream")


def test_get_all_two_columns(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs get -H -o property,value -p all NAME`, read as {property: value}:
    type, guid, written, encryption, canmount, mountpoint; receive_resume_token only when
    there is one; origin only for a clone."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@{ZAB_SNAP1}")
    rows = lines(ok(b, "get", "-H", "-o", "property,value", "-p", "all", fs))
    assert all(len(r) == 2 for r in rows)
    props = dict((r[0], r[1]) for r in rows)
    assert len(props) == len(rows)
    assert props["type"] == "filesystem" and props["guid"] == str(guid(b, fs))
    assert props["written"] == "0" and props["encryption"] == "off"
    assert props["canmount"] == "on" and props["mountpoint"] == get(b, "mountpoint", fs)
    assert props["mounted"] == "yes" and props["readonly"] == "off"
    assert props["creation"].isdigit() and props["used"].isdigit()
    assert "receive_resume_token" not in props and "origin" not in props
    rows = lines(ok(b, "get", "-H", "-o", "property,value", "-p", "all", f"{fs}@{ZAB_SNAP1}"))
    props = dict((r[0], r[1]) for r in rows)
    assert props["type"] == "snapshot"
    assert props["guid"] == str(guid(b, f"{fs}@{ZAB_SNAP1}"))
    assert props["userrefs"] == "0" and props["defer_destroy"] == "off"
    assert int(props["written"]) > 0
    for absent in ("mountpoint", "canmount", "mounted", "receive_resume_token", "origin"):
        assert absent not in props


def test_holds_hold_and_release_as_autobackup_does(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs holds -H SNAP` (second column: tags; nothing at all when there
    is none), `zfs hold TAG SNAP` and `zfs release TAG SNAP` (exit 0 or 1 accepted)."""
    fs = source_fs(b)
    snap = f"{fs}@{ZAB_SNAP1}"
    ok(b, "snapshot", snap)
    res = b.zfs("holds", "-H", snap).check()
    assert res.stdout == "" and res.stderr == ""
    tag = "zfs_autobackup:bench"
    assert ok(b, "hold", tag, snap) == ""
    row = ok(b, "holds", "-H", snap).rstrip("\n").split("\t")
    assert row[:2] == [snap, tag] and len(row) == 3
    res = b.zfs("hold", tag, snap)
    assert_fails(res, f"cannot hold snapshot '{snap}': tag already exists on this dataset")
    assert ok(b, "release", tag, snap) == ""
    assert_fails(
        b.zfs("release", tag, snap),
        f"cannot release hold from snapshot '{snap}': no such tag on this dataset",
    )


def test_create_unmountable_parent(b: ZfsBackend) -> None:
    """zfs-autobackup creates a missing target parent with `zfs create -o canmount=off`."""
    par = f"{b.base2}/par"
    assert ok(b, "create", "-o", "canmount=off", par) == ""
    assert get(b, "canmount", par) == "off"
    assert get(b, "mounted", par) == "no"


RECEIVED = re.compile(r"received \S+ stream in (\d+|\d+\.\d\d) seconds \(\S+/sec\)")


def test_send_with_props_into_unmounted_verbose_resumable_receive(b: ZfsBackend) -> None:
    """zfs-autobackup's transfer: `zfs send -L -e -p [-i @PREV] FS@SNAP | zfs recv -u
    [-o canmount=noauto] -v -s TARGET`; recv -v says what it receives, then how much in how
    long (2.1: whole seconds, at least one; 2.2 on: hundredths)."""
    fs = source_fs(b)
    ok(b, "snapshot", f"{fs}@{ZAB_SNAP1}")
    ok(b, "create", "-o", "canmount=off", f"{b.base2}/par")
    dst = f"{b.base2}/par/d0"
    res = send_recv(b, f"-L -e -p {fs}@{ZAB_SNAP1}", f"-u -o canmount=noauto -v -s {dst}")
    res.check()
    out = res.stdout.splitlines()
    assert out[0] == f"receiving full stream of {fs}@{ZAB_SNAP1} into {dst}@{ZAB_SNAP1}"
    assert len(out) == 2 and RECEIVED.fullmatch(out[1]), out
    whole = out[1].split(" in ")[1].split()[0]
    assert ("." in whole) == is_newer_line(b), out[1]
    assert get(b, "mounted", dst) == "no" and get(b, "canmount", dst) == "noauto"
    write_file(b, fs, "f.txt", b"changed\n")
    ok(b, "snapshot", f"{fs}@{ZAB_SNAP2}")
    res = send_recv(
        b, f"-L -e -p -i @{ZAB_SNAP1} {fs}@{ZAB_SNAP2}", f"-u -o canmount=noauto -v -s {dst}"
    )
    res.check()
    out = res.stdout.splitlines()
    assert out[0] == f"receiving incremental stream of {fs}@{ZAB_SNAP2} into {dst}@{ZAB_SNAP2}"
    assert len(out) == 2 and RECEIVED.fullmatch(out[1]), out
    assert snapshots(b, dst) == [ZAB_SNAP1, ZAB_SNAP2]
    assert get(b, "mounted", dst) == "no"
    assert ok(b, "mount", dst) == ""
    assert tree(b, dst) == tree(b, fs)


def test_list_filesystems_under_target_path(b: ZfsBackend) -> None:
    """zfs-autobackup: `zfs list -r -t filesystem,volume -o name -H TARGET` (thinning of
    datasets missing on the source)."""
    top = f"{b.base2}/t"
    for n in (top, f"{top}/b", f"{top}/a"):
        ok(b, "create", n)
    ok(b, "snapshot", f"{top}/a@s1")
    out = ok(b, "list", "-r", "-t", "filesystem,volume", "-o", "name", "-H", top)
    assert out.split() == [top, f"{top}/a", f"{top}/b"]


def test_send_resume_refusals_exit_255(b: ZfsBackend) -> None:
    """zfs-autobackup reads `zfs send -t TOKEN -n -v` (exit 0 or 255 accepted) to find the
    snapshot a target's token is for; zfs_send_resume's refusals exit 255 (its -1)."""
    res = b.zfs("send", "-t", "nonsense", "-n", "-v")
    assert_fails(res, "cannot resume send: resume token is corrupt (invalid format)", code=255)
    fs = source_fs(b)
    write_file(b, fs, "payload", os.urandom(2 << 20))
    ok(b, "snapshot", f"{fs}@s1")
    dst = f"{b.base2}/dst"
    assert b.sh(f"zfs send {fs}@s1 | head -c 1000000 | zfs recv -s {dst}").returncode == 1
    token = get(b, "receive_resume_token", dst)
    res = b.zfs("send", "-t", token, "-n", "-v")
    res.check()
    assert f"toname = {fs}@s1" in res.stdout + res.stderr
    ok(b, "destroy", f"{fs}@s1")
    res = b.zfs("send", "-t", token, "-n", "-v")
    assert_fails(
        res, f"cannot resume send: '{fs}@s1' used in the initial send no longer exists", code=255
    )
    assert exists(b, dst)
