"""zfs send: full, -i/-I, -R, -p, -t resume; -n/-v/-P estimates and progress lines;
temporary holds on what is being sent."""

import _thread
import os
import sys
import time

from ..errors import err, fail, usage_err
from ..lazy import Lazy
from ..model import Model, Session
from ..options import getopts
from ..state import Host
from ..stream import MAGIC, Writer, emit_section, jdump, section_plan, section_size, token_decode

signal = Lazy("signal", globals())
units = Lazy("..units", globals())
crypt = Lazy("..crypt", globals())


class Progress:
    """OpenZFS's once-a-second progress lines on stderr, from a thread of the low-level
    `_thread` module: every engine send has -v, and importing `threading` costs ~2.5 ms."""

    def __init__(self, w: Writer, parsable: bool, verbosity: int):
        self.w = w
        self.parsable = parsable
        self.verbosity = verbosity
        self.name = None
        self.base = 0
        self.stop = _thread.allocate_lock()  # held until the stream ends
        self.stop.acquire()
        self.done = _thread.allocate_lock()  # held while the thread runs

    def start_section(self, name: str) -> None:
        self.name = name
        self.base = self.w.total
        if not self.parsable:
            sys.stderr.write("TIME        SENT   SNAPSHOT %s\n" % name)
            sys.stderr.flush()

    def run(self) -> None:
        while not self.stop.acquire(timeout=1.0):
            if self.name is None:
                continue
            now = time.strftime("%H:%M:%S")
            done = self.w.total - self.base
            if self.parsable:
                line = "%s\t%d\t%s\n" % (now, done, self.name)
            else:
                line = "%s   %5s   %s\n" % (now, units.nicenum(done), self.name)
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                return

    def _thread_main(self) -> None:
        try:
            self.run()
        finally:
            self.done.release()

    def __enter__(self):
        self.done.acquire()
        _thread.start_new_thread(self._thread_main, ())
        return self

    def __exit__(self, *a):
        self.stop.release()
        self.done.acquire(timeout=2)
        return False


SEND_LONG = {
    "replicate": ("R", False), "skip-missing": ("s", False), "redact": ("d", True),
    "props": ("p", False), "parsable": ("P", False), "dedup": ("D", False),
    "proctitle": ("V", False), "verbose": ("v", False), "dryrun": ("n", False),
    "large-block": ("L", False), "embed": ("e", False), "resume": ("t", True),
    "compressed": ("c", False), "raw": ("w", False), "backup": ("b", False),
    "holds": ("h", False), "saved": ("S", False), "exclude": ("X", True),
}  # fmt: skip


def snapshot_props_for_stream(m: Model, obj: dict) -> dict:
    out = {}
    for k, v in obj.get("received", {}).items():
        if k not in obj.get("mask", []):
            out[k] = v
    out.update(obj.get("local", {}))
    return out


def fs_stream_props(m: Model, fs: str) -> dict:
    d = m.ds[fs]
    out = {}
    for k, v in d.get("received", {}).items():
        if k not in d.get("mask", []):
            out[k] = v
    out.update(d.get("local", {}))
    return out


