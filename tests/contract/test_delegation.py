"""Least privilege (issue 15): a user that is not root runs zfs with what `zfs allow`
delegated to it, and nothing more; Linux lets only root mount. The messages of every refusal
a replication tool can meet, the permissions each command needs, and `zfs allow`'s own
behaviour. The user is `nobody` (UNPRIVILEGED), on the stand-in and in the guests."""

from __future__ import annotations

import pytest

from tests.harness.zfs_backend import (
    UNPRIVILEGED,
    UNPRIVILEGED_GROUP,
    ZfsBackend,
    assert_fails,
    exists,
    get,
    get_src,
    ok,
    send_recv,
    set_failure_code,
    snapshots,
    write_file,
    zfs_version,
)

pytestmark = pytest.mark.unprivileged
U = UNPRIVILEGED


def source(b: ZfsBackend) -> str:
    fs = f"{b.base}/src"
    ok(b, "create", fs)
    write_file(b, fs, "f", b"data\n")
    ok(b, "snapshot", f"{fs}@s1")
    ok(b, "snapshot", f"{fs}@s2")
    ok(b, "hold", "keep", f"{fs}@s1")
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#b1")
    return fs


def test_without_delegation_every_change_is_refused(b: ZfsBackend) -> None:
    fs = source(b)
    denied = [
        (["snapshot", f"{fs}@u1"], "cannot create snapshots : permission denied"),
        (["inherit", "zrep:x", fs], f"cannot inherit zrep:x for '{fs}': permission denied"),
        (["hold", "t", f"{fs}@s1"], "cannot hold: permission denied"),
        (["release", "keep", f"{fs}@s1"], "cannot release: permission denied"),
        (["destroy", f"{fs}@s2"], "cannot destroy snapshots: permission denied"),
        (["destroy", f"{fs}#b1"], "cannot destroy bookmark: permission denied"),
        (["bookmark", f"{fs}@s2", f"{fs}#b2"],
         f"cannot create bookmark '{fs}#b2': permission denied"),
        (["create", f"{fs}/c"], f"cannot create '{fs}/c': permission denied"),
        (["rename", f"{fs}@s2", f"{fs}@s2x"], f"cannot rename '{fs}@s2': permission denied"),
        (["rollback", f"{fs}@s2"], f"cannot rollback '{fs}': permission denied"),
        (["unmount", fs], f"cannot unmount '{get(b, 'mountpoint', fs)}': permission denied"),
        (["allow", U, "snapshot", fs], f"cannot set permissions on '{fs}': permission denied"),
    ]  # fmt: skip
    for argv, message in denied:
        assert_fails(b.zfs(*argv, user=U), message)
    assert_fails(b.zfs("set", "zrep:x=1", fs, user=U),
                 f"cannot set property for '{fs}': permission denied",
                 code=set_failure_code(b))  # fmt: skip
    res = b.sh(f"zfs send {fs}@s1 | wc -c", user=U)
    assert_fails(res, f"warning: cannot send '{fs}@s1': permission denied", code=0)
    assert res.stdout.strip() == "0"
    assert_fails(send_recv(b, f"{fs}@s1", f"-u {b.base2}/dst", recv_user=U),
                 "cannot receive new filesystem stream: permission denied")  # fmt: skip
    # reading needs nothing
    assert b.zfs("send", "-nvP", f"{fs}@s1", user=U).ok
    assert ok(b, "get", "-H", "-o", "value", "userrefs", f"{fs}@s1", user=U).strip() == "1"
    assert "keep" in ok(b, "holds", "-H", f"{fs}@s1", user=U)
    assert ok(b, "allow", fs, user=U) == ""
    assert snapshots(b, fs) == ["s1", "s2"] and exists(b, f"{fs}#b1")


