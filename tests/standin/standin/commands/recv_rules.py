"""OpenZFS's refusal rules for one received snapshot (incremental base, modified
destination, -F, full into an existing filesystem, partial state, resume), checked once
before the data and again at commit."""

from ..errors import err, fail
from ..names import parent_of, pool_of


class RecvRules:
    # -- validation shared by pre-check and commit
    def check(self, m, sec, fsname, snapname, errbuf, wants_new, resume, force,
              committing=False):  # fmt: skip
        plan = {}
        exists = fsname in m.ds
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
                if m.modified_since(fsname, from_s):
                    raise fail("%s: destination %s has been modified\nsince most recent "
                               "snapshot" % (errbuf, fsname))  # fmt: skip
                newer = []
            elif committing:
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
        plan["newfs"] = True
        plan["create_parents"] = par not in m.ds
        return plan
