"""Properties: sources (local, received, inherited, default), inheritance, get/list formats."""

from __future__ import annotations

import re
import time

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    get,
    get_src,
    ok,
    send_recv,
    set_failure_code,
    sh_ok,
)


def test_user_property_sources_local_inherited_default(b: ZfsBackend) -> None:
    top = f"{b.base}/p"
    ok(b, "create", "-p", f"{top}/kid/grandkid")
    assert get_src(b, "zrepq:color", top) == ("-", "-")
    ok(b, "set", "zrepq:color=red", top)
    assert get_src(b, "zrepq:color", top) == ("red", "local")
    assert get_src(b, "zrepq:color", f"{top}/kid") == ("red", f"inherited from {top}")
    assert get_src(b, "zrepq:color", f"{top}/kid/grandkid") == ("red", f"inherited from {top}")
    ok(b, "set", "zrepq:color=blue", f"{top}/kid")
    assert get_src(b, "zrepq:color", f"{top}/kid/grandkid") == (
        "blue",
        f"inherited from {top}/kid",
    )
    ok(b, "inherit", "zrepq:color", f"{top}/kid")
    assert get_src(b, "zrepq:color", f"{top}/kid") == ("red", f"inherited from {top}")
    ok(b, "inherit", "-r", "zrepq:color", top)
    assert get_src(b, "zrepq:color", f"{top}/kid/grandkid") == ("-", "-")


def test_snapshot_user_properties(b: ZfsBackend) -> None:
    fs = f"{b.base}/sp"
    ok(b, "create", fs)
    ok(b, "set", "zrepq:master=yes", fs)
    ok(b, "snapshot", f"{fs}@s1")
    # snapshots inherit user properties from their filesystem
    assert get_src(b, "zrepq:master", f"{fs}@s1") == ("yes", f"inherited from {fs}")
    ok(b, "set", "zrepq:sent=12345", f"{fs}@s1")
    assert get_src(b, "zrepq:sent", f"{fs}@s1") == ("12345", "local")
    # -s local finds exactly the snapshot that has it set (zrep's "last sent" lookup)
    out = ok(b, "get", "-H", "-o", "name", "-r", "-s", "local", "zrepq:sent", fs)
    assert out.split() == [f"{fs}@s1"]
    # only user properties can be set on snapshots
    assert_fails(
        b.zfs("set", "readonly=on", f"{fs}@s1"),
        f"cannot set property for '{fs}@s1': this property can not be modified for snapshots",
        code=set_failure_code(b),
    )
    # a native property that does not apply to the type is refused before "readonly"
    assert_fails(
        b.zfs("set", "userrefs=1", fs),
        "'userrefs' does not apply to datasets",
        code=set_failure_code(b),
    )


def test_set_invalid_properties(b: ZfsBackend) -> None:
    fs = f"{b.base}/inv"
    ok(b, "create", fs)
    code = set_failure_code(b)
    assert_fails(
        b.zfs("set", "bogus=1", fs),
        f"cannot set property for '{fs}': invalid property 'bogus'",
        code=code,
    )
    # user property names are lowercase; uppercase makes it a (bad) native name
    assert_fails(b.zfs("set", "Zrepq:X=1", fs), "invalid property 'Zrepq:X'", code=code)
    assert_fails(b.zfs("set", "guid=5", fs), "'guid' is readonly", code=code)
    assert_fails(b.zfs("set", "readonly=maybe", fs), "cannot set property for", code=code)
    res = b.zfs("get", "bogus", fs)
    assert res.returncode == 2
    assert "bad property list: invalid property 'bogus'" in res.stderr