def test_zfs_allow_prints_grants_as_openzfs(b: ZfsBackend) -> None:
    fs = source(b)
    ok(b, "allow", "-l", U, "send", fs)
    ok(b, "allow", "-d", U, "hold", b.base)
    ok(b, "allow", U, "userprop,snapshot", fs)
    ok(b, "allow", "-g", UNPRIVILEGED_GROUP, "mount", fs)
    ok(b, "allow", "-e", "bookmark", fs)
    ok(b, "allow", "-s", "@myset", "create,mount", fs)
    ok(b, "allow", "-c", "destroy", fs)
    head = f"---- Permissions on {fs} "
    head2 = f"---- Permissions on {b.base} "
    expected = [
        head + "-" * (70 - len(head)),
        "Permission sets:",
        "\t@myset create,mount",
        "Create time permissions:",
        "\tdestroy",
        "Local permissions:",
        f"\tuser {U} send",
        "Local+Descendent permissions:",
        f"\tuser {U} snapshot,userprop",
        f"\tgroup {UNPRIVILEGED_GROUP} mount",
        "\teveryone bookmark",
        head2 + "-" * (70 - len(head2)),
        "Descendent permissions:",
        f"\tuser {U} hold",
    ]
    assert ok(b, "allow", fs).splitlines() == expected
    assert ok(b, "allow", fs, user=U).splitlines() == expected  # anyone may look
    # unallow: some permissions, then all of a user's, recursively
    ok(b, "unallow", U, "snapshot", fs)
    assert f"\tuser {U} userprop" in ok(b, "allow", fs).splitlines()
    ok(b, "unallow", "-r", U, b.base)
    out = ok(b, "allow", fs)
    assert f"user {U}" not in out and f"group {UNPRIVILEGED_GROUP} mount" in out
    assert "Permissions on " + b.base + " " not in out


def test_zfs_allow_refusals(b: ZfsBackend) -> None:
    fs = source(b)
    assert_fails(b.zfs("allow", U, "bogus", fs),
                 f"cannot set permissions on '{fs}': operation not applicable to datasets of this "
                 "type")  # fmt: skip
    assert_fails(b.zfs("allow", U, "snapshot", f"{fs}@s1"),
                 f"cannot open '{fs}@s1': snapshot delimiter '@' is not expected here",
                 f"Failed to open dataset: {fs}@s1", code=255)  # fmt: skip
    res = b.zfs("allow", "no-such-user-zrepq", "snapshot", fs)
    assert res.returncode == 0  # OpenZFS prints its help to stdout and exits 0 here
    assert "zfs: error: invalid user/group no-such-user-zrepq" in res.stdout
    assert_fails(b.zfs("allow", "-u", U, fs), "zfs: error: wrong number of parameters", code=2)
    # a user with `allow` may pass on what they hold, and only that
    ok(b, "allow", U, "allow,snapshot", fs)
    ok(b, "allow", "root", "snapshot", fs, user=U)
    assert_fails(b.zfs("allow", "root", "destroy", fs, user=U),
                 f"cannot set permissions on '{fs}': permission denied")  # fmt: skip


def test_send_side_delegation(b: ZfsBackend) -> None:
    """One `zfs allow` line for the sending side: what a sync does there."""
    fs = source(b)
    ok(b, "allow", U, "send,snapshot,hold,release,bookmark,userprop,destroy,mount", fs)
    ok(b, "snapshot", f"{fs}@root")  # content and snapshots written as root are readable
    ok(b, "snapshot", f"{fs}@s3", user=U)
    ok(b, "hold", "zrepq:a:lastsent", f"{fs}@s3", user=U)
    ok(b, "bookmark", f"{fs}@s3", f"{fs}#zrepq_a", user=U)
    ok(b, "set", "zrep:sent=1", f"{fs}@s3", user=U)
    ok(b, "set", "zrep:master=yes", fs, user=U)
    assert int(b.sh(f"zfs send -i @s2 {fs}@s3 | wc -c", user=U).check().stdout) > 0
    ok(b, "release", "keep", f"{fs}@s1", user=U)
    ok(b, "destroy", f"{fs}@s1", user=U)
    ok(b, "destroy", f"{fs}#b1", user=U)
    assert snapshots(b, fs) == ["s2", "root", "s3"]
    assert get_src(b, "zrep:sent", f"{fs}@s3") == ("1", "local")


