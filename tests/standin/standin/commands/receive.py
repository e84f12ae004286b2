"""zfs receive: the command, the stream's sections in order, -F pruning of a replication
stream, and OpenZFS's refusal rules for each received snapshot (incremental base, modified
destination, -F, full into an existing filesystem, partial state, resume), checked before
its data and again at its commit; `-A` aborts a partial receive. What a section writes is in
recv_store."""

import os
import sys
import time

from .. import receiving
from ..errors import err, fail, usage_err
from ..lazy import Lazy, jloads
from ..model import PRIVILEGED, Session
from ..names import name_problem, parent_of, pool_of
from ..options import getopts
from ..properties import canon_prop, is_user_prop
from ..release import zversion
from ..state import Host
from ..stream import MAGIC, REC, Reader, Truncated, token_encode
from .recv_store import RecvStore

zlib = Lazy("zlib", globals())
crypt = Lazy("..crypt", globals())


RECV_ERRS = {"new": "cannot receive new filesystem stream",
             "inc": "cannot receive incremental stream",
             "resume": "cannot receive resume stream"}  # fmt: skip


def received_line(nbytes: int, seconds: float) -> str:
    """What `zfs receive -v` prints after each snapshot: 2.1 counts whole seconds (at least
    one), 2.2 and later hundredths (the stand-in's byte count is of its own stream format)."""
    from ..units import nicenum

    if zversion() < (2, 2, 0):
        whole = max(int(seconds), 1)
        return "received %s stream in %d seconds (%s/sec)" % (
            nicenum(nbytes),
            whole,
            nicenum(nbytes // whole),
        )
    seconds = max(seconds, 1e-9)
    return "received %s stream in %.2f seconds (%s/sec)" % (
        nicenum(nbytes),
        seconds,
        nicenum(int(nbytes / seconds)),
    )


def busy(other: "dict | None", errbuf: str, fsname: str) -> None:
    """Refuse as OpenZFS does when `other` (`receiving.running`) writes into `fsname`."""
    if other is None:
        return
    if other.get("resumable"):
        raise fail('%s: destination %s contains partially-complete state from "zfs '
                   'receive -s".' % (errbuf, fsname))  # fmt: skip
    raise fail("%s: dataset is busy" % errbuf)


def cmd_receive(host: Host, args) -> int:
    opts, ops = getopts(args, "o:x:dehMnuvFsAc")
    fl = {}
    cmdprops = {}
    excludes = []
    for ch, val in opts:
        if ch == "o":
            k, eq, v = val.partition("=")
            if not eq:
                err("missing '=' for property=value argument")
                raise usage_err()
            if k in cmdprops or k in excludes:
                err("property '%s' specified multiple times" % k)
                raise usage_err()
            cmdprops[k] = v
        elif ch == "x":
            if val in cmdprops or val in excludes:
                err("property '%s' specified multiple times" % val)
                raise usage_err()
            excludes.append(val)
        elif ch == "d":
            if fl.get("e"):
                raise usage_err("invalid option combination: -d and -e are mutually exclusive")
            fl["d"] = True
        elif ch == "e":
            if fl.get("d"):
                raise usage_err("invalid option combination: -d and -e are mutually exclusive")
            fl["e"] = True
        elif ch == "c":
            raise fail("zfs stand-in: corrective receive (-c) is not modelled")
        else:
            fl[ch] = True
    if not ops:
        raise usage_err("missing snapshot argument")
    if len(ops) > 1:
        raise usage_err("too many arguments")
    target = ops[0]
    if fl.get("A"):
        if fl.get("d") or fl.get("e") or fl.get("n") or fl.get("s") or fl.get("u"):
            raise usage_err("invalid option")
        return recv_abort(host, target)
    if os.isatty(0):
        raise fail(
            "Error: Backup stream can not be read from a terminal.\n"
            "You must redirect standard input."
        )
    for k in list(cmdprops) + excludes:
        if canon_prop(k) is None and not is_user_prop(k):
            raise fail("cannot receive: invalid property '%s'" % k)
    r = Reader(0)
    try:
        magic = r.read_exact(len(MAGIC))
    except Truncated:
        raise fail("cannot receive: failed to read from stream") from None
    if magic != MAGIC:
        raise fail("cannot receive: invalid stream (bad magic number)")
    try:
        _tag, head_raw = r.record(b"HEAD")
        head = jloads(head_raw)
    except Truncated:
        raise fail("cannot receive: failed to read from stream") from None
    except ValueError:
        raise fail("cannot receive: invalid stream (bad magic number)") from None
    rx = Receiver(host, r, head, target, fl, cmdprops, excludes)
    rc = rx.run()
    return rx.mount_new(rc)


def recv_abort(host: Host, target: str) -> int:
    with Session(host) as m:
        m.open(target, ("filesystem", "volume"))
        d = m.ds[target]
        if not d.get("partial"):
            raise fail("'%s' does not have any resumable receive state to abort" % target)
        if d["partial"].get("newfs"):
            m.remove_fs(target)
        else:
            m._drop_partial_files(d)
            d["partial"] = None
    return 0


class Receiver(RecvStore):
    """One `zfs receive`: the stream's sections in order, each checked against OpenZFS's
    rules (`check`), then stored (RecvStore)."""

    def __init__(self, host, reader, head, target, fl, cmdprops, excludes):
        self.host = host
        self.r = reader
        self.head = head
        self.target = target
        self.fl = fl
        self.cmdprops = cmdprops
        self.excludes = excludes
        self.top = None
        self.newcrypt = None
        self.prewritten: dict = {}
        self.unmountable: list = []  # new filesystems a caller that is not root cannot mount
        # encryption options (-o encryption=... for a non-raw stream; keylocation for a raw
        # one): zfs_crypto_create()'s rules, not a property set (crypt.py)
        self.cryptprops = crypt.split_props(cmdprops) if any(
            k in cmdprops for k in ("encryption", "keyformat", "keylocation", "pbkdf2iters")
        ) else {}  # fmt: skip

    def mount_new(self, rc: int) -> int:
        """zfs receive mounts what it created (unless -u); Linux lets only root mount. The
        failure is reported; from 2.2 libzfs no longer counts it (changelist_postfix)."""
        if rc != 0 or not self.unmountable:
            return rc
        with Session(self.host, write=False) as m:
            for name in self.unmountable:
                if name in m.ds:
                    err(m.mount_refused(name))
        from ..release import zversion

        return 0 if zversion() >= (2, 2, 0) else 1

    def dest_for(self, toname: str) -> str:
        sendfs = self.head["sendfs"]
        t = self.target
        if self.fl.get("e"):
            if "@" in t:
                raise fail("cannot receive: invalid argument - snapshot not allowed with -e")
            tail = sendfs.rsplit("/", 1)[-1]
            rest = toname[len(sendfs) :]
            return t + "/" + tail + rest
        if self.fl.get("d"):
            if "@" in t:
                raise fail("cannot receive: invalid argument - snapshot not allowed with -d")
            i = toname.find("/")
            rest = toname[i:] if i >= 0 else toname[toname.find("@") :]
            return t + rest
        if "@" not in t:
            return t + toname[len(sendfs) :]
        if self.head.get("replicate"):
            raise fail("cannot receive: cannot specify snapshot name for multi-snapshot stream")
        return t

    def run(self) -> int:
        n = 0
        while True:
            crc_before = self.r.crc
            try:
                hdr = self.r.read_exact(REC.size)
            except Truncated:
                raise fail("cannot receive: failed to read from stream") from None
            tag, ln = REC.unpack(hdr)
            if tag == b"END!":
                try:
                    payload = jloads(self.r.read_exact(ln))
                except Truncated:
                    raise fail("cannot receive: failed to read from stream") from None
                if payload.get("sections") != n or payload.get("crc") != "%08x" % crc_before:
                    raise fail("cannot receive: invalid backup stream")
                break
            if tag != b"SNAP":
                raise fail("cannot receive: invalid record type")
            self.r.sec_crc = zlib.crc32(hdr)
            try:
                sec = jloads(self.r.read_exact(ln))
            except Truncated:
                raise fail("cannot receive: failed to read from stream") from None
            if n == 0:
                self.replication_prune(sec)
            self.section(sec)
            n += 1
            if not self.head.get("package", True):
                return 0  # a plain stream ends with its snapshot's trailer
        return 0

    def replication_prune(self, sec: dict) -> None:
        """recv -F of an incremental -R stream: destroy what the source no longer has."""
        if not (self.head.get("replicate") and self.fl.get("F") and sec["fromguid"]):
            return
        fss = self.head.get("fss") or {}
        if self.fl.get("n"):
            return
        with Session(self.host) as m:
            top = self.dest_for(self.head["sendfs"] + "@x").split("@")[0]
            if top not in m.ds:
                return
            wanted = {self.dest_for(f + "@x").split("@")[0]: e for f, e in fss.items()}
            for name in [top, *m.children(top)]:
                if name not in m.ds:
                    continue
                e = wanted.get(name)
                if e is None:
                    tree = [name, *m.children(name)]
                    if any(s["holds"] for x in tree for s in m.ds[x]["snaps"]):
                        continue
                    for x in sorted(tree, reverse=True):
                        m.remove_fs(x)
                    continue
                guids = set(e["snaps"].values())
                d = m.ds[name]
                d["snaps"] = [s for s in d["snaps"] if s["guid"] in guids or s["holds"]]

    def section(self, sec: dict) -> None:
        resume = bool(self.head.get("resume"))
        toname = sec["toname"]
        destsnap = self.dest_for(toname)
        fsname, _, snapname = destsnap.partition("@")
        prob = name_problem(destsnap, True, True)
        if prob:
            raise fail("cannot receive: %s" % prob)
        fromguid = sec["fromguid"]
        wants_new = fromguid == 0 and not resume
        kind = "resume" if resume else ("new" if fromguid == 0 else "inc")
        errbuf = RECV_ERRS[kind]
        fss_entry = None
        if self.head.get("fss"):
            srcfs = toname.split("@")[0]
            fss_entry = self.head["fss"].get(srcfs)
        verbose = self.fl.get("v")
        dry = self.fl.get("n")
        force = self.fl.get("F")
        began, read0 = time.monotonic(), self.r.total
        # ---- pre-checks (under the lock), decide the plan
        busy(receiving.running(self.host, fsname), errbuf, fsname)  # OpenZFS checks it first
        with Session(self.host, write=False) as m:
            plan = self.check(m, sec, fsname, snapname, errbuf, wants_new, resume, force)
        if plan == "skip":
            if verbose:
                print("snap %s already exists; ignoring" % destsnap)
                sys.stdout.flush()
            self.skip_data(sec)
            return
        if verbose:
            print("%s %s stream of %s into %s" % ("would receive" if dry else "receiving",
                  "incremental" if fromguid else "full", toname, destsnap))  # fmt: skip
            sys.stdout.flush()
        if dry:
            self.skip_data(sec)
            return
        # ---- data
        partial = plan.get("partial")
        self.newcrypt = plan.get("crypt")
        claimed = self.claim(sec, fsname, errbuf, plan)
        try:
            self.receive_section(sec, fsname, snapname, errbuf, partial, fss_entry, wants_new,
                                 resume, force)  # fmt: skip
        finally:
            self.drop_prewritten()
            if claimed:
                receiving.release(self.host, fsname)
        if verbose:
            print(received_line(self.r.total - read0, time.monotonic() - began))
            sys.stdout.flush()

    def claim(self, sec: dict, fsname: str, errbuf: str, plan: dict) -> bool:
        """Take `fsname` for this receive (OpenZFS's `%recv`) when it exists, or refuse as
        OpenZFS does when another receive writes into it (`receiving`)."""
        if plan.get("newfs"):
            return False
        token = None
        if self.fl.get("s") and not plan.get("partial"):
            payload = {"toname": sec["toname"], "toguid": sec["toguid"],
                       "fromguid": sec["fromguid"], "object": 0, "offset": 0,
                       "bytes": 0}  # fmt: skip
            if not sec["fromguid"]:
                payload.pop("fromguid")
            if sec.get("crypt"):
                payload["rawok"] = True
            token = token_encode(dict(payload, nonce=os.urandom(4).hex()))
        other = receiving.claim(self.host, fsname, bool(self.fl.get("s")), token)
        busy(other, errbuf, fsname)
        return True

    def receive_section(self, sec, fsname, snapname, errbuf, partial, fss_entry, wants_new,
                        resume, force):  # fmt: skip
        self.receive_data(sec, fsname, errbuf, partial, fss_entry)
        # ---- trailer
        sec_crc = self.r.sec_crc
        try:
            _t, payload = self.r.record(b"SEND")
        except Truncated:
            self.truncated(sec, fsname, errbuf, len(sec["objects"]), 0, fss_entry, partial)
        if jloads(payload).get("crc") != "%08x" % sec_crc:
            raise fail("%s: checksum mismatch" % errbuf)
        # ---- commit
        with Session(self.host) as m:
            plan = self.check(m, sec, fsname, snapname, errbuf, wants_new, resume, force,
                              committing=True)  # fmt: skip
            if plan == "skip":
                return
            self.commit(m, sec, fsname, snapname, plan, fss_entry)

    def check_permission(self, m, name: str, force: bool, errbuf: str) -> None:
        """zfs_secpolicy_recv on the filesystem, or its parent for a new one: receive (from
        2.3.2 `receive:append` will do without -F), create and mount."""
        if PRIVILEGED:
            return
        from ..release import zversion

        may_recv = m.may(name, "receive") or (
            not force and zversion() >= (2, 3, 2) and m.may(name, "receive:append")
        )
        if not may_recv or not m.may(name, "mount", "create"):
            raise fail("%s: permission denied" % errbuf)

    # -- validation shared by pre-check and commit
    def check(self, m, sec, fsname, snapname, errbuf, wants_new, resume, force,
              committing=False):  # fmt: skip
        plan = {}
        # A resumable receive needs feature@extensible_dataset (dmu_recv_begin_check: ENOTSUP,
        # which libzfs words as below); `zpool create -d` leaves it disabled.
        if self.fl.get("s") and m.st["pools"].get(pool_of(fsname), {}).get("features_disabled"):
            raise fail("%s: pool must be upgraded to receive this stream." % errbuf)
        exists = fsname in m.ds
        raw = bool(sec.get("crypt"))
        if exists:
            d = m.ds[fsname]
            if wants_new:
                if not force:
                    raise fail("%s: destination '%s' exists\nmust specify -F to overwrite it"
                               % (errbuf, fsname))  # fmt: skip
                if d["snaps"]:
                    first = "%s@%s" % (fsname, d["snaps"][0]["name"])
                    raise fail("%s: destination has snapshots (eg. %s)\nmust destroy them to "
                               "overwrite it" % (errbuf, first))  # fmt: skip
            if not resume and (raw or "crypt" in d):
                crypt.recv_check_existing(m, fsname, raw, wants_new, force, errbuf)
            if raw:
                crypt.recv_check_props(self.cryptprops, self.excludes, errbuf)
            self.check_permission(m, fsname, force, errbuf)
            if resume:
                p = d.get("partial")
                if (
                    not p
                    or p["toguid"] != sec["toguid"]
                    or p["fromguid"] != sec["fromguid"]
                    or (not committing and (p["object"] != sec["resume_obj"]
                                            or p["offset"] != sec["resume_off"]))
                ):  # fmt: skip
                    if self.fl.get("s"):
                        raise fail("%s: kernel modules must be upgraded to receive this stream."
                                   % errbuf)  # fmt: skip
                    raise fail("%s: invalid backup stream" % errbuf)
                if sec["fromguid"] == 0 and not p.get("newfs") and not force:
                    raise fail("%s: Resuming recv on existing destination '%s'\nmust specify "
                               "-F to overwrite it" % (errbuf, fsname))  # fmt: skip
                plan["partial"] = p
                plan["newfs"] = bool(p.get("newfs"))
                plan["from"] = None
                if sec["fromguid"]:
                    for s in d["snaps"]:
                        if s["guid"] == sec["fromguid"]:
                            plan["from"] = s
                    if plan["from"] is None:
                        raise fail("%s: most recent snapshot of %s does not\nmatch incremental "
                                   "source" % (errbuf, fsname))  # fmt: skip
                    plan["destroy"] = [s for s in d["snaps"]
                                       if s["createtxg"] > plan["from"]["createtxg"]]  # fmt: skip
                return plan
            if d.get("partial"):
                raise fail('%s: destination %s contains partially-complete state from "zfs '
                           'receive -s".' % (errbuf, fsname))  # fmt: skip
            if m.find_snap(d, snapname) is not None:
                if any(x["guid"] == sec["toguid"] for x in d["snaps"]):
                    return "skip"
                raise fail("cannot restore to %s@%s: destination already exists"
                           % (fsname, snapname))  # fmt: skip
            if wants_new:
                plan["newfs"] = False
                plan["replace"] = True
                return plan
            # incremental
            from_s = None
            for s in d["snaps"]:
                if s["guid"] == sec["fromguid"]:
                    from_s = s
            if from_s is None:
                raise fail("%s: most recent snapshot of %s does not\nmatch incremental source"
                           % (errbuf, fsname))  # fmt: skip
            newer = [s for s in d["snaps"] if s["createtxg"] > from_s["createtxg"]]
            if not force:
                # a raw incremental also needs its base to be the newest snapshot
                if m.modified_since(fsname, from_s) or (raw and newer):
                    raise fail("%s: destination %s has been modified\nsince most recent "
                               "snapshot" % (errbuf, fsname))  # fmt: skip
                newer = []
            if raw or "crypt" in d:
                crypt.recv_check_incremental(m, fsname, sec, from_s, errbuf)
            if force and committing:
                for s in newer:
                    if s["holds"]:
                        raise fail("%s: dataset is busy" % errbuf)
            plan["from"] = from_s
            plan["destroy"] = newer
            plan["newfs"] = False
            return plan
        # destination does not exist
        if resume or not wants_new or "/" not in fsname:
            raise fail("%s: destination '%s' does not exist" % (errbuf, fsname))
        par = parent_of(fsname)
        if par not in m.ds and not (self.fl.get("d") and pool_of(par) in m.st["pools"]):
            err("cannot open '%s': dataset does not exist" % par)
            raise fail("%s: unable to restore to destination" % errbuf)
        if raw:
            crypt.recv_check_props(self.cryptprops, self.excludes, errbuf)
        if par in m.ds:
            self.check_permission(m, par, force, errbuf)
            if raw or self.cryptprops or "crypt" in m.ds[par]:
                plan["crypt"] = crypt.recv_new_crypt(m, fsname, par, sec, self.head,
                                                     self.cryptprops, errbuf)  # fmt: skip
        plan["newfs"] = True
        plan["create_parents"] = par not in m.ds
        return plan