def test_readonly_and_mountpoint_inherit(b: ZfsBackend) -> None:
    top = f"{b.base}/ro"
    ok(b, "create", "-p", f"{top}/kid")
    assert get_src(b, "readonly", f"{top}/kid") == ("off", "default")
    ok(b, "set", "readonly=on", top)
    assert get_src(b, "readonly", f"{top}/kid") == ("on", f"inherited from {top}")
    mp_top = get(b, "mountpoint", top)
    assert get(b, "mountpoint", f"{top}/kid") == f"{mp_top}/kid"
    src = get_src(b, "mountpoint", f"{top}/kid")[1]
    assert src == "default" or src.startswith("inherited from "), src


def test_received_property_is_shadowed_by_local_and_masked_by_inherit(b: ZfsBackend) -> None:
    src, dst = f"{b.base}/src", f"{b.base2}/dst"
    ok(b, "create", src)
    ok(b, "set", "zrepq:role=primary", src)
    ok(b, "snapshot", f"{src}@s1")
    send_recv(b, f"-p {src}@s1", dst).check()
    assert get_src(b, "zrepq:role", dst) == ("primary", "received")
    # a local value shadows the received one; the received value is still recorded
    ok(b, "set", "zrepq:role=mine", dst)
    assert get_src(b, "zrepq:role", dst) == ("mine", "local")
    out = ok(b, "get", "-H", "-o", "value,received,source", "zrepq:role", dst)
    assert out.rstrip("\n").split("\t") == ["mine", "primary", "local"]
    # inherit -S reverts to the received value
    ok(b, "inherit", "-S", "zrepq:role", dst)
    assert get_src(b, "zrepq:role", dst) == ("primary", "received")
    # plain inherit masks the received value (effective becomes inherited/default)
    ok(b, "inherit", "zrepq:role", dst)
    assert get_src(b, "zrepq:role", dst) == ("-", "-")
    out = ok(b, "get", "-H", "-o", "received", "zrepq:role", dst)
    assert out.strip() == "primary"
    ok(b, "inherit", "-S", "zrepq:role", dst)
    assert get_src(b, "zrepq:role", dst) == ("primary", "received")
    assert ok(b, "get", "-H", "-o", "name", "-s", "received", "zrepq:role", dst).split() == [dst]


def test_recv_o_sets_local_and_recv_x_excludes(b: ZfsBackend) -> None:
    src = f"{b.base}/src"
    ok(b, "create", src)
    ok(b, "set", "zrepq:a=1", src)
    ok(b, "set", "zrepq:b=2", src)
    ok(b, "snapshot", f"{src}@s1")
    dst = f"{b.base2}/dst"
    send_recv(b, f"-p {src}@s1", f"-o zrepq:a=override -x zrepq:b {dst}").check()
    assert get_src(b, "zrepq:a", dst) == ("override", "local")
    assert get_src(b, "zrepq:b", dst) == ("-", "-")
    out = ok(b, "get", "-H", "-o", "received", "zrepq:a,zrepq:b", dst).split()
    assert out == ["1", "2"]
    # -o readonly=on is how zrep makes the destination read-only on the first receive
    dst2 = f"{b.base2}/dst2"
    send_recv(b, f"-p {src}@s1", f"-o readonly=on {dst2}").check()
    assert get_src(b, "readonly", dst2) == ("on", "local")