def send_as(b: ZfsBackend, args: str) -> tuple[int, int, str]:
    """`zfs send ARGS` as U into a pipe: (its exit status, bytes written, its stderr)."""
    res = b.sh(f'{{ zfs send {args}; echo "exit=$?" >&2; }} | wc -c', user=U).check()
    lines = res.stderr.splitlines()
    assert lines and lines[-1].startswith("exit="), res.stderr
    return int(lines[-1][5:]), int(res.stdout), "\n".join(lines[:-1])


def test_sends_of_several_snapshots_need_hold(b: ZfsBackend) -> None:
    """libzfs's -I and -R sends take temporary user holds (`.send-PID-N`) on what they send,
    after the size estimate: a user with `send` alone gets nothing from them. A full or -i
    send (from a snapshot or a bookmark, raw or with properties) takes none, nor does -n."""
    fs = source(b)
    ok(b, "snapshot", f"{fs}@s3")
    ok(b, "create", f"{fs}/kid")
    ok(b, "snapshot", "-r", f"{fs}@r1")
    ok(b, "allow", U, "send", fs)
    for form in ["", "-i @s1", "-i '#b1'", "-w", "-w -i @s2", "-p", "-p -i @s1", "-c -i @s1"]:
        code, size, err = send_as(b, f"{form} {fs}@s3")
        assert (code, err) == (0, "") and size > 0, (form, code, err)
    refused = ["cannot hold: permission denied", f"cannot send '{fs}': permission denied"]
    for form, snap in [("-I @s1", "s3"), ("-w -I @s1", "s3"), ("-p -I @s2", "s3"),
                       ("-R", "r1"), ("-R -I @s1", "r1"), ("-R -w", "r1")]:  # fmt: skip
        code, _size, err = send_as(b, f"{form} {fs}@{snap}")
        assert (code, err.splitlines()) == (1, refused), (form, code, err)
    code, _size, err = send_as(b, f"-v -I @s1 {fs}@s3")  # the estimate comes first
    assert code == 1 and err.splitlines()[-2:] == refused
    assert err.splitlines()[0].startswith(f"send from @s1 to {fs}@s2 estimated size is ")
    assert b.zfs("send", "-nv", "-I", "@s1", f"{fs}@s3", user=U).ok
    # checked at each sent snapshot's filesystem: a local grant there is enough for -I,
    # -R needs it on the children too; `release` is not needed (the holds go with the fd)
    ok(b, "allow", "-l", U, "hold", fs)
    code, size, err = send_as(b, f"-I @s1 {fs}@s3")
    assert (code, err) == (0, "") and size > 0
    code, _size, err = send_as(b, f"-R {fs}@r1")
    assert (code, err.splitlines()) == (1, refused)
    ok(b, "allow", "-d", U, "hold", b.base)
    code, size, err = send_as(b, f"-R -I @s1 {fs}@r1")
    assert (code, err) == (0, "") and size > 0
    holds = ok(b, "holds", "-H", f"{fs}@s1", f"{fs}@s3", f"{fs}/kid@r1").splitlines()
    assert [h.split("\t")[:2] for h in holds] == [[f"{fs}@s1", "keep"]]  # none left


