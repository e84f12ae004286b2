"""zfs snapshot (atomic, -r) and rollback (-r)."""

import time

from ..errors import err, fail, usage_err
from ..model import Model, Session
from ..names import name_problem
from ..options import getopts
from ..state import Host
from ..trees import apply_manifest


def take_snapshots(m: Model, names: list, props: dict) -> None:
    txg = m.next_txg()
    now = int(time.time())
    for full in names:
        fs, _, sn = full.partition("@")
        manifest = m.live(fs, store=True)
        mid = m.host.put_manifest(manifest)
        m.mark_quiet(fs)
        snap = {
            "name": sn,
            "guid": m.guid_new(),
            "createtxg": txg,
            "creation": now,
            "manifest": mid,
            "local": dict(props),
            "received": {},
            "mask": [],
            "holds": {},
        }
        if "crypt" in m.ds[fs]:  # an encrypted snapshot's IV set (raw incrementals match it)
            snap["ivset"] = m.guid_new()
        m.ds[fs]["snaps"].append(snap)


def cmd_snapshot(host: Host, args) -> int:
    opts, ops = getopts(args, "ro:")
    recursive = False
    props = {}
    for ch, val in opts:
        if ch == "r":
            recursive = True
        else:
            k, eq, v = val.partition("=")
            if not eq:
                err("missing '=' for property=value argument")
                return 1
            if k in props:
                err("property '%s' specified multiple times" % k)
                return 1
            props[k] = v
    if not ops:
        raise usage_err("missing snapshot argument")
    multiple = recursive or len(ops) > 1
    with Session(host) as m:
        names = []
        for arg in ops:
            if "@" not in arg:
                raise usage_err()
            fs, _, sn = arg.partition("@")
            prob = name_problem(fs, False)
            if prob:
                err("cannot open '%s': %s" % (fs, prob))
                raise usage_err()
            if fs not in m.ds:
                err("cannot open '%s': dataset does not exist" % fs)
                raise usage_err()
            fss = [fs] + (m.children(fs) if recursive else [])
            for f in fss:
                if recursive and m.ds[f]["inconsistent"]:
                    continue
                names.append("%s@%s" % (f, sn))
        for nm in names:
            prob = name_problem(nm, True, True)
            if prob:
                err("cannot create snapshot '%s': %s" % (nm, prob))
                return 1
        checked = {}
        for k, v in props.items():
            ck, cv = m.validate_set(names[0], k, v, "cannot create snapshots ")
            checked[ck] = cv
        if not all(m.may(n.split("@")[0], "snapshot") for n in names):
            err("cannot create snapshots : permission denied")
            if multiple:
                err("no snapshots were created")
            return 1
        fsset = [n.split("@")[0] for n in names]
        if len(set(fsset)) != len(fsset):
            err("cannot create snapshots : multiple snapshots of same fs not allowed")
            if multiple:
                err("no snapshots were created")
            return 1
        bad = [n for n in names if m.exists(n)]
        if bad:
            for n in bad:
                err("cannot create snapshot '%s': dataset already exists" % n)
            if multiple:
                err("no snapshots were created")
            return 1
        take_snapshots(m, names, checked)
    return 0


def do_rollback(m: Model, fs: str, s: dict) -> None:
    d = m.ds[fs]
    apply_manifest(m.host, d["dir"], m.snap_manifest(s), m.exclude_for(fs))
    m._live_cache.clear()
    m.mark_quiet(fs)


def cmd_rollback(host: Host, args) -> int:
    opts, ops = getopts(args, "rRf", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    recurse = "r" in flags or "R" in flags
    if not ops:
        raise usage_err("missing dataset argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    target = ops[0]
    with Session(host) as m:
        m.open(target, ("snapshot",))
        fs = target.split("@")[0]
        d, s = m.snap(target)
        younger = [x for x in d["snaps"] if x["createtxg"] > s["createtxg"]]
        marks = d.get("bookmarks") or {}
        newer_marks = [b for b in sorted(marks) if marks[b]["createtxg"] > s["createtxg"]]
        if (younger or newer_marks) and not recurse:
            err("cannot rollback to '%s': more recent snapshots or bookmarks exist" % target)
            err("use '-r' to force deletion of the following snapshots and bookmarks:")
            names = ["%s@%s" % (fs, x["name"]) for x in younger]
            names += ["%s#%s" % (fs, b) for b in newer_marks]
            for i, x in enumerate(names):
                if i == 32:
                    err("Output limited to 32 snapshots/bookmarks")
                    break
                err(x)
            return 1
        failed = False
        for x in younger:
            nm = "%s@%s" % (fs, x["name"])
            # rollback destroys one by one, through zfs_destroy: its own wording
            if not m.may(nm, "destroy", "mount"):
                err("cannot destroy '%s': permission denied" % nm)
                failed = True
            elif x["holds"]:
                err("cannot destroy '%s': dataset is busy" % nm)
                failed = True
            else:
                d["snaps"].remove(x)
        for b in newer_marks:
            if not m.may(fs, "destroy"):
                err("cannot destroy '%s#%s': permission denied" % (fs, b))
                failed = True
            else:
                del marks[b]
        if "bookmarks" in d and not marks:
            del d["bookmarks"]
        if failed:
            return 1
        if not m.may(fs, "rollback"):
            raise fail("cannot rollback '%s': permission denied" % fs)
        do_rollback(m, fs, s)
    return 0
