"""zfs list: columns, `space`, sorting (-s/-S)."""

from ..errors import err, fail, usage_err
from ..model import Model, Session
from ..options import getopts
from ..properties import NATIVE, canon_prop, is_user_prop
from ..state import Host
from .selection import iterate, parse_depth, parse_types, write_table


def cmd_list(host: Host, args) -> int:
    opts, ops = getopts(args, "jHS:d:o:prs:t:")
    parsable = scripted = recurse = False
    depth = None
    fields = "name,used,available,referenced,mountpoint"
    types = {"filesystem", "volume", "snapshot"}
    types_given = False
    listsnaps = False
    sortcols = []
    for ch, val in opts:
        if ch == "o":
            fields = val
        elif ch == "p":
            parsable = True
        elif ch == "H":
            scripted = True
        elif ch == "r":
            recurse = True
        elif ch == "d":
            depth = parse_depth(val)
            recurse = True
        elif ch == "j":
            raise fail("zfs stand-in: -j (JSON output) is not modelled")
        elif ch in "sS":
            c = canon_prop(val)
            if c is None and not is_user_prop(val):
                raise usage_err("invalid property '%s'" % val)
            sortcols.append((c or val, ch == "S"))
        elif ch == "t":
            types = parse_types(val)
            types_given = True
            listsnaps = True
    if fields == "space" and not types_given:
        types.discard("snapshot")
    if fields == "space":
        fields = "name,avail,used,usedsnap,usedds,usedrefreserv,usedchild"
    if types in ({"snapshot"}, {"bookmark"}) and ops and not recurse:
        recurse = True
        depth = 1
    cols = []
    for p in fields.split(","):
        c = canon_prop(p)
        if c is None and not is_user_prop(p):
            raise usage_err("bad property list: invalid property '%s'" % p)
        cols.append(c or p)
    with Session(host, write=False) as m:
        names, ret = iterate(m, ops, types, recurse, depth, listsnaps)
        if sortcols:
            names = sort_names(m, names, sortcols)
        rows = []
        for n in names:
            r = []
            for c in cols:
                if c == "name":
                    r.append(n)
                    continue
                v, _k, _s, _r = m.prop_value(n, c, parsable)
                r.append("-" if v is None else v)
            rows.append(r)
    headers = []
    right = []
    for c in cols:
        if c in NATIVE:
            headers.append(NATIVE[c].col)
            right.append(NATIVE[c].right)
        else:
            headers.append(c.upper())
            right.append(False)
    write_table(rows, cols, scripted, get_style=False, right=right, headers=headers)
    if ret == 0 and not rows and not scripted:
        err("no datasets available")
    return ret


def sort_names(m: Model, names: list, sortcols: list) -> list:
    import functools

    def val(n, prop):
        if prop == "name":
            return n
        if prop in NATIVE:
            p = NATIVE[prop]
            kind = "snapshot" if "@" in n else "filesystem"
            if kind not in p.types:
                return None
            v, _k, _s, _r = m.prop_value(n, prop, True)
            if p.right or prop == "creation":
                try:
                    return int(v)
                except (TypeError, ValueError):
                    return v
            return v
        v = m.get_prop(n, prop)
        return None if v[1] == "none" else v[0]

    base = {n: i for i, n in enumerate(names)}

    def cmp(a, b):
        for prop, rev in sortcols:
            va, vb = val(a, prop), val(b, prop)
            if va is None and vb is None:
                continue
            if va is None:
                return 1
            if vb is None:
                return -1
            if va == vb:
                continue
            r = -1 if va < vb else 1
            return -r if rev else r
        return base[a] - base[b]

    return sorted(names, key=functools.cmp_to_key(cmp))
