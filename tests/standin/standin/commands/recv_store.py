"""What a received snapshot writes: its DATA records into the object store (and straight to
the live tree), or skipped; its commit (the snapshot, the filesystem's properties with
-o/-x, the live tree); and for a cut stream an error, or with -s the partial state and its
resume token. Receiver's methods (commands/receive.py)."""

import os

from ..errors import err, fail
from ..fileio import SideWriter, preallocate, sha256
from ..lazy import Lazy, jloads
from ..model import PRIVILEGED, Session
from ..names import parent_of
from ..properties import canon_prop
from ..state import CHUNK
from ..stream import REC, Truncated, token_encode
from ..trees import apply_manifest

contextlib = Lazy("contextlib", globals())
shutil = Lazy("shutil", globals())
zlib = Lazy("zlib", globals())
crypt = Lazy("..crypt", globals())


class RecvStore:
    def skip_data(self, sec: dict) -> None:
        try:
            for i, (_sha, _size) in enumerate(sec["objects"]):
                if i < sec["resume_obj"]:
                    continue
                _t, ln = self.r.record(b"DATA")
                left = ln
                while left:
                    b = os.read(self.r.fd, min(left, CHUNK))
                    if not b:
                        raise Truncated()
                    self.r.sec_crc = zlib.crc32(b, self.r.sec_crc)
                    left -= len(b)
            sec_crc = self.r.sec_crc
            _t, payload = self.r.record(b"SEND")
            if jloads(payload).get("crc") != "%08x" % sec_crc:
                raise fail("cannot receive: checksum mismatch")
        except Truncated:
            raise fail("cannot receive: failed to read from stream") from None

    def receive_data(self, sec, fsname, errbuf, partial, fss_entry):
        host = self.host
        start_obj = sec["resume_obj"]
        for i, (sha, size) in enumerate(sec["objects"]):
            if i < start_obj:
                continue
            off = sec["resume_off"] if i == start_obj else 0
            try:
                hdr = self.r.read_exact(REC.size)
            except Truncated:
                self.truncated(sec, fsname, errbuf, i, 0, fss_entry, partial)
            tag, ln = REC.unpack(hdr)
            if tag != b"DATA" or ln != size - off:
                raise fail("%s: invalid backup stream" % errbuf)
            tmp = None
            h = None
            if not host.has_obj(sha):
                tmp = host.tmpfile()
                h = sha256(size)
                stage = partial.get("stage") if (off and partial) else None
                if stage:
                    shutil.copyfile(os.path.join(host.partdir, stage), tmp)
                    with open(tmp, "rb") as fh:
                        while True:
                            b = fh.read(CHUNK)
                            if not b:
                                break
                            h.update(b)
                elif off:
                    raise fail("%s: invalid backup stream" % errbuf)
            out = None
            if tmp:
                out = open(tmp, "r+b" if off else "wb")  # noqa: SIM115 (closed below)
                preallocate(out.fileno(), size)
                out.seek(off)
            side = SideWriter(host.tmpfile(), size) if off == 0 else None
            got = off
            left = ln
            try:
                while left:
                    b = os.read(self.r.fd, min(left, CHUNK))
                    if not b:
                        break
                    self.r.sec_crc = zlib.crc32(b, self.r.sec_crc)
                    if side:
                        side.put(b)
                    if out:
                        out.write(b)
                        if not side:
                            h.update(b)
                    left -= len(b)
                    got += len(b)
            finally:
                if out:
                    out.truncate(got)
                    out.close()
                if side and left:
                    side.discard()
            if left:
                # cut inside this object: keep its bytes for a resume
                stagefile = None
                if tmp and got:
                    stagefile = "%s.part" % os.urandom(8).hex()
                    os.replace(tmp, os.path.join(host.partdir, stagefile))
                elif tmp:
                    os.unlink(tmp)
                self.truncated(sec, fsname, errbuf, i, got, fss_entry, partial, stagefile)
            digest = side.close() if side else h.hexdigest() if h else sha
            if digest != sha or (tmp and os.path.getsize(tmp) != size):
                if tmp:
                    os.unlink(tmp)
                if side:
                    os.unlink(side.path)
                raise fail("%s: checksum mismatch" % errbuf)
            if tmp:
                host.commit_obj(tmp, sha)
            if side:
                self.prewritten[sha] = side.path

    def drop_prewritten(self) -> None:
        for path in self.prewritten.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.prewritten.clear()

    def truncated(self, sec, fsname, errbuf, obj, off, fss_entry, partial, stagefile=None):
        resumable = self.fl.get("s")
        if not resumable:
            if stagefile:
                os.unlink(os.path.join(self.host.partdir, stagefile))
            raise fail("%s: incomplete stream" % errbuf)
        with Session(self.host) as m:
            exists = fsname in m.ds
            newfs = (not exists) if partial is None else bool(partial.get("newfs"))
            if not exists:
                if "/" not in fsname or parent_of(fsname) not in m.ds:
                    raise fail("%s: incomplete stream" % errbuf)
                d = m.new_fs(fsname)
                d["inconsistent"] = True
                d["mounted"] = False
                d["was_mounted"] = False
                if self.newcrypt:
                    d["crypt"] = dict(self.newcrypt)
                    m.relocate_dirs()
                if fss_entry is not None:
                    self.apply_fs_props(m, fsname, fss_entry["props"], toplevel=True)
            d = m.ds[fsname]
            old = d.get("partial")
            if old and old.get("stage") and old["stage"] != stagefile:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.host.partdir, old["stage"]))
            bytes_done = sum(sz for _s, sz in sec["objects"][:obj]) + off
            if fss_entry:
                props = fss_entry.get("props")
                snapprops = (fss_entry.get("snapprops") or {}).get(sec["toname"].split("@")[1])
            else:
                props = (partial or {}).get("props")
                snapprops = (partial or {}).get("snapprops")
            payload = {
                "toname": sec["toname"],
                "toguid": sec["toguid"],
                "fromguid": sec["fromguid"],
                "object": obj,
                "offset": off,
                "bytes": bytes_done,
            }
            if sec["fromguid"] == 0:
                payload.pop("fromguid")
            if sec.get("crypt"):
                payload["rawok"] = True  # `zfs send -t` resumes it raw
            tok = token_encode(dict(payload, nonce=os.urandom(4).hex()))
            d["partial"] = {
                "newfs": newfs,
                "toguid": sec["toguid"],
                "fromguid": sec["fromguid"],
                "toname": sec["toname"],
                "object": obj,
                "offset": off,
                "stage": stagefile,
                "token": tok,
                "props": props,
                "snapprops": snapprops,
            }
        raise fail(
            "%s: checksum mismatch or incomplete stream.\n"
            "Partially received snapshot is saved.\n"
            "A resuming stream can be generated on the sending system by running:\n"
            "    zfs send -t %s" % (errbuf, tok)
        )

    def apply_fs_props(self, m, fsname, props, toplevel):
        d = m.ds[fsname]
        d["received"] = {}
        for k, v in (props or {}).items():
            d["received"][k] = v
        d["hasrecvd"] = True
        for k in self.excludes:
            ck = canon_prop(k) or k
            if ck in d.get("local", {}):
                continue
            if ck not in d["mask"]:
                d["mask"].append(ck)
        if not PRIVILEGED:  # each received property needs its delegated permission
            for k in [k for k in d["received"] if not self.may_set(m, fsname, k)]:
                del d["received"][k]
        if toplevel:
            self.set_cmdprops(m, fsname)

    def may_set(self, m, fsname: str, prop: str) -> bool:
        if m.may(fsname, canon_prop(prop) or "userprop"):
            return True
        err("cannot receive %s property on %s: permission denied" % (prop, fsname))
        return False

    def set_cmdprops(self, m, fsname: str) -> None:
        for k, v in self.cmdprops.items():
            ck, cv = m.validate_set(fsname, k, v, "cannot receive")
            if PRIVILEGED or self.may_set(m, fsname, ck):
                m.set_local(fsname, ck, cv)

    def mounts(self, m, fsname: str) -> bool:
        """Whether the filesystem a receive created gets mounted: not with -u, not without
        its key (silently), not for a caller that is not root (reported at the end)."""
        if self.fl.get("u"):
            return False
        if "crypt" in m.ds[fsname] and not crypt.key_loaded(m, fsname):
            return False
        if not PRIVILEGED:
            self.unmountable.append(fsname)
            return False
        return True

    def commit(self, m, sec, fsname, snapname, plan, fss_entry):
        host = self.host
        is_top = self.top is None or self.top == fsname
        if self.top is None:
            self.top = fsname
        partial = plan.get("partial")
        if plan.get("newfs") and fsname not in m.ds:
            if plan.get("create_parents"):
                missing = []
                cur = parent_of(fsname)
                while cur not in m.ds:
                    missing.append(cur)
                    cur = parent_of(cur)
                for p in reversed(missing):
                    m.new_fs(p)
            m.new_fs(fsname)
            if plan.get("crypt"):
                m.ds[fsname]["crypt"] = plan["crypt"]
            mounted = self.mounts(m, fsname)
            m.ds[fsname]["mounted"] = m.ds[fsname]["was_mounted"] = mounted
        d = m.ds[fsname]
        if partial is not None:
            if partial.get("newfs"):
                d["inconsistent"] = False
                d["mounted"] = d["was_mounted"] = self.mounts(m, fsname)
            m._drop_partial_files(d)
            d["partial"] = None
            if fss_entry is None and partial.get("props") is not None:
                fss_entry = {"props": partial["props"], "snapprops": {}}
                if partial.get("snapprops") is not None:
                    fss_entry["snapprops"] = {snapname: partial["snapprops"]}
        for s in plan.get("destroy", []) or []:
            d["snaps"].remove(s)
        if fss_entry is not None:
            self.apply_fs_props(m, fsname, fss_entry.get("props"), toplevel=is_top)
        elif is_top and self.cmdprops:
            self.set_cmdprops(m, fsname)
        elif is_top and self.excludes:
            for k in self.excludes:
                ck = canon_prop(k) or k
                if ck not in d.get("local", {}) and ck not in d["mask"]:
                    d["mask"].append(ck)
        mid = host.put_manifest(sec["manifest"])
        snap = {
            "name": snapname,
            "guid": sec["toguid"],
            "createtxg": m.next_txg(),
            "creation": sec["creation"],
            "manifest": mid,
            "local": {},
            "received": {},
            "mask": [],
            "holds": {},
        }
        if fss_entry is not None:
            sp = (fss_entry.get("snapprops") or {}).get(sec["toname"].split("@")[1])
            if sp:
                snap["received"] = dict(sp)
                snap["hasrecvd"] = True
        if "crypt" in d:
            crypt.received_snapshot(m, fsname, sec, snap)
        d["snaps"].append(snap)
        m.relocate_dirs()
        apply_manifest(host, d["dir"], sec["manifest"], m.exclude_for(fsname), self.prewritten)
        m._live_cache.clear()
        m.mark_quiet(fsname)
