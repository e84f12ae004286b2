"""zpool create, destroy, list, get, status, version and sync."""

import sys
import time

from ..errors import Exit, err, fail
from ..model import Session
from ..names import name_problem, pool_of
from ..options import getopts
from ..release import zversion
from ..state import get_host
from ..units import nicenum
from .selection import write_table
from .version import cmd_version


def zpool_main(args) -> int:
    if not args:
        err("missing command")
        sys.stderr.write("usage: zpool command args ...\n")
        return 2
    cmd = args[0]
    host = get_host()
    rest = args[1:]
    if cmd == "create":
        opts, ops = getopts(rest, "fndBo:O:m:R:t:")
        mount = None
        for ch, val in opts:
            if ch == "m":
                mount = val
        no_features = any(ch == "d" for ch, _ in opts)  # -d: every feature disabled
        if not ops:
            err("missing pool name argument")
            return 2
        pool = ops[0]
        prob = name_problem(pool, False)
        if prob or "/" in pool:
            err("cannot create '%s': invalid pool name" % pool)
            return 1
        if pool in ("mirror", "raidz", "draid", "spare", "log", "cache") or (
            pool.startswith(("c", "mirror", "raidz")) and pool[1:2].isdigit()
        ):
            err("cannot create '%s': name is reserved" % pool)
            return 1
        with Session(host) as m:
            if pool in m.st["pools"]:
                raise fail("cannot create '%s': pool already exists" % pool)
            m.st["pools"][pool] = {"guid": m.guid_new(), "creation": int(time.time()),
                                   "size": 10 << 30}  # fmt: skip
            if no_features:
                m.st["pools"][pool]["features_disabled"] = True
            local = {}
            if mount:
                local["mountpoint"] = mount
            m.new_fs(pool, local)
        return 0
    if cmd == "destroy":
        _opts, ops = getopts(rest, "f", colon_msgs=False)
        if not ops:
            err("missing pool argument")
            return 2
        pool = ops[0]
        with Session(host) as m:
            if pool not in m.st["pools"]:
                raise fail("cannot open '%s': no such pool" % pool)
            for n in sorted([n for n in m.ds if pool_of(n) == pool], reverse=True):
                m.remove_fs(n)
            del m.st["pools"][pool]
        return 0
    if cmd == "list":
        opts, ops = getopts(rest, "gHLpPvo:T:")
        scripted = any(ch == "H" for ch, _ in opts)
        cols = ["name", "size", "alloc", "free", "health"]
        for ch, val in opts:
            if ch == "o":
                cols = val.split(",")
        with Session(host, write=False) as m:
            pools = sorted(m.st["pools"])
            rows = []
            for p in ops:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
            for p in ops or pools:
                info = m.st["pools"][p]
                used = m.used(p, None)
                vals = {"name": p, "size": nicenum(info["size"]), "alloc": nicenum(used),
                        "free": nicenum(info["size"] - used), "health": "ONLINE",
                        "guid": str(info["guid"]), "cap": "0%", "altroot": "-"}  # fmt: skip
                rows.append([vals.get(c, "-") for c in cols])
        if not rows:
            print("no pools available")
            return 0
        write_table(rows, cols, scripted, get_style=False,
                    headers=[c.upper() for c in cols])  # fmt: skip
        return 0
    if cmd == "get":
        return zpool_get(host, rest)
    if cmd == "status":
        with Session(host, write=False) as m:
            pools = rest or sorted(m.st["pools"])
            if not m.st["pools"]:
                print("no pools available")
                return 0
            for p in pools:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
                print("  pool: %s\n state: ONLINE\nconfig:\n\n\tNAME  STATE\n\t%s  ONLINE\n\n"
                      "errors: No known data errors" % (p, p))  # fmt: skip
        return 0
    if cmd == "version":
        return cmd_version(host, rest)
    if cmd == "sync":  # every stand-in change is on disk when the command returns
        with Session(host, write=False) as m:
            for p in rest:
                if p not in m.st["pools"]:
                    raise fail("cannot open '%s': no such pool" % p)
        return 0
    err("unrecognized command '%s'" % cmd)
    sys.stderr.write("usage: zpool command args ...\n")
    return 2


ZPOOL_GET_USAGE = (
    'usage:\n\tget [-Hp] [-o "all" | field[,...]] <"all" | property[,...]> <pool> ...\n'
)
GET_FIELDS = ("name", "property", "value", "source")


def zpool_get(host, args) -> int:
    """`zpool get [-Hp] [-o field,...] all|prop,... [pool ...]`, as zpool_do_get prints it:
    one row per pool and property, pools in name order when none is named."""
    from .. import pools

    def usage(msg: str) -> int:
        err(msg)
        sys.stderr.write(ZPOOL_GET_USAGE)
        return 2

    try:
        opts, ops = getopts(args, "Hpo:")
    except Exit as e:  # zpool's own usage text, not zfs's
        sys.stderr.write(ZPOOL_GET_USAGE)
        return e.code
    scripted = any(ch == "H" for ch, _ in opts)
    parsable = any(ch == "p" for ch, _ in opts)
    cols = ["name", "property", "value", "source"]
    for ch, val in opts:
        if ch == "o":
            cols = []
            for tok in val.split(","):
                if tok == "all":
                    cols = list(GET_FIELDS)
                elif tok in GET_FIELDS:
                    cols.append(tok)
                else:
                    return usage("invalid column name '%s'" % tok)
    if not ops:
        return usage("missing property argument")
    if ops[0] == "all":
        names = pools.all_names()
    else:
        names = ops[0].split(",")
        for p in names:
            if not pools.known(p):
                return usage("bad property list: invalid property '%s'" % p)
    rows = []
    ret = 0
    with Session(host, write=False) as m:
        wanted = ops[1:] or sorted(m.st["pools"])
        for p in wanted:
            info = m.st["pools"].get(p)
            if info is None:
                if zversion() >= (2, 2, 0):  # 2.2 gets pool and vdev properties another way
                    err("Cannot get properties of %s: no such pool available." % p)
                else:
                    err("cannot open '%s': no such pool" % p)
                ret = 1
                continue
            allocated = m.used(p, None)
            for prop in names:
                val, source = pools.value(p, info, allocated, prop, parsable)
                vals = {"name": p, "property": prop, "value": val, "source": source}
                rows.append([vals[c] for c in cols])
    write_table(rows, cols, scripted, get_style=True)
    return ret
