"""Native encryption as a replication tool meets it (issue 15): encrypted datasets and their
properties, keys (load-key, unload-key, change-key), raw sends (`-w`) that leave the standby
without a key, the refusals around them, and the takeover of a raw-received standby."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from tests.harness.zfs_backend import (
    ZfsBackend,
    assert_fails,
    exists,
    get,
    get_src,
    guid,
    ok,
    read_file,
    send_recv,
    set_failure_code,
    sh_ok,
    snapshots,
    write_file,
    zfs_version,
)

PASS = "correct horse battery"
OTHER = "another passphrase"


class Keys:
    """Key files in a directory of this test's own (the backend's machine)."""

    def __init__(self, b: ZfsBackend, d: str):
        self.b = b
        self.dir = d

    def file(self, name: str, data: bytes) -> str:
        path = f"{self.dir}/{name}"
        sh_ok(self.b, f"cat > {shlex.quote(path)} && chmod 644 {shlex.quote(path)}", input=data)
        return path

    def passphrase(self, name: str = "pass", text: str = PASS) -> str:
        return "file://" + self.file(name, text.encode() + b"\n")


@pytest.fixture
def keys(b: ZfsBackend) -> Iterator[Keys]:
    d = sh_ok(b, "d=$(mktemp -d /var/tmp/zrepq-keys.XXXXXX) && chmod 755 $d && echo $d").strip()
    yield Keys(b, d)
    b.sh(f"rm -rf {shlex.quote(d)}")


def encrypted(b: ZfsBackend, keys: Keys, name: str = "enc") -> str:
    """`base/<name>`, an encryption root with a passphrase from a key file, holding `f`."""
    fs = f"{b.base}/{name}"
    ok(b, "create", "-o", "encryption=on", "-o", "keyformat=passphrase",
       "-o", f"keylocation={keys.passphrase()}", fs)  # fmt: skip
    write_file(b, fs, "f", b"secret 1\n")
    ok(b, "snapshot", f"{fs}@s1")
    return fs


def props(b: ZfsBackend, ds: str, names: str) -> dict[str, tuple[str, str]]:
    out = ok(b, "get", "-H", "-o", "property,value,source", names, ds)
    return {p: (v, s) for p, v, s in (line.split("\t") for line in out.splitlines())}


CRYPT = "encryption,keyformat,keylocation,keystatus,encryptionroot,pbkdf2iters"


def test_encrypted_dataset_properties(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    loc = keys.passphrase()
    ok(b, "create", f"{fs}/child")
    assert props(b, fs, CRYPT) == {
        "encryption": ("aes-256-gcm", "-"), "keyformat": ("passphrase", "-"),
        "keylocation": (loc, "local"), "keystatus": ("available", "-"),
        "encryptionroot": (fs, "-"), "pbkdf2iters": ("350000", "-"),
    }  # fmt: skip
    assert props(b, f"{fs}/child", CRYPT) == {
        "encryption": ("aes-256-gcm", "-"), "keyformat": ("passphrase", "-"),
        "keylocation": ("none", "default"), "keystatus": ("available", "-"),
        "encryptionroot": (fs, "-"), "pbkdf2iters": ("350000", "-"),
    }  # fmt: skip
    snap = props(b, f"{fs}@s1", CRYPT)
    assert snap["keystatus"] == ("available", "-")
    assert snap["encryptionroot"] == (fs, "-")
    assert snap["encryption"] == ("aes-256-gcm", "-")
    assert snap["keyformat"] == ("-", "-") and snap["keylocation"] == ("-", "-")
    assert props(b, b.base, CRYPT) == {
        "encryption": ("off", "default"), "keyformat": ("none", "default"),
        "keylocation": ("none", "default"), "keystatus": ("-", "-"),
        "encryptionroot": ("-", "-"), "pbkdf2iters": ("0", "default"),
    }  # fmt: skip
    raw = keys.file("raw32", bytes(range(32)))
    ok(b, "create", "-o", "encryption=aes-128-gcm", "-o", "keyformat=raw",
       "-o", f"keylocation=file://{raw}", f"{b.base}/raw")  # fmt: skip
    got = props(b, f"{b.base}/raw", CRYPT)
    assert got["encryption"] == ("aes-128-gcm", "-") and got["keyformat"] == ("raw", "-")
    assert got["pbkdf2iters"] == ("0", "default")
    hexkey = keys.file("hex", bytes(range(32)).hex().encode() + b"\n")
    ok(b, "create", "-o", "encryption=on", "-o", "keyformat=hex",
       "-o", f"keylocation=file://{hexkey}", f"{b.base}/hex")  # fmt: skip
    assert get(b, "keyformat", f"{b.base}/hex") == "hex"
    # keylocation=prompt reads the key from stdin when it is not a terminal
    ok(b, "create", "-o", "encryption=on", "-o", "keyformat=passphrase", f"{b.base}/prompt",
       input=PASS.encode() + b"\n")  # fmt: skip
    assert get_src(b, "keylocation", f"{b.base}/prompt") == ("prompt", "local")


def test_create_refusals(b: ZfsBackend, keys: Keys) -> None:
    new = f"{b.base}/new"
    short = keys.passphrase("short", "short")
    cases = [
        (["encryption=on", "keyformat=passphrase", f"keylocation={short}"],
         "Passphrase too short (min 8)."),
        (["encryption=on", "keyformat=raw", f"keylocation=file://{keys.file('r31', b'x' * 31)}"],
         "Raw key too short (expected 32)."),
        (["encryption=on", "keyformat=hex", f"keylocation={keys.passphrase()}"],
         "Hex key too short (expected 64)."),
        (["encryption=on"], "Keyformat required for new encryption root."),
        (["keyformat=passphrase", f"keylocation={keys.passphrase()}"],
         "Encryption must be turned on to set encryption properties."),
        (["encryption=on", "keyformat=passphrase", f"keylocation=file://{keys.dir}/none"],
         "Failed to open key material file: No such file or directory"),
        (["encryption=on", "keyformat=passphrase", f"keylocation={keys.dir}/pass"],
         "invalid keylocation"),
        (["encryption=bogus", "keyformat=passphrase", f"keylocation={keys.passphrase()}"],
         "'encryption' must be one of 'on | off | aes-128-ccm"),
    ]  # fmt: skip
    for options, message in cases:
        argv = [a for o in options for a in ("-o", o)]
        assert_fails(b.zfs("create", *argv, new), f"cannot create '{new}': {message}")
        assert not exists(b, new)


def test_set_refusals_on_encryption_properties(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    ok(b, "create", f"{fs}/child")
    code = set_failure_code(b)
    loc = keys.passphrase()
    assert_fails(b.zfs("set", f"keylocation={loc}", f"{fs}/child"),
                 f"cannot set property for '{fs}/child': keylocation may only be set on "
                 "encryption roots", code=code)  # fmt: skip
    assert_fails(b.zfs("set", f"keylocation={loc}", b.base),
                 f"cannot set property for '{b.base}': keylocation must be 'none' for "
                 "unencrypted datasets", code=code)  # fmt: skip
    for prop in ("encryption=off", "keyformat=raw", "keystatus=available"):
        name = prop.split("=")[0]
        assert_fails(b.zfs("set", prop, fs), f"'{name}' is readonly", code=code)
    assert_fails(b.zfs("inherit", "keylocation", fs), "'keylocation' property cannot be inherited")
    ok(b, "set", "keylocation=prompt", fs)
    ok(b, "set", f"keylocation={loc}", fs)
    assert get_src(b, "keylocation", fs) == (loc, "local")


def test_unload_and_load_key(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    ok(b, "create", f"{fs}/child")
    assert_fails(b.zfs("unload-key", fs), f"Key unload error: '{fs}' is busy.", code=255)
    ok(b, "unmount", fs)  # takes the child down with it
    assert get(b, "mounted", f"{fs}/child") == "no"
    assert_fails(b.zfs("unload-key", f"{fs}/child"),
                 f"Key unload error: Keys must be unloaded for encryption root of '{fs}/child' "
                 f"({fs}).", code=255)  # fmt: skip
    ok(b, "unload-key", fs)
    assert get(b, "keystatus", fs) == "unavailable"
    assert get(b, "keystatus", f"{fs}/child") == "unavailable"
    assert get(b, "keystatus", f"{fs}@s1") == "unavailable"
    assert_fails(b.zfs("unload-key", fs), f"Key unload error: Key already unloaded for '{fs}'.",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("mount", fs), f"cannot mount '{fs}': encryption key not loaded")
    mp = get(b, "mountpoint", fs)
    assert b.sh(f"test -e {shlex.quote(mp + '/f')}").returncode != 0  # nothing readable
    ok(b, "snapshot", f"{fs}@nokey")  # a snapshot needs no key
    # the key: wrong, then for a dataset that is not the root, then right
    wrong = keys.passphrase("wrong", OTHER)
    assert_fails(b.zfs("load-key", "-L", wrong, fs),
                 f"Key load error: Incorrect key provided for '{fs}'.", code=255)  # fmt: skip
    assert_fails(b.zfs("load-key", f"{fs}/child"),
                 f"Key load error: Keys must be loaded for encryption root of '{fs}/child' "
                 f"({fs}).", code=255)  # fmt: skip
    res = b.zfs("load-key", "-n", fs)
    assert res.ok and res.stdout == "1 / 1 key(s) successfully verified\n"
    assert get(b, "keystatus", fs) == "unavailable"
    ok(b, "load-key", fs)
    assert get(b, "keystatus", fs) == "available"
    assert get(b, "mounted", fs) == "no"  # load-key does not mount
    assert_fails(b.zfs("load-key", fs), f"Key load error: Key already loaded for '{fs}'.",
                 code=255)  # fmt: skip
    ok(b, "mount", fs)
    assert read_file(b, fs, "f") == b"secret 1\n"
    assert_fails(b.zfs("load-key", b.base), f"Key load error: '{b.base}' is not encrypted.",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("unload-key", b.base), f"Key unload error: '{b.base}' is not encrypted.",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("load-key"), "Missing dataset argument or -a option", code=2)
    # -r/-a report a count
    ok(b, "unmount", fs)
    res = b.zfs("unload-key", "-r", fs)
    assert res.ok and res.stdout == "1 / 1 key(s) successfully unloaded\n"
    res = b.zfs("load-key", "-r", fs)
    assert res.ok and res.stdout == "1 / 1 key(s) successfully loaded\n"


def test_non_raw_send_needs_the_key_and_arrives_unencrypted(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    plain = f"{b.base2}/plain"
    # loaded: a plain send decrypts; into an unencrypted parent it stays plain (no refusal:
    # keeping encrypted data encrypted is the sender's choice, -w)
    send_recv(b, f"{fs}@s1", plain).check()
    assert props(b, plain, "encryption,keystatus,encryptionroot") == {
        "encryption": ("off", "default"),
        "keystatus": ("-", "-"),
        "encryptionroot": ("-", "-"),
    }
    assert read_file(b, plain, "f") == b"secret 1\n"
    # into an encrypted parent it is encrypted again, under the parent's key
    parent = encrypted(b, keys, "encparent")
    send_recv(b, f"{fs}@s1", f"{parent}/inherited").check()
    assert get(b, "encryptionroot", f"{parent}/inherited") == parent
    # unloaded: only a raw send works (and -n, which needs no data)
    ok(b, "unmount", fs)
    ok(b, "unload-key", fs)
    res = b.sh(f"zfs send {fs}@s1 | wc -c")
    assert_fails(res, f"warning: cannot send '{fs}@s1': dataset key must be loaded", code=0)
    assert res.stdout.strip() == "0"
    ok(b, "snapshot", f"{fs}@s2")
    assert_fails(b.sh(f"zfs send -i @s1 {fs}@s2 | wc -c"),
                 f"warning: cannot send '{fs}@s2': dataset key must be loaded", code=0)  # fmt: skip
    assert b.zfs("send", "-nvP", f"{fs}@s1").ok
    assert int(b.sh(f"zfs send -w {fs}@s1 | wc -c").check().stdout) > 0
    # properties of an encrypted dataset travel only raw
    for flag in ("-p", "-R"):
        res = b.sh(f"zfs send {flag} {fs}@s1 | wc -c")
        assert_fails(res, f"cannot send {fs}@s1: encrypted dataset {fs} may not be sent with "
                     "properties without the raw flag",
                     f"warning: cannot send '{fs}@s1': backup failed", code=0)  # fmt: skip


def test_raw_receive_leaves_the_standby_without_a_key(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    sb = f"{b.base2}/sb"
    send_recv(b, f"-w {fs}@s1", sb).check()  # no -u: a filesystem without its key stays down
    assert props(b, sb, CRYPT) == {
        "encryption": ("aes-256-gcm", "-"), "keyformat": ("passphrase", "-"),
        "keylocation": ("prompt", "local"), "keystatus": ("unavailable", "-"),
        "encryptionroot": (sb, "-"), "pbkdf2iters": ("350000", "-"),
    }  # fmt: skip
    assert get(b, "mounted", sb) == "no"
    assert guid(b, f"{sb}@s1") == guid(b, f"{fs}@s1")
    assert_fails(b.zfs("mount", sb), f"cannot mount '{sb}': encryption key not loaded")
    assert b.sh(f"test -e {shlex.quote(get(b, 'mountpoint', sb) + '/f')}").returncode != 0
    # a raw stream brings its encryption: -o/-x may not change it; keylocation is the
    # receiver's own
    for opt in ("-o encryption=off", "-x encryption", "-o keyformat=raw"):
        name = opt.split()[1].split("=")[0]
        assert_fails(send_recv(b, f"-w {fs}@s1", f"-u {opt} {b.base2}/other"),
                     f"cannot receive new filesystem stream: encryption property '{name}' cannot "
                     "be set or excluded for raw streams.")  # fmt: skip
    loc = keys.passphrase()
    send_recv(b, f"-w {fs}@s1", f"-u -o keylocation={loc} -o readonly=on {b.base2}/sb2").check()
    assert get_src(b, "keylocation", f"{b.base2}/sb2") == (loc, "local")
    assert get(b, "keystatus", f"{b.base2}/sb2") == "unavailable"
    # raw incrementals need no key either
    write_file(b, fs, "g", b"secret 2\n")
    ok(b, "snapshot", f"{fs}@s2")
    write_file(b, fs, "h", b"secret 3\n")
    ok(b, "snapshot", f"{fs}@s3")
    send_recv(b, f"-w -i @s1 {fs}@s2", sb).check()
    send_recv(b, f"-w -I @s1 {fs}@s3", f"{b.base2}/sb2").check()
    assert snapshots(b, sb) == ["s1", "s2"]
    assert snapshots(b, f"{b.base2}/sb2") == ["s1", "s2", "s3"]
    # a non-raw incremental is encrypted on arrival: the standby's key must be loaded
    assert_fails(send_recv(b, f"-i @s2 {fs}@s3", f"-u {sb}"),
                 "cannot receive incremental stream: inherited key must be loaded")  # fmt: skip


def test_raw_receive_refusals(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    write_file(b, fs, "g", b"2\n")
    ok(b, "snapshot", f"{fs}@s2")
    plain = f"{b.base2}/plain"
    send_recv(b, f"{fs}@s1", f"-u {plain}").check()
    assert_fails(send_recv(b, f"-w -i @s1 {fs}@s2", f"-u {plain}"),
                 "cannot receive incremental stream: cannot perform raw receive on top of "
                 "existing unencrypted dataset")  # fmt: skip
    parent = encrypted(b, keys, "encparent")
    reenc = f"{parent}/reenc"
    send_recv(b, f"{fs}@s1", f"-u {reenc}").check()  # its own IVs, under the parent's key
    assert_fails(send_recv(b, f"-w -i @s1 {fs}@s2", f"-u -F {reenc}"),
                 "cannot receive incremental stream: IV set guid mismatch. See the 'zfs "
                 "receive' man page section discussing the limitations of raw encrypted send "
                 "streams.")  # fmt: skip
    ok(b, "create", f"{b.base2}/empty")
    assert_fails(send_recv(b, f"-w {fs}@s1", f"-u -F {b.base2}/empty"),
                 "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy "
                 "an encrypted filesystem or overwrite an unencrypted one with an encrypted "
                 "one")  # fmt: skip
    # `-w` of an unencrypted dataset is an ordinary stream (with embedded data)
    ok(b, "create", f"{b.base}/clear")
    ok(b, "snapshot", f"{b.base}/clear@c1")
    send_recv(b, f"-w {b.base}/clear@c1", f"-u {b.base2}/clear").check()
    assert get(b, "encryption", f"{b.base2}/clear") == "off"
    assert_fails(send_recv(b, f"-w {b.base}/clear@c1", f"-u {parent}/clear"),
                 "cannot receive new filesystem stream: incompatible embedded data stream "
                 "feature with encrypted receive.")  # fmt: skip


def test_takeover_of_a_raw_received_standby_and_back(b: ZfsBackend, keys: Keys) -> None:
    """The runbook: on the standby `zfs load-key -L file://...` (its keylocation is "prompt"
    after a raw receive), set keylocation, mount; the old master takes raw incrementals back
    (its own key is the same: raw streams carry the wrapping key)."""
    fs = encrypted(b, keys)
    sb = f"{b.base2}/sb"
    loc = keys.passphrase()
    send_recv(b, f"-w {fs}@s1", f"-u -o readonly=on {sb}").check()
    write_file(b, fs, "g", b"secret 2\n")
    ok(b, "snapshot", f"{fs}@s2")
    send_recv(b, f"-w -i @s1 {fs}@s2", f"-u {sb}").check()
    # failover
    ok(b, "load-key", "-L", loc, sb)
    ok(b, "set", f"keylocation={loc}", sb)
    ok(b, "set", "readonly=off", sb)
    ok(b, "mount", sb)
    assert read_file(b, sb, "g") == b"secret 2\n"
    write_file(b, sb, "h", b"written on the new master\n")
    ok(b, "snapshot", f"{sb}@s3")
    # the old master becomes the standby: raw incrementals back, -F rolls it to s2
    ok(b, "unmount", fs)
    send_recv(b, f"-w -i @s2 {sb}@s3", f"-u -F {fs}").check()
    assert snapshots(b, fs) == ["s1", "s2", "s3"]
    assert get(b, "encryptionroot", fs) == fs
    assert get(b, "keystatus", fs) == "available"
    ok(b, "mount", fs)
    assert read_file(b, fs, "h") == b"written on the new master\n"
    # and back again
    write_file(b, fs, "i", b"home again\n")
    ok(b, "snapshot", f"{fs}@s4")
    ok(b, "unmount", sb)
    send_recv(b, f"-w -i @s3 {fs}@s4", f"-u -F {sb}").check()
    ok(b, "mount", sb)
    assert read_file(b, sb, "i") == b"home again\n"


def test_change_key_reaches_the_standby_with_the_next_raw_send(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    sb = f"{b.base2}/sb"
    send_recv(b, f"-w {fs}@s1", f"-u {sb}").check()
    new = keys.passphrase("new", OTHER)
    ok(b, "change-key", "-o", f"keylocation={new}", fs)
    assert get(b, "keylocation", fs) == new
    write_file(b, fs, "g", b"2\n")
    ok(b, "snapshot", f"{fs}@s2")
    send_recv(b, f"-w -i @s1 {fs}@s2", f"-u {sb}").check()
    assert_fails(b.zfs("load-key", "-L", keys.passphrase(), sb),
                 f"Key load error: Incorrect key provided for '{sb}'.", code=255)  # fmt: skip
    ok(b, "load-key", "-L", new, sb)
    assert get(b, "keylocation", sb) == "prompt"  # the standby keeps its own keylocation


def test_change_key_inherit(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    ok(b, "create", f"{fs}/child")
    ok(b, "create", "-o", "encryption=on", "-o", "keyformat=passphrase",
       "-o", f"keylocation={keys.passphrase()}", f"{fs}/own")  # fmt: skip
    assert get(b, "encryptionroot", f"{fs}/own") == f"{fs}/own"
    assert_fails(b.zfs("change-key", "-i", f"{fs}/child"),
                 "Key change error: Key inheritting can only be performed on encryption roots.",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("change-key", "-i", fs), "Key change error: Parent must be encrypted.",
                 code=255)  # fmt: skip
    assert_fails(b.zfs("change-key", b.base), "Key change error: Dataset not encrypted.",
                 code=255)  # fmt: skip
    ok(b, "change-key", "-i", f"{fs}/own")
    assert get(b, "encryptionroot", f"{fs}/own") == fs
    assert get_src(b, "keylocation", f"{fs}/own") == ("none", "default")


def test_raw_incremental_from_a_bookmark(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    sb = f"{b.base2}/sb"
    send_recv(b, f"-w {fs}@s1", f"-u {sb}").check()
    ok(b, "bookmark", f"{fs}@s1", f"{fs}#cursor")
    ok(b, "destroy", f"{fs}@s1")
    write_file(b, fs, "g", b"2\n")
    ok(b, "snapshot", f"{fs}@s2")
    send_recv(b, f"-w -i {fs}#cursor {fs}@s2", f"-u {sb}").check()
    assert snapshots(b, sb) == ["s1", "s2"]
    assert get(b, "keystatus", sb) == "unavailable"


def test_load_key_passphrase_length_is_checked_only_by_2_1(b: ZfsBackend, keys: Keys) -> None:
    fs = encrypted(b, keys)
    ok(b, "unmount", fs)
    ok(b, "unload-key", fs)
    res = b.zfs("load-key", "-L", keys.passphrase("short", "short"), fs)
    if zfs_version(b) >= (2, 2, 0):  # a loaded key's length is not validated any more
        assert_fails(res, f"Key load error: Incorrect key provided for '{fs}'.", code=255)
    else:
        assert_fails(res, "Key load error: Passphrase too short (min 8).", code=255)