def test_get_depth_1_lists_dataset_snapshots_and_children_in_one_call(b: ZfsBackend) -> None:
    """The engine's one read of the other side of a sync (`ZfsHost.state`): the dataset's
    properties and its snapshots', from one `zfs get -d 1`. Properties that do not apply to
    a type read as "-"; grandchildren and children's snapshots are not listed."""
    fs = f"{b.base}/st"
    ok(b, "create", "-p", f"{fs}/kid/grand")
    ok(b, "set", "zrep:master=yes", fs)
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "snapshot", "-r", f"{fs}@s2")
    ok(b, "set", "zrep:sent=1700000000", f"{fs}@s1")
    out = ok(b, "get", "-H", "-p", "-d", "1", "-t", "filesystem,volume,snapshot",
             "-o", "name,property,value,source",
             "type,readonly,mounted,receive_resume_token,mountpoint,guid,createtxg,zrep:master,"
             "zrep:sent", fs)  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(r) == 4 for r in rows), rows
    assert sorted({r[0] for r in rows}) == [fs, f"{fs}/kid", f"{fs}@s1", f"{fs}@s2"]
    got = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert got[(fs, "zrep:master")] == ("yes", "local")
    assert got[(fs, "type")] == ("filesystem", "-")
    assert got[(f"{fs}@s1", "type")] == ("snapshot", "-")
    assert got[(f"{fs}@s1", "zrep:sent")] == ("1700000000", "local")
    assert got[(f"{fs}@s2", "zrep:sent")] == ("-", "-")
    assert got[(f"{fs}@s1", "mountpoint")] == ("-", "-")
    assert got[(f"{fs}@s1", "zrep:master")] == ("yes", f"inherited from {fs}")
    assert int(got[(f"{fs}@s1", "createtxg")][0]) < int(got[(f"{fs}@s2", "createtxg")][0])
    assert got[(f"{fs}@s1", "guid")][0] == get(b, "guid", f"{fs}@s1")


def test_userrefs_in_the_depth_1_read_counts_each_snapshots_holds(b: ZfsBackend) -> None:
    """The engine learns where holds can be from the read it makes anyway: `userrefs` in the
    same `zfs get -d 1` ("-" on the filesystem itself, a count on each snapshot)."""
    fs = f"{b.base}/ur"
    ok(b, "create", fs)
    for s in ("s1", "s2", "s3"):
        ok(b, "snapshot", f"{fs}@{s}")
    ok(b, "hold", "a", f"{fs}@s1")
    ok(b, "hold", "a", f"{fs}@s3")
    ok(b, "hold", "b", f"{fs}@s3")
    out = ok(b, "get", "-H", "-p", "-d", "1", "-t", "filesystem,volume,snapshot",
             "-o", "name,property,value,source", "guid,userrefs", fs)  # fmt: skip
    got = {(r[0], r[1]): (r[2], r[3]) for r in (ln.split("\t") for ln in out.splitlines())}
    assert got[(fs, "userrefs")] == ("-", "-")
    assert [got[(f"{fs}@{s}", "userrefs")] for s in ("s1", "s2", "s3")] == [
        ("1", "-"),
        ("0", "-"),
        ("2", "-"),
    ]


def test_get_all_by_source_lists_local_and_received_user_properties(b: ZfsBackend) -> None:
    """`handback` finds zrepq's own properties with `zfs get -H -s local,received -o
    property,source all FS`: set ones say local, ones that came with `send -p` received."""
    src, dst = f"{b.base}/gs", f"{b.base2}/gs"
    ok(b, "create", src)
    ok(b, "set", "zrepq:zrep:paused=1", src)
    ok(b, "set", "zrep:src-fs=x", src)
    ok(b, "snapshot", f"{src}@s1")
    send_recv(b, f"-p {src}@s1", f"-u {dst}").check()
    ok(b, "set", "zrepq:zrep:last-error=boom", dst)
    rows = ok(b, "get", "-H", "-s", "local,received", "-o", "property,source", "all", dst)
    got = dict(ln.split("\t") for ln in rows.splitlines())
    assert got["zrepq:zrep:paused"] == "received"
    assert got["zrep:src-fs"] == "received"
    assert got["zrepq:zrep:last-error"] == "local"
    assert all(source in ("local", "received") for source in got.values()), got
    ok(b, "inherit", "zrepq:zrep:paused", dst)
    ok(b, "inherit", "zrepq:zrep:last-error", dst)
    rows = ok(b, "get", "-H", "-s", "local,received", "-o", "property,source", "all", dst)
    assert not [ln for ln in rows.splitlines() if ln.startswith("zrepq:")], rows
    assert get(b, "zrepq:zrep:paused", dst) == "-"


