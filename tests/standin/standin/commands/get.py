"""zfs get: columns, sources, `all`, `written@snap`."""

from ..errors import fail, usage_err
from ..lazy import Lazy
from ..model import Model, Session
from ..names import parent_of
from ..options import getopts
from ..properties import NATIVE, canon_prop, is_user_prop
from ..state import Host
from .selection import iterate, parse_depth, parse_types, write_table

units = Lazy("..units", globals())

GET_COLS = ("name", "property", "value", "received", "source")
SOURCES = {"local", "default", "inherited", "received", "temporary", "none"}
# read-only properties `zfs get all` omits when they have no value (a filesystem that is no
# clone, no partial receive); named explicitly they print "-" (seen on OpenZFS 2.1 and 2.3)
UNSET_HIDDEN = ("origin", "receive_resume_token")


BOOKMARK_PROPS = ["type", "creation", "referenced", "createtxg", "guid", "logicalreferenced"]


def all_props_for(m: Model, name: str) -> list:
    if "#" in name:  # OpenZFS's `get all` of a bookmark: these, in this order, no user props
        return BOOKMARK_PROPS
    kind = "snapshot" if "@" in name else "filesystem"
    props = [p for p, d in NATIVE.items() if not d.hidden and kind in d.types]
    users = set()
    cur = name
    if "@" in name:
        s = m.obj(name)
        users.update(k for k in list(s.get("local", {})) + list(s.get("received", {})))
        cur = name.split("@")[0]
    while cur is not None:
        d = m.ds[cur]
        users.update(k for k in list(d.get("local", {})) + list(d.get("received", {})))
        cur = parent_of(cur)
    users = [u for u in users if canon_prop(u) is None]
    out = props + sorted(users)
    return out


def source_text(kind: str, src) -> str:
    if kind == "inherited":
        return "inherited from %s" % src
    return {"none": "-", "default": "default", "local": "local", "received": "received",
            "temporary": "temporary"}[kind]  # fmt: skip


def cmd_get(host: Host, args) -> int:
    opts, ops = getopts(args, "d:o:s:jrt:Hp")
    parsable = scripted = recurse = False
    depth = None
    cols = ["name", "property", "value", "source"]
    sources = set(SOURCES)
    types = {"filesystem", "volume", "snapshot", "bookmark"}
    types_given = False
    for ch, val in opts:
        if ch == "p":
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
        elif ch == "o":
            cols = []
            for tok in val.split(","):
                if tok == "all":
                    if cols:
                        raise usage_err('"all" conflicts with specific fields given to -o option')
                    cols = list(GET_COLS)
                    continue
                if tok not in GET_COLS:
                    raise usage_err("invalid column name '%s'" % tok)
                if len(cols) == 5:
                    raise usage_err("too many fields given to -o option")
                cols.append(tok)
        elif ch == "s":
            sources = set()
            for tok in val.split(","):
                if tok not in SOURCES:
                    raise usage_err("invalid source '%s'" % tok)
                sources.add(tok)
        elif ch == "t":
            types = parse_types(val)
            types_given = True
    if not ops:
        raise usage_err("missing property argument")
    fields = ops[0]
    datasets = ops[1:]
    if (
        types_given
        and types in ({"snapshot"}, {"bookmark"})
        and datasets
        and not recurse
        and depth is None
    ):
        recurse = True
        depth = 1
    # property list
    if fields == "all":
        proplist = None
    else:
        proplist = []
        for p in fields.split(","):
            c = canon_prop(p)
            if c is None and not is_user_prop(p):
                if p.startswith("written@"):
                    proplist.append(p)
                    continue
                raise usage_err("bad property list: invalid property '%s'" % p)
            proplist.append(c or p)
    with Session(host, write=False) as m:
        names, ret = iterate(m, datasets, types, recurse, depth, listsnaps=True)
        rows = []
        for n in names:
            props = proplist if proplist is not None else all_props_for(m, n)
            for p in props:
                if p.startswith("written@"):
                    v = written_at(m, n, p[len("written@") :])
                    if v is None:
                        continue
                    shown = v if parsable else units.nicenum(int(v))
                    rows.append((n, p, shown, "-", "local", None))
                    continue
                if proplist is None and p in UNSET_HIDDEN and m.ro_value(n, p) is None:
                    continue  # `get all` leaves out what is not set (libzfs cannot read it)
                v, kind, src, recvd = m.prop_value(n, p, parsable)
                if v is None:
                    if proplist is None:
                        continue
                    v, kind = "-", "none"
                if kind not in sources:
                    continue
                rows.append((n, p, v, recvd if recvd is not None else "-", kind, src))
    out_rows = []
    for n, p, v, recvd, kind, src in rows:
        vals = {"name": n, "property": p, "value": v, "received": recvd,
                "source": source_text(kind, src)}  # fmt: skip
        out_rows.append([vals[c] for c in cols])
    write_table(out_rows, cols, scripted, get_style=True)
    return ret


def written_at(m: Model, name: str, ref: str):
    if "#" in name:
        return None
    if "@" in name:
        fs = name.split("@")[0]
        cur = m.snap_manifest(m.obj(name))
    else:
        fs = name
        cur = m.live(fs)
    snapname = ref.split("@")[-1]
    s = m.find_snap(m.ds[fs], snapname)
    if s is None:
        return None
    base = m.snap_manifest(s)
    return str(sum(e[3] for r, e in cur.items() if e[0] == "f" and (r not in base or base[r] != e)))