def cmd_send(host: Host, args) -> int:
    opts, ops = getopts(args, "i:I:RsDpVvnPLeht:cwbd:SX:", SEND_LONG)
    f = {"verbosity": 0}
    inc = None
    doall = False
    token = None
    for ch, val in opts:
        if ch == "i":
            if inc is not None:
                raise usage_err("invalid option combination: -i and -I are mutually "
                                "exclusive")  # fmt: skip
            inc = val
        elif ch == "I":
            if inc is not None:
                raise usage_err("invalid option combination: -i and -I are mutually "
                                "exclusive")  # fmt: skip
            inc = val
            doall = True
        elif ch == "v":
            f["verbosity"] += 1
        elif ch == "t":
            token = val
        elif ch == "D":
            err("WARNING: deduplicated send is no longer supported.  A regular,\n"
                "non-deduplicated stream will be generated.\n")  # fmt: skip
        elif ch in ("d", "S", "X"):
            raise fail("zfs stand-in: send -%s is not modelled" % ch)
        else:
            f[ch] = True
    dry = f.get("n", False)
    parsable = f.get("P", False)
    verbosity = f["verbosity"]
    replicate = f.get("R", False)
    props = f.get("p", False) or replicate
    if token is not None:
        if replicate or f.get("p") or inc is not None or f.get("h") or f.get("b"):
            raise usage_err("invalid flags combined with -t")
        if ops:
            raise usage_err("too many arguments")
    else:
        if not ops:
            raise usage_err("missing snapshot argument")
        if len(ops) > 1:
            raise usage_err("too many arguments")
    if not dry and os.isatty(1):
        raise fail(
            "Error: Stream can not be written to a terminal.\nYou must redirect standard output."
        )
    raw = f.get("w", False)
    if token is not None:
        return send_resume(host, token, dry, parsable, verbosity, raw)
    if (replicate or doall) and inc is not None and "#" in inc:
        raise fail("Error: multiple snapshots cannot be sent from a bookmark.")
    target = ops[0]
    refusals = []  # what the kernel refuses once the stream starts (after the estimate)
    with Session(host, write=False) as m:
        if "@" not in target:
            m.open(target)
            raise fail("warning: cannot send '%s': target is busy; if a filesystem, it must "
                       "not be mounted" % target)  # fmt: skip
        if not (replicate or doall):
            fromname = None
            if inc is not None:
                fromname = inc
                if "@" not in fromname and "#" not in fromname:
                    err("Warning: incremental source didn't specify type, assuming snapshot. "
                        "Use '@' or '#' prefix to avoid ambiguity.")  # fmt: skip
                    fromname = "@" + fromname
                if fromname.startswith(("@", "#")):
                    fromname = target.split("@")[0] + fromname
            m.open(target)
            fs = target.split("@")[0]
            d, s = m.snap(target)
            from_s = None
            if fromname is not None and "#" in fromname:
                from_s = bookmark_base(m, fromname, d, s)
                if isinstance(from_s, str):  # the kernel's refusal, worded by how it is met
                    return refuse_bookmark(from_s, target, fromname, verbosity, parsable, dry)
            elif fromname is not None:
                m.open(fromname)
                fd_, from_s = m.snap(fromname)
                if fd_ is not d or from_s["createtxg"] >= s["createtxg"]:
                    raise fail("warning: cannot send '%s': not an earlier snapshot from the "
                               "same fs" % target)  # fmt: skip
            if props and "crypt" in d and not raw:
                props_refused(fs, target, [fs], target)
            plans = [(fs, section_plan(m, fs, s, from_s), fromname)]
            refusals = send_refusals(m, target, fs, raw, "dataset key must be loaded")
            fss = build_fss(m, [fs]) if props else None
        else:
            fs = target.split("@")[0]
            m.open(fs, ("filesystem", "volume"))
            tosnap = target.split("@", 1)[1]
            fromsnap = None
            if inc is not None:
                fi = inc
                if "@" in fi and not fi.startswith("@") and fi.split("@")[0] != fs:
                    raise usage_err("incremental source must be in same filesystem")
                if "@" in fi:
                    fi = fi.split("@", 1)[1]
                if "@" in fi or "/" in fi:
                    raise usage_err("invalid incremental source")
                fromsnap = fi
            if fromsnap is not None:
                m.open("%s@%s" % (fs, fromsnap), ("snapshot",))
            fslist = [fs] + (m.children(fs) if replicate else [])
            _d0, s0 = m.snap(target)
            if s0 is None:
                m.open(target)
            plans = []
            failed = False
            for f_ in fslist:
                d = m.ds[f_]
                to_s = m.find_snap(d, tosnap)
                if to_s is None:
                    if f_ != fs and d["createtxg"] > s0["createtxg"]:
                        continue
                    rec = " recursively" if replicate else ""
                    err("cannot send %s@%s%s: snapshot %s@%s does not exist"
                        % (fs, tosnap, rec, f_, tosnap))  # fmt: skip
                    return 1
                snaps = [x for x in d["snaps"] if x["createtxg"] <= to_s["createtxg"]]
                start = None
                if fromsnap is not None:
                    from_s = m.find_snap(d, fromsnap)
                    if from_s is None:
                        if replicate and f_ != fs:
                            start = None  # full from the beginning
                        else:
                            err("WARNING: could not send %s@%s:\nincremental source (%s@%s) "
                                "does not exist" % (f_, tosnap, f_, fromsnap))  # fmt: skip
                            failed = True
                            continue
                    elif from_s["createtxg"] >= to_s["createtxg"]:
                        err("WARNING: could not send %s@%s:\nincremental source (%s@%s) is not "
                            "earlier than it" % (f_, tosnap, f_, fromsnap))  # fmt: skip
                        failed = True
                        continue
                    else:
                        start = from_s
                if start is not None:
                    chain = [x for x in snaps if x["createtxg"] > start["createtxg"]]
                    if not doall:
                        chain = [to_s]
                else:
                    chain = snaps if (replicate or doall) else [to_s]
                prev = start
                for x in chain:
                    plans.append((f_, section_plan(m, f_, x, prev), prev["name"] if prev else None))
                    prev = x
            if failed:
                return 1
            if props and not raw and any("crypt" in m.ds[f_] for f_ in fslist):
                props_refused(fs, target, [f_ for f_ in fslist if "crypt" in m.ds[f_]],
                              "%s@%s" % (fs, tosnap))  # fmt: skip
            # the holds come first: refused, nothing reaches the kernel's send checks
            refusals = hold_refusals(m, fs, [f_ for f_, _sec, _from in plans])
            for f_, sec, _from in plans if not refusals else ():
                refusals += send_refusals(m, sec["toname"], f_, raw, "source key must be loaded")
            fss = build_fss(m, fslist) if props else None
        head = {
            "sendfs": fs,
            "props": props,
            "replicate": replicate,
            "doall": doall,
            "resume": False,
            "fss": fss,
            "toname": target,
            # like OpenZFS, -R/-I/-p streams are a "package" with an END record after the
            # snapshot streams; a plain stream is one snapshot stream and nothing after it
            "package": bool(replicate or doall or props),
        }
        mark_raw(m, head, plans, raw, f.get("e", False))
    return run_send(host, head, plans, dry, parsable, verbosity, refusals)


