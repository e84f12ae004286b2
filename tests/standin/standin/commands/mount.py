"""zfs mount and unmount (`mounted` is a flag: content stays visible)."""

import os

from ..errors import err, fail, usage_err
from ..lazy import Lazy
from ..model import PRIVILEGED, Session
from ..options import getopts
from ..state import Host

crypt = Lazy("..crypt", globals())


def needs_key(m, name: str) -> bool:
    return "crypt" in m.ds[name] and not crypt.key_loaded(m, name)


def cmd_mount(host: Host, args) -> int:
    opts, ops = getopts(args, "jflvOo:aR:")
    flags = {ch for ch, _ in opts}
    with Session(host) as m:
        if not ops and "a" not in flags:
            for n in sorted(m.ds):
                d = m.ds[n]
                if d["mounted"] and not d["inconsistent"]:
                    print("%-30s  %s" % (n, d["dir"]))
            return 0
        if "a" in flags:
            rc = 0
            for n in sorted(m.ds):
                d = m.ds[n]
                cm = m.get_prop(n, "canmount")[0]
                if d["inconsistent"] or cm != "on" or d["mounted"] or needs_key(m, n):
                    continue  # -a leaves datasets without their key alone
                if m.get_prop(n, "mountpoint")[0] in ("none", "legacy"):
                    continue
                if not PRIVILEGED:
                    err(m.mount_refused(n))
                    rc = 1
                    continue
                d["mounted"] = True
                d["was_mounted"] = True
            m.relocate_dirs()
            return rc
        if len(ops) > 1:
            raise usage_err("too many arguments")
        name = ops[0]
        m.open(name, ("filesystem",))
        d = m.ds[name]
        if d["mounted"]:
            raise fail("cannot mount '%s': filesystem already mounted" % name)
        if d["inconsistent"]:
            raise fail("cannot mount '%s': Invalid argument" % name)
        mp = m.get_prop(name, "mountpoint")[0]
        if mp == "legacy":
            err("cannot mount '%s': legacy mountpoint" % name)
            raise fail("use mount(8) to mount this filesystem")
        if mp == "none":
            raise fail("cannot mount '%s': no mountpoint set" % name)
        if needs_key(m, name):
            raise fail("cannot mount '%s': encryption key not loaded" % name)
        if not PRIVILEGED:
            raise fail(m.mount_refused(name))
        d["mounted"] = True
        d["was_mounted"] = True
        m.relocate_dirs()
    return 0


def cmd_unmount(host: Host, args) -> int:
    opts, ops = getopts(args, "fua", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    with Session(host) as m:
        if "a" in flags:
            for n, d in m.ds.items():
                if d["mounted"] and not PRIVILEGED:
                    raise fail(m.unmount_refused(n))
                d["mounted"] = False
            return 0
        if not ops:
            raise usage_err("missing filesystem argument")
        if len(ops) > 1:
            raise usage_err("too many arguments")
        name = ops[0]
        if name.startswith("/"):
            for n, d in m.ds.items():
                if d["dir"] == os.path.normpath(name) and d["mounted"]:
                    name = n
                    break
            else:
                raise fail("cannot unmount '%s': not a mountpoint" % name)
        m.open(name, ("filesystem",))
        d = m.ds[name]
        if not d["mounted"] or d["inconsistent"]:
            raise fail("cannot unmount '%s': not currently mounted" % name)
        if not PRIVILEGED:
            raise fail(m.unmount_refused(name))
        # zfs unmount takes the filesystems mounted below it down with it
        for n in [name, *m.children(name)]:
            m.ds[n]["mounted"] = False
    return 0