def test_get_output_formats(b: ZfsBackend) -> None:
    fs = f"{b.base}/fmt"
    ok(b, "create", fs)
    ok(b, "set", "zrepq:x=hello", fs)
    out = ok(b, "get", "zrepq:x", fs).splitlines()
    assert re.split(r"\s{2,}", out[0].strip()) == ["NAME", "PROPERTY", "VALUE", "SOURCE"]
    assert out[1].split() == [fs, "zrepq:x", "hello", "local"]
    out = ok(b, "get", "-H", "zrepq:x", fs)
    assert out == f"{fs}\tzrepq:x\thello\tlocal\n"
    out = ok(b, "get", "-H", "-o", "property,value", "zrepq:x,type", fs)
    assert out == "zrepq:x\thello\ntype\tfilesystem\n"
    # -p: creation in epoch seconds; without: OpenZFS's date format
    now = int(time.time())
    created = int(get(b, "creation", fs))
    assert abs(created - now) < 120
    human = ok(b, "get", "-H", "-o", "value", "creation", fs).rstrip("\n")
    # "%a %b %e %k:%M %Y": the hour is space-padded ("Tue Nov 24  0:20 2026"; found on
    # OpenZFS after midnight), the same local time as the epoch seconds
    assert human == sh_ok(b, f"date -d @{created} '+%a %b %e %k:%M %Y'").rstrip("\n")
    # sizes: bytes with -p, human units without
    assert re.fullmatch(r"\d+", get(b, "used", fs))
    assert re.fullmatch(r"[\d.]+[BKMGTPE]", ok(b, "get", "-H", "-o", "value", "used", fs).strip())
    # an unset user property: value and source '-'
    assert ok(b, "get", "-H", "zrepq:unset", fs) == f"{fs}\tzrepq:unset\t-\t-\n"
    assert ok(b, "get", "-H", "-s", "local", "zrepq:unset", fs) == ""
    assert_fails(b.zfs("get", "-o", "nosuch", "all", fs), "invalid column name 'nosuch'", code=2)
    assert_fails(b.zfs("get", "-s", "nosuch", "all", fs), "invalid source 'nosuch'", code=2)
    assert_fails(b.zfs("get", "-t", "nosuch", "all", fs), "invalid type 'nosuch'", code=2)


def test_get_all_lists_native_and_user_properties(b: ZfsBackend) -> None:
    fs = f"{b.base}/all"
    ok(b, "create", fs)
    ok(b, "set", "zrepq:one=1", fs)
    out = ok(b, "get", "-H", "-o", "property,source", "all", fs)
    props = dict(line.split("\t") for line in out.splitlines())
    for p in ("type", "creation", "used", "referenced", "mountpoint", "readonly", "guid",
              "createtxg", "written", "compression", "mounted"):  # fmt: skip
        assert p in props, p
    assert props["zrepq:one"] == "local"
    assert props["guid"] == "-"
    assert ok(b, "get", "-H", "-o", "value", "receive_resume_token", fs).strip() == "-"


def test_get_recursion_types_and_depth(b: ZfsBackend) -> None:
    top = f"{b.base}/rec"
    ok(b, "create", "-p", f"{top}/a/b")
    ok(b, "snapshot", "-r", f"{top}@s1")
    names = ok(b, "get", "-H", "-o", "name", "-r", "type", top).split()
    assert names == [top, f"{top}@s1", f"{top}/a", f"{top}/a@s1", f"{top}/a/b", f"{top}/a/b@s1"]
    names = ok(b, "get", "-H", "-o", "name", "-d", "1", "-t", "filesystem", "type", top).split()
    assert names == [top, f"{top}/a"]
    # -t snapshot with a filesystem argument lists that filesystem's snapshots
    names = ok(b, "get", "-H", "-o", "name", "-t", "snapshot", "type", top).split()
    assert names == [f"{top}@s1"]