def test_a_send_refused_for_want_of_send(b: ZfsBackend) -> None:
    """Without `send` (holds granted): a full or -i send writes nothing and fails; an -I send
    warns per snapshot, still writes its package (header and end, no snapshot) and exits 0
    on 2.1 (1 on 2.3): `zfs recv` takes that stream as nothing to receive, and succeeds."""
    fs = source(b)
    ok(b, "snapshot", f"{fs}@s3")
    dst = f"{b.base2}/dst"
    b.sh(f"zfs send {fs}@s1 | zfs recv -u {dst}").check()
    ok(b, "allow", U, "hold", fs)
    for form in ["", "-i @s1"]:
        code, size, err = send_as(b, f"{form} {fs}@s3")
        assert (code, size, err) == (1, 0, f"warning: cannot send '{fs}@s3': permission denied")
    made = b.sh("f=$(mktemp /var/tmp/zrepq-stream.XXXXXX) && chmod 666 $f && echo $f")
    stream = made.check().stdout.strip()
    try:
        res = b.sh(f"zfs send -I @s1 {fs}@s3 > {stream}", user=U)
        assert_fails(res, f"warning: cannot send '{fs}@s2': permission denied",
                     f"warning: cannot send '{fs}@s3': permission denied",
                     code=1 if zfs_version(b) >= (2, 3, 0) else 0)  # fmt: skip
        assert int(b.sh(f"wc -c < {stream}").check().stdout) > 0
        b.sh(f"zfs recv -u -F {dst} < {stream}").check()  # nothing received, no error
        assert snapshots(b, dst) == ["s1"]
    finally:
        b.sh(f"rm -f {stream}")


def test_where_a_grant_applies(b: ZfsBackend) -> None:
    """A snapshot is checked as a descendent, even at its own filesystem: a local-only grant
    on the filesystem does not cover its snapshots (send, destroy), a descendent-only one
    does; a bookmark is checked at its filesystem. Destroying a snapshot needs mount too."""
    fs = source(b)
    ok(b, "allow", "-l", U, "send,destroy", fs)
    assert_fails(b.sh(f"zfs send {fs}@s2 | wc -c", user=U),
                 f"warning: cannot send '{fs}@s2': permission denied", code=0)  # fmt: skip
    assert_fails(
        b.zfs("destroy", f"{fs}@s2", user=U), "cannot destroy snapshots: permission denied"
    )
    ok(b, "allow", "-l", U, "mount", fs)
    assert_fails(
        b.zfs("destroy", f"{fs}@s2", user=U), "cannot destroy snapshots: permission denied"
    )
    ok(b, "destroy", f"{fs}#b1", user=U)  # destroy on the filesystem itself: local is enough
    ok(b, "allow", "-d", U, "send,destroy", fs)
    assert_fails(
        b.zfs("destroy", f"{fs}@s2", user=U), "cannot destroy snapshots: permission denied"
    )
    ok(b, "allow", "-d", U, "mount", fs)
    ok(b, "destroy", f"{fs}@s2", user=U)
    assert int(b.sh(f"zfs send {fs}@s1 | wc -c", user=U).check().stdout) > 0
    # a grant on an ancestor reaches down (descendent), not up
    ok(b, "allow", "-d", U, "snapshot", b.base)
    ok(b, "snapshot", f"{fs}@fromparent", user=U)
    assert_fails(b.zfs("snapshot", f"{b.base}@top", user=U),
                 "cannot create snapshots : permission denied")  # fmt: skip


def test_receive_side_delegation(b: ZfsBackend) -> None:
    fs = source(b)
    dst = f"{b.base2}/dst"
    ok(b, "allow", U, "receive", b.base2)
    assert_fails(send_recv(b, f"{fs}@s1", f"-u {dst}", recv_user=U),
                 "cannot receive new filesystem stream: permission denied")  # fmt: skip
    ok(b, "allow", U, "create", b.base2)
    assert_fails(send_recv(b, f"{fs}@s1", f"-u {dst}", recv_user=U),
                 "cannot receive new filesystem stream: permission denied")  # fmt: skip
    ok(b, "allow", U, "mount", b.base2)
    send_recv(b, f"{fs}@s1", f"-u {dst}", recv_user=U).check()
    assert get(b, "mounted", dst) == "no"
    send_recv(b, f"-i @s1 {fs}@s2", f"-u {dst}", recv_user=U).check()
    assert snapshots(b, dst) == ["s1", "s2"]
    # a property needs its own permission: without it the receive succeeds without it
    res = send_recv(b, f"{fs}@s1", f"-u -o readonly=on {b.base2}/ro", recv_user=U)
    assert res.ok, res.stderr
    assert f"cannot receive readonly property on {b.base2}/ro: permission denied" in res.stderr
    assert get_src(b, "readonly", f"{b.base2}/ro") == ("off", "default")
    ok(b, "allow", U, "readonly,userprop", b.base2)
    send_recv(b, f"{fs}@s1", f"-u -o readonly=on {b.base2}/ro2", recv_user=U).check()
    assert get_src(b, "readonly", f"{b.base2}/ro2") == ("on", "local")
    # -F needs nothing more: the kernel rolls back and destroys newer snapshots itself
    ok(b, "snapshot", f"{dst}@newer")
    ok(b, "snapshot", f"{fs}@s3")
    send_recv(b, f"-i @s2 {fs}@s3", f"-u -F {dst}", recv_user=U).check()
    assert snapshots(b, dst) == ["s1", "s2", "s3"]


