"""zfs load-key, unload-key and change-key (the checks and messages of libzfs_crypto.c; the
model of keys: crypt.py). A key's status is its encryption root's: loading it makes the
content of every filesystem under that root readable where it is mounted (it stays
unmounted), unloading it (every one of them unmounted first) hides it again."""

import sys

from ..crypt import (
    KeyError_,
    crypt_of,
    enc_root,
    fingerprint,
    read_material,
    sharing_key,
    valid_keylocation,
    validate_material,
)
from ..errors import Exit, err, usage_err
from ..model import Model, Session
from ..names import parent_of
from ..options import getopts
from ..state import Host


class Failed(Exception):
    pass


def key_error(prefix: str, aux: str) -> Failed:
    err("%s: %s" % (prefix, aux) if aux else "%s: encryption failure" % prefix)
    return Failed()


def load_key(m: Model, name: str, noop: bool, location: "str | None") -> None:
    e = "Key load error"
    c = crypt_of(m, name)
    if c is None:
        raise key_error(e, "'%s' is not encrypted." % name)
    root = enc_root(m, name)
    if root != name:
        raise key_error(e, "Keys must be loaded for encryption root of '%s' (%s)." % (name, root))
    if location is None:
        location = c["keylocation"]
    if not noop and c.get("loaded"):
        raise key_error(e, "Key already loaded for '%s'." % name)
    try:
        data = read_material(location, c["keyformat"], name)
        validate_material(c["keyformat"], data, new_key=False)
    except KeyError_ as x:
        raise key_error(e, str(x)) from None
    if not m.may(name, "load-key"):
        raise key_error(e, "Permission denied.")
    if fingerprint(c["keyformat"], data) != c["key"]:
        raise key_error(e, "Incorrect key provided for '%s'." % name)
    if not noop:
        c["loaded"] = True
        m.relocate_dirs()


def unload_key(m: Model, name: str) -> None:
    e = "Key unload error"
    c = crypt_of(m, name)
    if c is None:
        raise key_error(e, "'%s' is not encrypted." % name)
    root = enc_root(m, name)
    if root != name:
        raise key_error(e, "Keys must be unloaded for encryption root of '%s' (%s)." % (name, root))
    if not c.get("loaded"):
        raise key_error(e, "Key already unloaded for '%s'." % name)
    if not m.may(name, "load-key"):
        raise key_error(e, "Permission denied.")
    if any(m.ds[n]["mounted"] and not m.ds[n]["inconsistent"] for n in sharing_key(m, root)):
        raise key_error(e, "'%s' is busy." % name)
    c["loaded"] = False
    m.relocate_dirs()


def load_unload(host: Host, args, loading: bool) -> int:
    opts, ops = getopts(args, "anrL:" if loading else "ar")
    flags = {ch for ch, _ in opts}
    location = next((v for ch, v in opts if ch == "L"), None)
    do_all = "a" in flags
    recursive = do_all or "r" in flags
    if not do_all and not ops:
        err("Missing dataset argument or -a option")
        raise usage_err()
    if do_all and ops:
        err("Cannot specify dataset with -a option")
        raise usage_err()
    if recursive and location is not None and location != "prompt":
        err("alternate keylocation may only be 'prompt' with -r or -a")
        raise usage_err()
    noop = "n" in flags
    attempted = failed = 0
    ret = 0
    with Session(host) as m:
        if do_all:
            names = sorted(m.ds)
        else:
            names = []
            for a in ops:
                try:
                    m.open(a, ("filesystem", "volume"))
                except Exit:
                    ret = 1
                    continue
                names += [a, *m.children(a)] if recursive else [a]
        for name in names:
            c = crypt_of(m, name)
            if recursive:
                if c is None or not c.get("root"):
                    continue
                if bool(c.get("loaded")) == loading:
                    continue
            attempted += 1
            try:
                if loading:
                    load_key(m, name, noop, location)
                else:
                    unload_key(m, name)
            except Failed:
                failed += 1
    if noop or (recursive and attempted):
        verb = ("verified" if noop else "loaded") if loading else "unloaded"
        sys.stdout.write("%d / %d key(s) successfully %s\n" % (attempted - failed, attempted, verb))
    return 255 if failed else ret


def cmd_load_key(host: Host, args) -> int:
    return load_unload(host, args, True)


def cmd_unload_key(host: Host, args) -> int:
    return load_unload(host, args, False)


def cmd_change_key(host: Host, args) -> int:
    opts, ops = getopts(args, "lio:")
    flags = {ch for ch, _ in opts}
    props = {}
    for ch, val in opts:
        if ch == "o":
            k, eq, v = val.partition("=")
            if not eq:
                err("missing '=' for property=value argument")
                return 1
            props[k] = v
    if "i" in flags and props:
        err("Properties not allowed for inheriting")
        raise usage_err()
    if not ops:
        err("Missing dataset argument")
        raise usage_err()
    if len(ops) > 1:
        err("Too many arguments")
        raise usage_err()
    name = ops[0]
    with Session(host) as m:
        try:
            m.open(name, ("filesystem", "volume"))
        except Exit:
            raise usage_err() from None
        try:
            if "l" in flags:
                root = enc_root(m, name)
                if root is not None and not m.ds[root]["crypt"].get("loaded"):
                    load_key(m, name, False, None)
            change_key(m, name, props, "i" in flags)
        except Failed:
            return 255
    return 0


def change_key(m: Model, name: str, props: dict, inherit: bool) -> None:
    e = "Key change error"
    c = crypt_of(m, name)
    if c is None:
        raise key_error(e, "Dataset not encrypted.")
    is_root = enc_root(m, name) == name
    new = None
    if not inherit:
        if any(k not in ("keyformat", "keylocation", "pbkdf2iters") for k in props):
            raise key_error(e, "Only keyformat, keylocation and pbkdf2iters may be set with "
                               "this command.")  # fmt: skip
        kf = props.get("keyformat") or (c["keyformat"] if is_root else None)
        if kf is None:
            raise key_error(e, "Keyformat required for new encryption root.")
        loc = props.get("keylocation") or (c["keylocation"] if is_root else "prompt")
        if not valid_keylocation(loc):
            raise key_error(e, "Invalid keylocation.")
        try:
            data = read_material(loc, kf, name)
            validate_material(kf, data, new_key=True)
        except KeyError_ as x:
            raise key_error(e, str(x)) from None
        iters = int(props.get("pbkdf2iters", c.get("pbkdf2iters") or 350000))
        new = {"root": True, "keyformat": kf, "keylocation": loc, "key": fingerprint(kf, data),
               "pbkdf2iters": iters if kf == "passphrase" else 0}  # fmt: skip
    else:
        if not is_root:
            raise key_error(e, "Key inheritting can only be performed on encryption roots.")
        parent = parent_of(name)
        if parent is None:
            raise key_error(e, "Root dataset cannot inherit key.")
        if crypt_of(m, parent) is None:
            raise key_error(e, "Parent must be encrypted.")
        proot = enc_root(m, parent)
        if not m.ds[proot]["crypt"].get("loaded"):
            raise key_error(e, "Parent key must be loaded.")
    root = enc_root(m, name)
    if not m.ds[root]["crypt"].get("loaded"):
        raise key_error(e, "Key must be loaded.")
    if not m.may(name, "change-key"):
        raise key_error(e, "Permission denied.")
    if inherit:
        for k in ("root", "keyformat", "keylocation", "pbkdf2iters", "key", "loaded"):
            c.pop(k, None)
        c["root"] = False
    else:
        c.update(new)
        c["loaded"] = True