def test_list_output_formats(b: ZfsBackend) -> None:
    top = f"{b.base}/ls"
    ok(b, "create", "-p", f"{top}/kid")
    ok(b, "set", "zrepq:tag=t1", top)
    out = ok(b, "list", "-r", top).splitlines()
    assert out[0].split() == ["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"]
    assert [line.split()[0] for line in out[1:]] == [top, f"{top}/kid"]
    out = ok(b, "list", "-H", "-o", "name,zrepq:tag", "-r", top)
    assert out == f"{top}\tt1\n{top}/kid\tt1\n"
    out = ok(b, "list", "-o", "name,zrepq:tag", top).splitlines()
    assert out[0].split() == ["NAME", "ZREPQ:TAG"]
    # column alignment: every row starts its second column at the same offset
    off = out[0].index("ZREPQ:TAG")
    assert out[1][off:].strip() == "t1"
    out = ok(b, "list", "-H", "-p", "-o", "name,used,guid", top).split("\t")
    assert out[0] == top and out[1].isdigit() and out[2].strip().isdigit()


def test_list_types_depth_and_sorting(b: ZfsBackend) -> None:
    top = f"{b.base}/srt"
    ok(b, "create", "-p", f"{top}/kid")
    for s in ("c", "a", "b"):
        ok(b, "snapshot", f"{top}@{s}")
    ok(b, "snapshot", f"{top}/kid@z")
    # without -t, recursion lists no snapshots
    assert ok(b, "list", "-H", "-o", "name", "-r", top).split() == [top, f"{top}/kid"]
    # a snapshot named explicitly is listed
    assert ok(b, "list", "-H", "-o", "name", f"{top}@a").split() == [f"{top}@a"]
    snaps = ok(b, "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", top).split()
    assert snaps == [f"{top}@c", f"{top}@a", f"{top}@b"]  # creation order
    snaps = ok(b, "list", "-H", "-o", "name", "-t", "snapshot", top).split()
    assert snaps == [f"{top}@c", f"{top}@a", f"{top}@b"]
    names = ok(b, "list", "-H", "-o", "name", "-t", "snapshot", "-s", "name", "-r", top).split()
    assert names == [f"{top}/kid@z", f"{top}@a", f"{top}@b", f"{top}@c"]
    names = ok(b, "list", "-H", "-o", "name", "-t", "snapshot", "-S", "createtxg", "-r", top)
    assert names.split()[0] == f"{top}/kid@z"
    out = ok(b, "list", "-H", "-o", "name,type", "-t", "all", "-r", top).splitlines()
    assert [line.split("\t")[1] for line in out].count("snapshot") == 4
    res = b.zfs("list", "-t", "filesystem", f"{top}@a")
    assert_fails(res, f"cannot open '{top}@a'")
    assert_fails(b.zfs("list", "-t", "bogus"), "invalid type 'bogus'", code=2)


def test_written_tracks_changes_since_latest_snapshot(b: ZfsBackend) -> None:
    fs = f"{b.base}/w"
    ok(b, "create", fs)
    ok(b, "snapshot", f"{fs}@s0")
    assert int(get(b, "written", fs)) < 65536
    b.sh(f'head -c 1048576 /dev/urandom > "$(zfs get -H -o value mountpoint {fs})/big"')
    b.zpool("sync", b.pool).check()  # space accounting follows the txg sync
    assert int(get(b, "written", fs)) >= 1048576
    ok(b, "snapshot", f"{fs}@s1")
    assert int(get(b, "written", f"{fs}@s1")) >= 1048576
    assert int(get(b, "written", fs)) < 65536
    assert int(get(b, "referenced", fs)) >= 1048576