def test_receive_without_u_cannot_mount(b: ZfsBackend) -> None:
    """Linux lets only root mount: the receive lands, the mount fails (reported; counted as
    a failure by 2.1 only). Hence `zfs recv -u` for a user that is not root."""
    fs = source(b)
    ok(b, "allow", U, "receive,create,mount", b.base2)
    dst = f"{b.base2}/dst"
    res = send_recv(b, f"{fs}@s1", dst, recv_user=U)
    assert res.returncode == (0 if zfs_version(b) >= (2, 2, 0) else 1), res
    assert "cannot mount '" in res.stderr
    assert snapshots(b, dst) == ["s1"]
    assert get(b, "mounted", dst) == "no"
    res = b.zfs("mount", dst, user=U)
    assert_fails(res, "cannot mount '")
    assert get(b, "mounted", dst) == "no"


def test_rollback_and_rename_need_their_permissions(b: ZfsBackend) -> None:
    fs = source(b)
    dst = f"{b.base2}/dst"
    ok(b, "allow", U, "receive,create,mount", b.base2)
    send_recv(b, f"{fs}@s1", f"-u {dst}", recv_user=U).check()
    send_recv(b, f"-i @s1 {fs}@s2", f"-u {dst}", recv_user=U).check()
    assert_fails(
        b.zfs("rollback", f"{dst}@s2", user=U), f"cannot rollback '{dst}': permission denied"
    )
    ok(b, "allow", U, "rollback", b.base2)
    ok(b, "rollback", f"{dst}@s2", user=U)
    res = b.zfs("rollback", "-r", f"{dst}@s1", user=U)  # destroys s2: destroy needed
    assert_fails(res, f"cannot destroy '{dst}@s2': permission denied")
    assert snapshots(b, dst) == ["s1", "s2"]
    ok(b, "allow", U, "destroy", b.base2)
    ok(b, "rollback", "-r", f"{dst}@s1", user=U)
    assert snapshots(b, dst) == ["s1"]
    assert_fails(b.zfs("rename", f"{dst}@s1", f"{dst}@r1", user=U),
                 f"cannot rename '{dst}@s1': permission denied")  # fmt: skip
    ok(b, "allow", U, "rename", b.base2)
    ok(b, "rename", f"{dst}@s1", f"{dst}@r1", user=U)
    ok(b, "rename", dst, f"{b.base2}/moved", user=U)  # unmounted: nothing to unmount
    assert snapshots(b, f"{b.base2}/moved") == ["r1"]


