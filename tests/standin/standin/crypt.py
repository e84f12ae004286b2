"""Native encryption as OpenZFS shows it: which datasets are encrypted and under which
encryption root, keys and their status, key material (keylocation, keyformat), the
encryption properties, and what raw (`send -w`) streams carry. Imported when one of these
is needed: a dataset that is not encrypted costs a `zfs get` nothing.

Nothing is encrypted for real: the stand-in keeps an encrypted dataset's files as it keeps
any other's. What it models is what can be observed: properties, refusals and their
messages, that a dataset whose key is not loaded cannot be mounted and shows no files where
it would be mounted (its content directory is kept under the state root instead), that a
raw stream can be received without a key and leaves the receiver without one, and that
only the right key loads it.

State: an encrypted filesystem has `d["crypt"] = {"suite", "root"}`; an encryption root
also has `keyformat`, `pbkdf2iters`, `keylocation`, `key` (a fingerprint of the wrapping
key: sha256 of keyformat and key material) and `loaded`. A snapshot of an encrypted
filesystem has `ivset` (the IV set guid a raw incremental must match; bookmarks keep it)."""

import os
import sys

from .errors import fail
from .lazy import Lazy
from .names import fs_of, parent_of
from .release import zversion

contextlib = Lazy("contextlib", globals())
hashlib = Lazy("hashlib", globals())

SUITES = ("aes-128-ccm", "aes-192-ccm", "aes-256-ccm", "aes-128-gcm", "aes-192-gcm",
          "aes-256-gcm")  # fmt: skip
DEFAULT_SUITE = "aes-256-gcm"
KEYFORMATS = ("raw", "hex", "passphrase")
PBKDF2_DEFAULT = 350000
ENCRYPTION_VALUES = ("on | off | aes-128-ccm | aes-192-ccm | aes-256-ccm | aes-128-gcm | "
                     "aes-192-gcm | aes-256-gcm")  # fmt: skip


class KeyError_(Exception):
    """A key problem, worded as libzfs's zfs_error_aux() (the caller adds its prefix)."""


# -- which datasets, which root, which key
def crypt_of(m, fs: str) -> "dict | None":
    return m.ds[fs].get("crypt")


def enc_root(m, fs: str) -> "str | None":
    """The encryption root of filesystem `fs` (None: not encrypted)."""
    cur = fs
    while cur is not None and cur in m.ds:
        c = m.ds[cur].get("crypt")
        if c is None:
            return None
        if c.get("root"):
            return cur
        cur = parent_of(cur)
    return None


def key_loaded(m, fs: str) -> bool:
    root = enc_root(m, fs)
    return root is None or bool(m.ds[root]["crypt"].get("loaded"))


def sharing_key(m, root: str) -> list:
    """The filesystems whose encryption root is `root` (itself included)."""
    return [n for n in [root, *m.children(root)] if enc_root(m, n) == root]


def new_ivset(m) -> int:
    return m.guid_new()


# -- properties
def prop_value(m, name: str, prop: str, parsable: bool):
    """(value, source kind, source, received) of one encryption property, as `zfs get`."""
    if "#" in name:
        return None, "none", None, None
    fs = fs_of(name)
    snap = "@" in name
    c = crypt_of(m, fs)
    root = enc_root(m, fs) if c else None
    rc = m.ds[root]["crypt"] if root else None
    if prop == "encryption":
        return (c["suite"], "none", None, None) if c else ("off", "default", None, None)
    if prop == "keystatus":
        if not c:
            return "-", "none", None, None
        return ("available" if rc and rc.get("loaded") else "unavailable"), "none", None, None
    if prop == "encryptionroot":
        return (root or "-"), "none", None, None
    if snap:
        return "-", "none", None, None
    if prop == "keyformat":
        return (rc["keyformat"], "none", None, None) if rc else ("none", "default", None, None)
    if prop == "pbkdf2iters":
        if rc and rc["keyformat"] == "passphrase":
            return str(rc["pbkdf2iters"]), "none", None, None
        return "0", "default", None, None
    if prop == "keylocation":
        if c and c.get("root"):
            return c["keylocation"], "local", fs, None
        return "none", "default", None, None
    return None, "none", None, None


def valid_keylocation(value: str) -> bool:
    return (
        value == "prompt"
        or (value.startswith("file:///"))
        or value.startswith(("https://", "http://"))
    )


def check_keylocation_set(m, name: str, value: str, errbuf: str) -> str:
    """`zfs set keylocation=`: only on an encryption root, only a valid location."""
    c = crypt_of(m, name)
    if c is None:
        if value == "none":
            return value
        raise fail("%s: keylocation must be 'none' for unencrypted datasets" % errbuf)
    if not c.get("root"):
        raise fail("%s: keylocation may only be set on encryption roots" % errbuf)
    if not valid_keylocation(value):
        raise fail("%s: invalid keylocation" % errbuf)
    return value


