"""zfs bookmark: a bookmark of a snapshot (or a copy of another bookmark) in the same
filesystem. A bookmark keeps the snapshot's guid, createtxg and creation (what `zfs send -i
fs#bm` needs of its base), and, in the stand-in, the snapshot's manifest id, so that an
incremental from it carries what the snapshot did not have even after the snapshot is gone.
Destroying a bookmark is `zfs destroy fs#bm` (datasets.py); rollback -r destroys the newer
ones (snapshots.py)."""

from ..errors import err, fail, usage_err
from ..model import Session
from ..names import bookmark_name_ok
from ..options import getopts
from ..state import Host


def bookmark_of(m, src: str) -> dict:
    """The new bookmark's fields, from a snapshot or a bookmark."""
    if "#" in src:
        return dict(m.bookmark(src)[1])  # a copy keeps everything, creation included
    _d, s = m.snap(src)
    bm = {"guid": s["guid"], "createtxg": s["createtxg"], "creation": s["creation"],
          "manifest": s["manifest"], "referenced": referenced(m, s)}  # fmt: skip
    if "ivset" in s:
        bm["ivset"] = s["ivset"]
    return bm


def referenced(m, s: dict) -> int:
    from ..trees import manifest_size

    return manifest_size(m.snap_manifest(s))


def cmd_bookmark(host: Host, args) -> int:
    _opts, ops = getopts(args, "")
    if not ops:
        raise usage_err("missing snapshot argument")
    if len(ops) < 2:
        raise usage_err("missing bookmark argument")
    src, new = ops[0], ops[1]  # OpenZFS ignores any further operand
    if "@" not in src and "#" not in src:
        raise usage_err("invalid source name '%s': must contain a '@' or '#'" % src)
    if "#" not in new:
        raise usage_err("invalid bookmark name '%s': must contain a '#'" % new)
    srcfs = src.split("@")[0].split("#")[0]
    if new.startswith("#"):
        new = srcfs + new
    errbuf = "cannot create bookmark '%s'" % new
    with Session(host) as m:
        if not m.exists(src):  # zfs_open() of the source: its message, then the usage
            what = "no such pool or dataset" if "#" in src else "dataset does not exist"
            err("cannot open '%s': %s" % (src, what))
            raise usage_err()
        if not bookmark_name_ok(new):
            raise fail("%s: invalid argument" % errbuf)
        fs, _, bmname = new.partition("#")
        d = m.ds.get(fs)
        if d is not None and not m.may(fs, "bookmark"):
            raise fail("%s: permission denied" % errbuf)
        if d is None:
            raise fail("%s: dataset does not exist" % errbuf)
        if fs != srcfs:  # no clones here: only the source's own filesystem descends from it
            raise fail("%s: source is not an ancestor of the new bookmark's dataset" % errbuf)
        marks = d.setdefault("bookmarks", {})
        if bmname in marks:
            raise fail("%s: bookmark exists" % errbuf)
        marks[bmname] = bookmark_of(m, src)
    return 0
