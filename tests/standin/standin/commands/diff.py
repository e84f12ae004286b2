"""zfs diff between two snapshots, or a snapshot and the live tree."""

import os
import sys

from ..errors import fail, usage_err
from ..model import Session
from ..options import getopts
from ..state import Host


def cmd_diff(host: Host, args) -> int:
    opts, ops = getopts(args, "FHth", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err("must provide at least one snapshot name")
    if len(ops) > 2:
        raise usage_err("too many arguments")
    a = ops[0]
    b = ops[1] if len(ops) > 1 else None
    with Session(host, write=False) as m:
        if "@" not in a:
            raise fail("Badly formed snapshot name %s: missing '@' delimiter in snapshot name" % a)
        m.open(a, ("snapshot",))
        fs = a.split("@")[0]
        if b is None:
            b = fs
        elif b.startswith("@"):
            b = fs + b
        m.open(b)
        if b.split("@")[0] != fs:
            raise fail(
                "Unable to determine which snapshots to compare: operation crosses datasets "
                "or pools"
            )
        old = m.snap_manifest(m.obj(a))
        new = m.snap_manifest(m.obj(b)) if "@" in b else m.live(fs)
        if "@" in b:
            sa, sb = m.obj(a), m.obj(b)
            if sb["createtxg"] < sa["createtxg"]:
                raise fail("Unable to determine path or stats for object 0 in %s: "
                           "Invalid argument" % b)  # fmt: skip
        top = m.ds[fs]["dir"]
    lines = []
    dirs_touched = set()
    for r in sorted(set(old) | set(new)):
        eo, en = old.get(r), new.get(r)
        if eo == en:
            continue
        if eo is None:
            ch = "+"
        elif en is None:
            ch = "-"
        elif eo[0] != en[0]:
            lines.append((r, "-", eo))
            ch = "+"
            eo = None
        else:
            ch = "M"
        if ch in "+-":
            dirs_touched.add(r.rsplit("/", 1)[0] if "/" in r else "")
        if ch == "M" and en[0] == "d":
            continue
        lines.append((r, ch, en or eo))
    for dr in dirs_touched:
        if dr == "" or (dr in old and dr in new):
            lines.append((dr, "M", ["d"]))
    lines.sort(key=lambda x: (x[0], x[1]))
    out = []
    for r, ch, e in lines:
        path = os.path.join(top, r) if r else top + "/"
        ftype = {"f": "F", "d": "/", "l": "@"}[e[0]]
        cols = [ch]
        if "F" in flags:
            cols.append(ftype)
        cols.append(path)
        out.append("\t".join(cols))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0
