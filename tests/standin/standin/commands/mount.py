"""zfs mount and unmount (`mounted` is a flag: content stays visible)."""

import os

from ..errors import err, fail, usage_err
from ..model import Session
from ..options import getopts
from ..state import Host


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
            for n in sorted(m.ds):
                d = m.ds[n]
                cm = m.get_prop(n, "canmount")[0]
                if not d["inconsistent"] and cm == "on":
                    d["mounted"] = True
            return 0
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
        d["mounted"] = True
        m.relocate_dirs()
    return 0


def cmd_unmount(host: Host, args) -> int:
    opts, ops = getopts(args, "fua", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    with Session(host) as m:
        if "a" in flags:
            for d in m.ds.values():
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
        d["mounted"] = False
    return 0
