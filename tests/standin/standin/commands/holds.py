"""zfs hold, release and holds."""

import sys
import time

from ..errors import Exit, err, usage_err
from ..model import Session
from ..options import getopts
from ..release import zversion
from ..state import Host
from ..units import fmt_time


def cmd_hold_release(host: Host, args, holding: bool) -> int:
    opts, ops = getopts(args, "rt" if holding else "r", colon_msgs=False)
    recursive = any(ch == "r" for ch, _ in opts)
    if len(ops) < 2:
        raise usage_err()
    tag = ops[0]
    if holding and tag.startswith("."):
        raise usage_err("tag may not start with '.'")
    errors = 0
    with Session(host) as m:
        for path in ops[1:]:
            if "@" not in path:
                err("'%s' is not a snapshot" % path)
                errors += 1
                continue
            fs, _, sn = path.partition("@")
            try:
                m.open(fs, ("filesystem", "volume"))
            except Exit:
                errors += 1
                continue
            fss = [fs] + (m.children(fs) if recursive else [])
            hits = [(f, m.find_snap(m.ds[f], sn)) for f in fss]
            hits = [(f, s) for f, s in hits if s is not None]
            if not hits:
                what = "cannot hold snapshot '%s'" if holding else (
                    "cannot release hold from snapshot '%s'")  # fmt: skip
                err((what % path) + ": dataset does not exist")
                errors += 1
                continue
            if not all(m.may(f, "hold" if holding else "release") for f, _s in hits):
                err("cannot hold: permission denied" if holding else
                    "cannot release: permission denied")  # fmt: skip
                errors += 1
                continue
            bad = False
            for f, s in hits:
                nm = "%s@%s" % (f, s["name"])
                if holding and tag in s["holds"]:
                    err("cannot hold snapshot '%s': tag already exists on this dataset" % nm)
                    bad = True
                elif not holding and tag not in s["holds"]:
                    err("cannot release hold from snapshot '%s': no such tag on this dataset"
                        % nm)  # fmt: skip
                    bad = True
            if bad:
                errors += 1
                continue
            for _f, s in hits:
                if holding:
                    s["holds"][tag] = int(time.time())
                else:
                    del s["holds"][tag]
    return 1 if errors else 0


def cmd_hold(host: Host, args) -> int:
    return cmd_hold_release(host, args, True)


def cmd_release(host: Host, args) -> int:
    return cmd_hold_release(host, args, False)


def cmd_holds(host: Host, args) -> int:
    if zversion() < (2, 2, 0):  # `holds -p` came with 2.2 (2.1.11 refuses it: found on OpenZFS)
        from ..usage import ZFS_USAGE

        ZFS_USAGE["holds"] = "\tholds [-rH] <snapshot> ...\n"
        opts, ops = getopts(args, "rH", colon_msgs=False)
    else:
        opts, ops = getopts(args, "rHp", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err()
    errors = False
    rows = []
    visited = []  # every snapshot looked at, held or not: the NAME column's width
    with Session(host, write=False) as m:
        for path in ops:
            if "@" not in path:
                err("'%s' is not a snapshot" % path)
                errors = True
                continue
            fs, _, sn = path.partition("@")
            if "r" in flags:
                try:
                    m.open(fs, ("filesystem", "volume"))
                except Exit:
                    errors = True
                    continue
                fss = [fs, *m.children(fs)]
            else:
                try:
                    m.open(path, ("snapshot",))
                except Exit:
                    errors = True
                    continue
                fss = [fs]
            for f in fss:
                s = m.find_snap(m.ds[f], sn)
                if s is None:
                    continue
                visited.append("%s@%s" % (f, sn))
                for tag in sorted(s["holds"]):
                    t = s["holds"][tag]
                    rows.append(("%s@%s" % (f, sn), tag, t))
    # print_holds(): the header always (widths from what was visited), then the rows;
    # "no datasets available" only when no snapshot was found at all
    nw = max([len(n) for n in visited] + [0])
    tw = max([len(r[1]) for r in rows] + [0])
    out = []
    if "H" not in flags:
        out.append("%-*s  %-*s  %s" % (nw, "NAME", tw, "TAG", "TIMESTAMP"))
    for nm, tag, t in rows:
        ts = str(t) if "p" in flags else fmt_time(t, holds=True)
        if "H" in flags:
            out.append("%s\t%s\t%s" % (nm, tag, ts))
        else:
            out.append("%-*s  %-*s  %s" % (nw, nm, tw, tag, ts))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    if not visited:
        err("no datasets available")
    return 1 if errors else 0