# -- key material
def read_material(location: str, keyformat: str, fsname: str) -> bytes:
    """The key material at `location` (file:// or prompt: stdin, which is not a terminal
    here). Raw keys are read whole; passphrases and hex keys are one line."""
    if location == "prompt":
        stdin = sys.stdin.buffer
        data = stdin.read(33) if keyformat == "raw" else stdin.readline()
        if not data:
            raise KeyError_("")  # libzfs reports no detail: "encryption failure"
    elif location.startswith("file://"):
        path = location[len("file://") :]
        try:
            with open(path, "rb") as f:
                data = f.read(33) if keyformat == "raw" else f.readline()
        except OSError as e:
            raise KeyError_("Failed to open key material file: %s" % os.strerror(e.errno)) from None
    elif location.startswith(("http://", "https://")):
        raise KeyError_("No keylocation=%s:// back-end." % location.split(":")[0])
    else:
        raise KeyError_("Invalid keylocation.")
    if keyformat != "raw" and data.endswith(b"\n"):
        data = data[:-1]
    return data


def validate_material(keyformat: str, data: bytes, new_key: bool) -> None:
    """validate_key(): lengths and characters (a loaded key's length is not checked from 2.2:
    a wrong one is just an incorrect key)."""
    if keyformat == "raw":
        if len(data) < 32:
            raise KeyError_("Raw key too short (expected 32).")
        if len(data) > 32:
            raise KeyError_("Raw key too long (expected 32).")
    elif keyformat == "hex":
        if len(data) < 64:
            raise KeyError_("Hex key too short (expected 64).")
        if len(data) > 64:
            raise KeyError_("Hex key too long (expected 64).")
        if any(ch not in b"0123456789abcdefABCDEF" for ch in data):
            raise KeyError_("Invalid hex character detected.")
    elif new_key or zversion() < (2, 2, 0):
        if len(data) > 512:
            raise KeyError_("Passphrase too long (max 512).")
        if len(data) < 8:
            raise KeyError_("Passphrase too short (min 8).")


def fingerprint(keyformat: str, data: bytes) -> str:
    if keyformat == "hex":
        with contextlib.suppress(ValueError):
            data = bytes.fromhex(data.decode())
        keyformat = "raw"  # the same 32 bytes as a raw key wrap the same
    h = hashlib.sha256(keyformat.encode() + b"\0" + data)
    return h.hexdigest()[:32]


# -- creating an encrypted filesystem (zfs create, zfs receive -o encryption=...)
def split_props(props: dict) -> dict:
    """Take the encryption properties out of a -o list (their rules are zfs_crypto_create's)."""
    return {k: props.pop(k) for k in ("encryption", "keyformat", "keylocation", "pbkdf2iters")
            if k in props}  # fmt: skip


def creation_crypt(m, name: str, cp: dict, errbuf: str) -> "dict | None":
    """The `crypt` of a filesystem created as `name` with encryption options `cp`, inheriting
    from its parent, or None (not encrypted). Raises with OpenZFS's messages."""
    enc = cp.get("encryption")
    if enc is not None and enc != "on" and enc != "off" and enc not in SUITES:
        raise fail("%s: 'encryption' must be one of '%s'" % (errbuf, ENCRYPTION_VALUES))
    kf = cp.get("keyformat")
    if kf is not None and kf not in (*KEYFORMATS, "none"):
        raise fail("%s: 'keyformat' must be one of 'none | raw | hex | passphrase'" % errbuf)
    loc = cp.get("keylocation")
    if loc is not None and loc != "none" and not valid_keylocation(loc):
        raise fail("%s: invalid keylocation" % errbuf)
    parent = parent_of(name)
    pc = crypt_of(m, parent) if parent in m.ds else None
    if enc is None:
        suite = pc["suite"] if pc else None
    elif enc == "off":
        suite = None
    else:
        suite = DEFAULT_SUITE if enc == "on" else enc
    if suite is None:
        if kf not in (None, "none") or loc not in (None, "none") or "pbkdf2iters" in cp:
            raise fail("%s: Encryption must be turned on to set encryption properties." % errbuf)
        return None
    if kf in (None, "none"):
        if pc is None:
            raise fail("%s: Keyformat required for new encryption root." % errbuf)
        if loc not in (None, "none"):
            raise fail("%s: Encryption must be turned on to set encryption properties." % errbuf)
        return {"suite": suite, "root": False}  # the caller checks the parent's key is loaded
    iters = cp.get("pbkdf2iters")
    if iters is not None and (not iters.isdigit() or int(iters) < 100000):
        raise fail("%s: minimum pbkdf2 iterations is 100000" % errbuf)
    if iters is not None and kf != "passphrase":
        raise fail("%s: Cannot specify pbkdf2iters with a non-passphrase keyformat." % errbuf)
    loc = loc if loc not in (None, "none") else "prompt"
    try:
        data = read_material(loc, kf, name)
        validate_material(kf, data, new_key=True)
    except KeyError_ as e:
        raise fail("%s: %s" % (errbuf, str(e) or "encryption failure")) from None
    return {"suite": suite, "root": True, "keyformat": kf, "keylocation": loc,
            "pbkdf2iters": int(iters) if iters else (PBKDF2_DEFAULT if kf == "passphrase"
                                                     else 0),
            "key": fingerprint(kf, data), "loaded": True}  # fmt: skip