def test_set_applies_what_it_may(b: ZfsBackend) -> None:
    fs = source(b)
    code = set_failure_code(b)
    ok(b, "allow", U, "userprop", fs)
    assert_fails(b.zfs("set", "zrep:a=1", "readonly=on", fs, user=U),
                 f"cannot set property for '{fs}': permission denied", code=code)  # fmt: skip
    assert get(b, "zrep:a", fs) == "1"  # the kernel set the one it could
    assert get(b, "readonly", fs) == "off"
    ok(b, "allow", U, "readonly", fs)
    # a mount option of a mounted filesystem: set, but the remount is root's
    res = b.zfs("set", "readonly=on", fs, user=U)
    assert_fails(res, f"cannot mount '{fs}': Insufficient privileges",
                 "property may be set but unable to remount filesystem", code=code)  # fmt: skip
    assert get(b, "readonly", fs) == "on"
    # inherit: the same, in fewer words and exit 1 on every line
    res = b.zfs("inherit", "readonly", fs, user=U)
    assert_fails(res, f"cannot mount '{fs}': Insufficient privileges")
    assert "property may be set" not in res.stderr
    assert get_src(b, "readonly", fs) == ("off", "default")
    ok(b, "set", "readonly=on", fs)
    ok(b, "unmount", fs)
    ok(b, "set", "readonly=off", fs, user=U)  # unmounted: nothing to remount
    assert get(b, "readonly", fs) == "off"
    ok(b, "inherit", "readonly", fs, user=U)


def test_create_and_mount_as_unprivileged(b: ZfsBackend) -> None:
    ok(b, "allow", U, "create,mount", b.base)
    res = b.zfs("create", f"{b.base}/c1", user=U)
    assert_fails(res, "filesystem successfully created, but it may only be mounted by root")
    assert exists(b, f"{b.base}/c1") and get(b, "mounted", f"{b.base}/c1") == "no"
    ok(b, "create", "-u", f"{b.base}/c2", user=U)
    assert get(b, "mounted", f"{b.base}/c2") == "no"
    assert_fails(b.zfs("create", "-u", "-o", "readonly=on", f"{b.base}/c3", user=U),
                 f"cannot create '{b.base}/c3': permission denied")  # fmt: skip
    assert_fails(b.zfs("mount", f"{b.base}/c2", user=U), "cannot mount '")
    ok(b, "mount", f"{b.base}/c2")
    assert_fails(
        b.zfs("unmount", f"{b.base}/c2", user=U),
        f"cannot unmount '{get(b, 'mountpoint', f'{b.base}/c2')}': permission denied",
    )


def test_receive_append_permission(b: ZfsBackend) -> None:
    """`receive:append` (from 2.3.2): receives that need no -F; earlier lines refuse the name."""
    fs = source(b)
    ok(b, "snapshot", f"{fs}@s3")
    res = b.zfs("allow", U, "receive:append,create,mount", b.base2)
    if zfs_version(b) < (2, 3, 2):
        assert_fails(res, f"cannot set permissions on '{b.base2}': operation not applicable to "
                     "datasets of this type")  # fmt: skip
        return
    res.check()
    dst = f"{b.base2}/dst"
    send_recv(b, f"{fs}@s1", f"-u {dst}", recv_user=U).check()
    send_recv(b, f"-i @s1 {fs}@s2", f"-u {dst}", recv_user=U).check()
    assert_fails(send_recv(b, f"-i @s2 {fs}@s3", f"-u -F {dst}", recv_user=U),
                 "cannot receive incremental stream: permission denied")  # fmt: skip


def test_load_key_needs_its_permission(b: ZfsBackend) -> None:
    key = b.sh("f=$(mktemp /var/tmp/zrepq-key.XXXXXX) && chmod 644 $f && "
               "echo 'correct horse battery' > $f && echo $f").check().stdout.strip()  # fmt: skip
    try:
        fs = f"{b.base}/enc"
        ok(b, "create", "-o", "encryption=on", "-o", "keyformat=passphrase",
           "-o", f"keylocation=file://{key}", fs)  # fmt: skip
        ok(b, "unmount", fs)
        ok(b, "unload-key", fs)
        assert_fails(b.zfs("load-key", fs, user=U), "Key load error: Permission denied.", code=255)
        ok(b, "allow", U, "load-key", fs)
        ok(b, "load-key", fs, user=U)
        assert get(b, "keystatus", fs) == "available"
        assert_fails(b.zfs("mount", fs, user=U), f"cannot mount '{fs}': Insufficient privileges")
        ok(b, "unload-key", fs, user=U)
        assert get(b, "keystatus", fs) == "unavailable"
    finally:
        b.sh(f"rm -f {key}")
