"""What zfs get and list share: which datasets a call shows (operands, -r, -d, -t, in
OpenZFS's order) and the table printer (also used by zpool list)."""

import os
import sys

from ..errors import err, usage_err
from ..model import Model
from ..names import name_problem


def parse_depth(val: str) -> int:
    try:
        n = int(val, 0)
    except ValueError:
        raise usage_err("%s is not an integer" % val) from None
    if n < 0:
        raise usage_err("Depth can not be negative.")
    return n


TYPE_WORDS = {
    "filesystem": {"filesystem"}, "fs": {"filesystem"}, "volume": {"volume"},
    "vol": {"volume"}, "snapshot": {"snapshot"}, "snap": {"snapshot"},
    "bookmark": {"bookmark"}, "all": {"filesystem", "volume", "snapshot", "bookmark"},
}  # fmt: skip


def parse_types(val: str) -> set:
    out = set()
    for tok in val.split(","):
        if tok not in TYPE_WORDS:
            raise usage_err("invalid type '%s'" % tok)
        out |= TYPE_WORDS[tok]
    return out


def iterate(m: Model, args, types: set, recurse: bool, depth: "int | None", listsnaps: bool):
    """listsnaps=False: snapshots are listed when named, not found by recursion."""
    """zfs_for_each: returns (sorted names, ret)."""
    out = []
    seen = set()
    ret = 0

    def visit(name: str, level: int):
        kind = "snapshot" if "@" in name else "bookmark" if "#" in name else "filesystem"
        if kind in types and name not in seen:
            seen.add(name)
            out.append(name)
        if not recurse or (depth is not None and level >= depth):
            return
        if kind == "filesystem":
            for c in m.children(name, recursive=False):
                visit(c, level + 1)
            if "snapshot" in types and listsnaps:
                for s in m.ds[name]["snaps"]:
                    visit("%s@%s" % (name, s["name"]), level + 1)
            if "bookmark" in types and listsnaps:
                for bm in m.ds[name].get("bookmarks") or ():
                    visit("%s#%s" % (name, bm), level + 1)

    if not args:
        recurse = True
        for p in sorted(m.st["pools"]):
            if p in m.ds:
                visit(p, 0)
    else:
        argtypes = set(types)
        if recurse:
            argtypes.add("filesystem")
        for a in args:
            if a.startswith("/"):
                found = None
                for n, d in m.ds.items():
                    if d.get("dir") == os.path.normpath(a):
                        found = n
                if found is None:
                    err("cannot open '%s': dataset does not exist" % a)
                    ret = 1
                    continue
                a = found
            prob = name_problem(a, "snapshot" in argtypes, allow_bookmark="bookmark" in argtypes)
            if prob:
                err("cannot open '%s': %s" % (a, prob))
                ret = 1
                continue
            if not m.exists(a):
                what = "no such pool or dataset" if "#" in a else "dataset does not exist"
                err("cannot open '%s': %s" % (a, what))
                ret = 1
                continue
            kind = "snapshot" if "@" in a else "bookmark" if "#" in a else "filesystem"
            if kind not in argtypes:
                err("cannot open '%s': operation not applicable to datasets of this type" % a)
                ret = 1
                continue
            visit(a, 0)

    def key(n):
        # libzfs compares names up to an '@' with strcmp, then snapshots by createtxg: a
        # bookmark `fs#bm` sorts by its whole name, after fs's snapshots ('#' < '/')
        fs, at, sn = n.partition("@")
        if not at:
            return (fs, 0, 0)
        s = m.find_snap(m.ds[fs], sn)
        return (fs, 1, s["createtxg"])

    out.sort(key=key)
    return out, ret


def write_table(rows, cols, scripted: bool, get_style: bool, right=None, headers=None):
    out = []
    if scripted:
        for r in rows:
            out.append("\t".join(r))
    elif rows:
        if headers is None:
            headers = [c.upper() for c in cols]
        widths = [len(h) for h in headers]
        for r in rows:
            for i, v in enumerate(r):
                widths[i] = max(widths[i], len(v))
        right = right or [False] * len(cols)

        def fmt(vals):
            parts = []
            for i, v in enumerate(vals):
                last = i == len(vals) - 1
                if right[i]:
                    parts.append(v.rjust(widths[i]))
                elif last:
                    parts.append(v)
                else:
                    parts.append(v.ljust(widths[i]))
            return "  ".join(parts)

        out.append(fmt(headers))
        for r in rows:
            out.append(fmt(r))
    if out:
        sys.stdout.write("\n".join(out) + "\n")