def bookmark_base(m: Model, fromname: str, d: dict, s: dict):
    """The base of `send -i fs#bm fs@snap` as section_plan() takes it, or the kernel's
    refusal: ESRCH (no such bookmark), EXDEV (not an ancestor: another filesystem, or not
    older than the snapshot)."""
    bd, bm = m.bookmark(fromname)
    if bm is None:
        return "ESRCH"
    if bd is not d or bm["createtxg"] >= s["createtxg"]:
        return "EXDEV"
    base = {"name": "#" + fromname.split("#", 1)[1], "guid": bm["guid"],
            "createtxg": bm["createtxg"], "manifest": bm["manifest"], "bookmark": True}  # fmt: skip
    if "ivset" in bm:
        base["ivset"] = bm["ivset"]
    return base


def refuse_bookmark(errno_name: str, target: str, fromname: str, verbosity: int,
                    parsable: bool, dry: bool) -> int:  # fmt: skip
    """A bad bookmark base is found by the kernel: by the size estimate when -v asks for one
    (worded with strerror() under -P, silently otherwise), by the send itself else (libzfs's
    own words); `-n` without -v never asks."""
    if verbosity:
        if parsable:
            why = {"EXDEV": "Invalid cross-device link", "ESRCH": "No such process"}
            err("warning: cannot send '%s': %s" % (target, why[errno_name]))
        return 1
    if dry:
        return 0
    if errno_name == "EXDEV":
        err("warning: cannot send '%s': not an earlier snapshot from the same fs" % target)
    else:
        err("warning: cannot send '%s': incremental source (%s) does not exist"
            % (target, fromname))  # fmt: skip
    return 1


def props_refused(fs: str, target: str, encrypted: list, errname: str) -> None:
    """send_iterate_fs(): properties of an encrypted dataset travel only in a raw stream."""
    err("cannot send %s: encrypted dataset %s may not be sent with properties without the raw "
        "flag" % (target, encrypted[0]))  # fmt: skip
    raise fail("warning: cannot send '%s': backup failed" % errname)


def hold_refusals(m: Model, fs: str, sent: list) -> list:
    """-I and -R (libzfs's zfs_send() with doall or replicate) take temporary user holds on
    the snapshots they send, through lzc_hold, after the size estimate and before any
    stream: a caller that is not root needs `hold` on each sent snapshot's filesystem (a
    local grant there is enough), or nothing is sent (found on OpenZFS 2.1.11 and 2.3.2;
    a full or -i send, from a snapshot or a bookmark, and -n, take none)."""
    if all(m.may(f_, "hold") for f_ in dict.fromkeys([fs, *sent])):
        return []
    return ["cannot hold: permission denied", "cannot send '%s': permission denied" % fs]


def send_refusals(m: Model, snapname: str, fs: str, raw: bool, keymsg: str) -> list:
    """What the kernel refuses when the stream starts: the caller's `send` permission on the
    snapshot, then (not raw) the key of an encrypted dataset."""
    if not m.may(snapname, "send"):
        return ["warning: cannot send '%s': permission denied" % snapname]
    if not raw and "crypt" in m.ds[fs] and not crypt.key_loaded(m, fs):
        return ["warning: cannot send '%s': %s" % (snapname, keymsg)]
    return []