def test_written_prints_plain_numbers_without_a_byte_suffix(b: ZfsBackend) -> None:
    """`zfs get -H -o value written` is what zrep's `uptodate` compares with `0`.

    libzfs formats `written` with the plain number formatter ("0", "512", "1.03M"), not the
    byte one that `used`/`referenced` use ("0B", "512B"): nothing written prints `0`. But
    `written@SNAP` goes through the byte formatter: `0B` (seen on 2.1.11 and 2.3.2).
    """
    fs = f"{b.base}/wz"
    ok(b, "create", fs)
    b.sh(f'printf hello > "$(zfs get -H -o value mountpoint {fs})/f"')
    b.zpool("sync", b.pool).check()
    ok(b, "snapshot", f"{fs}@s0")
    b.zpool("sync", b.pool).check()
    value = ok(b, "get", "-H", "-o", "value", "written", fs).rstrip("\n")
    assert value == "0"
    assert ok(b, "get", "-H", "-o", "value", "used", f"{fs}@s0").rstrip("\n") == "0B"
    assert ok(b, "get", "-H", "-o", "value", "written@s0", fs).rstrip("\n") == "0B"
    b.sh(f'head -c 1048576 /dev/urandom > "$(zfs get -H -o value mountpoint {fs})/big"')
    b.zpool("sync", b.pool).check()
    value = ok(b, "get", "-H", "-o", "value", "written", fs).rstrip("\n")
    assert re.fullmatch(r"\d+(\.\d+)?[KM]", value), value
    value = ok(b, "get", "-H", "-o", "value", "written@s0", fs).rstrip("\n")
    assert re.fullmatch(r"\d+(\.\d+)?[KM]", value), value


def test_several_user_properties_in_one_set_and_an_empty_value_is_not_a_removal(
    b: ZfsBackend,
) -> None:
    """What zrep's lock marks may cost (issue 17). One `zfs set a=x b=y fs` sets both, locally
    (zrepq sets `lock-pid` and `lock-time` so). An empty value does *not* remove a user
    property: it stays set locally to "" (OpenZFS 2.1.11 and 2.3.2), which zrep's
    `$ZFSGETLVAL` reads as unlocked but `zfs get -o value,source` tells from a property that
    is not there ("" local against "-" "-"): so clearing the marks stays two `zfs inherit`s
    (it takes one property per call), as zrep does it."""
    fs = f"{b.base}/marks"
    ok(b, "create", fs)
    ok(b, "set", "zrep:lock-pid=123", "zrep:lock-time=20260101000000", fs)
    out = ok(b, "get", "-H", "-o", "property,value,source", "zrep:lock-pid,zrep:lock-time", fs)
    assert out == "zrep:lock-pid\t123\tlocal\nzrep:lock-time\t20260101000000\tlocal\n"
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "set", "zrep:lock-pid=", "zrep:lock-time=", fs)
    assert ok(b, "get", "-H", "-o", "value,source", "zrep:lock-pid", fs) == "\tlocal\n"
    assert ok(b, "get", "-H", "-o", "value", "-s", "local", "zrep:lock-pid", fs) == "\n"
    rows = ok(b, "get", "-H", "-p", "-d", "1", "-t", "filesystem,snapshot",
              "-o", "name,property,value,source", "zrep:lock-pid", fs)  # fmt: skip
    assert rows == f"{fs}\tzrep:lock-pid\t\tlocal\n{fs}@s1\tzrep:lock-pid\t\tinherited from {fs}\n"
    for prop in ("zrep:lock-time", "zrep:lock-pid"):
        ok(b, "inherit", prop, fs)
    assert ok(b, "get", "-H", "-o", "value,source", "zrep:lock-pid", fs) == "-\t-\n"
    assert ok(b, "get", "-H", "-o", "value", "-s", "local", "zrep:lock-pid", fs) == ""
    # one property twice in one call: refused, nothing set
    twice = b.zfs("set", "zrep:a=1", "zrep:a=", fs)
    assert_fails(twice, "property 'zrep:a' specified multiple times", code=255)
    assert "usage" not in twice.stderr
    assert get_src(b, "zrep:a", fs) == ("-", "-")