# -- raw streams
def stream_crypt(m, fs: str, s: dict, from_ivset: "int | None") -> "dict | None":
    """What a raw section of snapshot `s` of `fs` carries of its encryption (None: `fs` is
    not encrypted, so `send -w` makes an ordinary stream)."""
    c = crypt_of(m, fs)
    if c is None:
        return None
    rc = m.ds[enc_root(m, fs)]["crypt"]
    return {"suite": c["suite"], "keyformat": rc["keyformat"], "pbkdf2iters": rc["pbkdf2iters"],
            "key": rc["key"], "ivset": s.get("ivset"), "fromivset": from_ivset}  # fmt: skip


def received_root(sc: dict, keylocation: str) -> dict:
    """The `crypt` of a filesystem created by a raw receive: its own encryption root, with
    the sender's wrapping key, not loaded."""
    return {"suite": sc["suite"], "root": True, "keyformat": sc["keyformat"],
            "pbkdf2iters": sc["pbkdf2iters"], "key": sc["key"], "keylocation": keylocation,
            "loaded": False}  # fmt: skip


# -- zfs receive's encryption rules (commands/receive.py calls these only when a stream is
# raw or a dataset involved is encrypted)
def recv_check_existing(m, fsname: str, raw: bool, wants_new: bool, force: bool,
                        errbuf: str) -> None:  # fmt: skip
    """libzfs's checks of an existing destination (zfs_receive_one)."""
    enc = "crypt" in m.ds[fsname]
    if not wants_new and not enc and raw:
        raise fail("%s: cannot perform raw receive on top of existing unencrypted dataset"
                   % errbuf)  # fmt: skip
    if wants_new and force and ((raw and not enc) or enc):
        raise fail("%s: zfs receive -F cannot be used to destroy an encrypted filesystem or "
                   "overwrite an unencrypted one with an encrypted one" % errbuf)  # fmt: skip


def recv_check_props(cryptprops: dict, excludes: list, errbuf: str) -> None:
    """A raw stream brings its own encryption: -o/-x cannot change it (keylocation may)."""
    for k in list(cryptprops) + list(excludes):
        if k in ("encryption", "keyformat", "pbkdf2iters"):
            raise fail("%s: encryption property '%s' cannot be set or excluded for raw streams."
                       % (errbuf, k))  # fmt: skip
    loc = cryptprops.get("keylocation")
    if loc is not None and not valid_keylocation(loc):
        raise fail("%s: invalid keylocation" % errbuf)


def recv_check_incremental(m, fsname: str, sec: dict, from_s: dict, errbuf: str) -> None:
    """The kernel's: a raw incremental's base must have the same IV set as the sender's (not
    so for a snapshot received non-raw, which got IVs of its own); a non-raw one is
    encrypted on arrival, so the destination's key must be loaded."""
    sc = sec.get("crypt")
    if sc:
        if sc.get("fromivset") != from_s.get("ivset"):
            raise fail(
                "%s: IV set guid mismatch. See the 'zfs receive' man page section\n "
                "discussing the limitations of raw encrypted send streams." % errbuf
            )
    elif not key_loaded(m, fsname):
        raise fail("%s: inherited key must be loaded" % errbuf)


def recv_new_crypt(m, fsname: str, par: str, sec: dict, head: dict, cryptprops: dict,
                   errbuf: str) -> "dict | None":  # fmt: skip
    """The `crypt` of a filesystem a receive creates: a raw stream's own encryption root;
    non-raw, -o encryption=... makes a new root, else it inherits the parent's encryption
    (plain data into an unencrypted parent stays plain: nothing stops that)."""
    sc = sec.get("crypt")
    if sc:
        loc = cryptprops.get("keylocation") or sc.get("keylocation") or "prompt"
        return received_root(sc, loc)
    if cryptprops:
        cr = creation_crypt(m, fsname, cryptprops, errbuf)
    elif crypt_of(m, par):
        cr = {"suite": crypt_of(m, par)["suite"], "root": False}
    else:
        return None
    if cr is None:
        return None
    if head.get("embed"):
        raise fail("%s: incompatible embedded data stream feature with encrypted receive."
                   % errbuf)  # fmt: skip
    if not cr.get("root") and not key_loaded(m, par):
        raise fail("%s: inherited key must be loaded" % errbuf)
    return cr


def received_snapshot(m, fsname: str, sec: dict, snap: dict) -> None:
    """A snapshot received into an encrypted filesystem: a raw one keeps the sender's IV set
    and brings the sender's wrapping key to the encryption root (a `change-key` on the
    source reaches the standby with the next raw send); a non-raw one gets IVs of its own."""
    sc = sec.get("crypt")
    if not sc:
        snap["ivset"] = m.guid_new()
        return
    snap["ivset"] = sc["ivset"]
    root = enc_root(m, fsname)
    if root == fsname:
        m.ds[root]["crypt"].update(keyformat=sc["keyformat"], pbkdf2iters=sc["pbkdf2iters"],
                                   key=sc["key"])  # fmt: skip