def mark_raw(m: Model, head: dict, plans, raw: bool, embed: bool) -> None:
    """A raw send of an encrypted dataset carries its encryption (crypt.stream_crypt); of
    any other it is an ordinary stream with embedded data (`-w` implies -e)."""
    encrypted = raw and "crypt" in m.ds[head["sendfs"]]
    head["raw"] = encrypted
    head["embed"] = bool(embed or (raw and not encrypted))
    if not encrypted:
        for _f, sec, _from in plans:
            sec.pop("fromivset", None)
        return
    for f_, sec, _from in plans:
        d = m.ds[f_]
        to_s = next(x for x in d["snaps"] if x["guid"] == sec["toguid"])
        sec["crypt"] = crypt.stream_crypt(m, f_, to_s, sec.pop("fromivset", None))
        if head.get("props") and sec["crypt"] and d.get("crypt", {}).get("root"):
            # with -p an encryption root's keylocation travels too (seen on OpenZFS 2.1.11
            # and 2.3.2: the standby's keylocation is the master's file://, not prompt)
            sec["crypt"]["keylocation"] = d["crypt"].get("keylocation")


def build_fss(m: Model, fslist: list) -> dict:
    out = {}
    for f_ in fslist:
        d = m.ds[f_]
        out[f_] = {
            "guid": d["guid"],
            "props": fs_stream_props(m, f_),
            "snaps": {s["name"]: s["guid"] for s in d["snaps"]},
            "snapprops": {s["name"]: snapshot_props_for_stream(m, s) for s in d["snaps"]},
        }
    return out


def run_send(host, head, plans, dry, parsable, verbosity, refusals=()) -> int:
    out = sys.stdout if dry else sys.stderr
    total = 0
    lines = []
    for _fs, sec, fromname in plans:
        size = section_size(sec)
        total += size
        shown_from = fromname  # -I/-R name it short, -i by its full name (as OpenZFS)
        named = shown_from is not None and ("@" in shown_from or "#" in shown_from)
        if parsable:
            if shown_from is not None:
                lines.append("incremental\t%s\t%s\t%d" % (shown_from, sec["toname"], size))
            else:
                lines.append("full\t%s\t%d" % (sec["toname"], size))
        else:
            if shown_from is not None:
                pre = "send from %s to %s" if named else "send from @%s to %s"
                ln = pre % (shown_from, sec["toname"])
            else:
                ln = "full send of %s" % sec["toname"]
            if size:
                ln += " estimated size is %s" % units.nicenum(size)
            lines.append(ln)
    if verbosity:
        for ln in lines:
            out.write(ln + "\n")
        if parsable:
            out.write("size\t%d\n" % total)
        else:
            out.write("total estimated size is %s\n" % units.nicenum(total))
        out.flush()
    if dry:
        return 0
    if refusals:
        return refused_stream(head, refusals)
    tag = hold_for_send(host, plans)
    try:
        return stream_out(host, head, plans, parsable, verbosity)
    finally:
        release_send_holds(host, tag)


def refused_stream(head: dict, refusals) -> int:
    """A send refused after the estimate. libzfs's zfs_send() (-I, -R, -p) has written its
    package header by then; with -I/-R a refused snapshot is a warning, the next is tried,
    and the END record follows: a stream `zfs recv` takes, receiving nothing, and `zfs send`
    exits 0 on 2.1.11, 1 on 2.3.2. Refused holds (before any snapshot) or -p alone: the
    header, then exit 1. A plain stream: nothing (seen on OpenZFS 2.1.11 and 2.3.2)."""
    for line in refusals:
        err(line)
    if not head["package"]:
        return 1
    from ..release import zversion

    w = Writer(1)
    try:
        w.write(MAGIC)
        w.record(b"HEAD", jdump(head))
        if not (head["replicate"] or head.get("doall")) or refusals[0].startswith("cannot hold"):
            return 1
        w.record(b"END!", jdump({"crc": "%08x" % w.crc, "sections": 0}))
    except BrokenPipeError:
        return 1
    return 1 if zversion() >= (2, 3, 0) else 0


def hold_for_send(host: Host, plans) -> str:
    """OpenZFS keeps what it sends from being destroyed while the stream runs (temporary
    `.send-<pid>-<n>` holds, or the kernel's hold on the dataset): model both with a
    temporary hold, dropped at the end or when the sending process is gone."""
    tag = ".send-%d-1" % os.getpid()
    with Session(host) as m:
        for fs, sec, _from in plans:
            d = m.ds.get(fs)
            for g in (sec["toguid"], 0 if sec.get("frombookmark") else sec["fromguid"]):
                if not g:
                    continue
                s = None
                for x in d["snaps"] if d else []:
                    if x["guid"] == g:
                        s = x
                if s is None:
                    raise fail("warning: cannot send '%s': dataset does not exist" % sec["toname"])
                s["holds"][tag] = int(time.time())
    return tag


def release_send_holds(host: Host, tag: str) -> None:
    with Session(host) as m:
        for d in m.ds.values():
            for s in d["snaps"]:
                s["holds"].pop(tag, None)


def stream_out(host: Host, head: dict, plans, parsable: bool, verbosity: int) -> int:
    w = Writer(1)
    try:
        w.write(MAGIC)
        w.record(b"HEAD", jdump(head))
        prog = Progress(w, parsable, verbosity) if verbosity else None
        if prog:
            prog.__enter__()
        try:
            for _fs, sec, _from in plans:
                if prog:
                    prog.start_section(sec["toname"])
                emit_section(host, w, sec)
        finally:
            if prog:
                prog.__exit__()
        crc = w.crc
        if head["package"]:
            w.record(b"END!", jdump({"crc": "%08x" % crc, "sections": len(plans)}))
    except BrokenPipeError:
        # the C zfs dies of SIGPIPE when the reader goes away; do the same (the temporary
        # holds are dropped by the next call that finds this process gone)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
        return 1
    return 0


def send_resume(host: Host, token: str, dry: bool, parsable: bool, verbosity: int,
                raw: bool = False) -> int:  # fmt: skip
    """`zfs send -t`. Its refusals exit 255: zfs_send_resume() returns -1 and `zfs send`
    returns that as its exit status (OpenZFS 2.1 and 2.3)."""
    tok, problem = token_decode(token)
    if tok is None:
        raise fail("cannot resume send: %s" % problem, 255)
    out = sys.stdout if (verbosity and dry) else sys.stderr
    if verbosity:
        out.write("resume token contents:\nnvlist version: 0\n")
        if tok.get("fromguid"):
            out.write("\tfromguid = 0x%x\n" % tok["fromguid"])
        out.write("\tobject = 0x%x\n" % tok["object"])
        out.write("\toffset = 0x%x\n" % tok["offset"])
        out.write("\tbytes = 0x%x\n" % tok["bytes"])
        out.write("\ttoguid = 0x%x\n" % tok["toguid"])
        out.write("\ttoname = %s\n" % tok["toname"])
    with Session(host, write=False) as m:
        toname = tok["toname"]
        fs = toname.split("@")[0]
        d = m.ds.get(fs)
        s = None
        if d is not None:
            for x in d["snaps"]:
                if x["guid"] == tok["toguid"]:
                    s = x
        if s is None:
            if m.exists(toname):
                raise fail("cannot resume send: '%s' is no longer the same snapshot used in "
                           "the initial send" % toname, 255)  # fmt: skip
            raise fail("cannot resume send: '%s' used in the initial send no longer exists"
                       % toname, 255)  # fmt: skip
        from_s = None
        if tok.get("fromguid"):
            for x in d["snaps"]:
                if x["guid"] == tok["fromguid"]:
                    from_s = x
            for bmname, bm in sorted((d.get("bookmarks") or {}).items()):
                if from_s is None and bm["guid"] == tok["fromguid"]:  # a bookmark base
                    from_s = bookmark_base(m, "%s#%s" % (fs, bmname), d, s)
            if from_s is None:
                raise fail("cannot resume send: incremental source %#x no longer exists"
                           % tok["fromguid"], 255)  # fmt: skip
        sec = section_plan(m, fs, s, from_s)
        sec["resume_obj"] = tok["object"]
        sec["resume_off"] = tok["offset"]
        fromname = None
        if from_s:
            fromname = (
                fs + from_s["name"] if from_s.get("bookmark") else "%s@%s" % (fs, from_s["name"])
            )
        head = {"sendfs": fs, "props": False, "replicate": False, "resume": True, "fss": None,
                "toname": "%s@%s" % (fs, s["name"]), "package": False}  # fmt: skip
        raw = raw or bool(tok.get("rawok"))  # a raw stream resumes raw
        mark_raw(m, head, [(fs, sec, fromname)], raw, False)
        refusals = send_refusals(m, head["toname"], fs, raw, "source key must be loaded")
    return run_send(host, head, [(fs, sec, fromname)], dry, parsable, verbosity, refusals)
