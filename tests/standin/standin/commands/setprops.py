"""zfs set and inherit (-r, -S)."""

from ..errors import Exit, err, fail, usage_err
from ..model import PRIVILEGED, Session
from ..options import getopts
from ..properties import NATIVE, canon_prop, is_user_prop
from ..release import zversion
from ..state import Host


def cmd_set(host: Host, args) -> int:
    _opts, ops = getopts(args, "u", colon_msgs=False)
    if not ops:
        raise usage_err("missing arguments")
    if len(ops) < 2:
        if "=" not in ops[0]:
            raise usage_err("missing property=value argument(s)")
        raise usage_err("missing dataset name(s)")
    assigns = []
    ds_start = -1
    for i, a in enumerate(ops):
        if "=" in a:
            if ds_start > 0:
                raise usage_err("invalid argument order")
            assigns.append(a)
        elif ds_start < 0:
            ds_start = i
    if ds_start < 0:
        raise usage_err("missing dataset name(s)")
    props = {}
    for a in assigns:
        k, _, v = a.partition("=")
        if k in props:
            # OpenZFS 2.1 and 2.3 alike: this line alone, exit 255 (no usage text)
            raise fail("property '%s' specified multiple times" % k, 255)
        props[k] = v
    ret = 0
    with Session(host) as m:
        for name in ops[ds_start:]:
            try:
                m.open(name)
            except Exit:
                ret = 1
                continue
            errbuf = "cannot set property for '%s'" % name
            try:
                checked = [m.validate_set(name, k, v, errbuf) for k, v in props.items()]
            except Exit:
                # 2.3 returns -1 from its property callback: the process exits 255
                ret = 255 if zversion() >= (2, 3, 0) else 1
                continue
            denied = [k for k, _v in checked if not m.may(name, k if k in NATIVE else "userprop")]
            for k, v in checked:
                if k not in denied:
                    m.set_local(name, k, v)
            if any(k == "mountpoint" for k, _ in checked):
                m.relocate_dirs()
            failure = 255 if zversion() >= (2, 3, 0) else 1
            if denied:  # the kernel sets what it may and refuses the rest
                err("%s: permission denied" % errbuf)
                ret = failure
            elif remount_refused(m, name, [k for k, _v in checked]):
                ret = failure
    return ret


NAMESPACE = ("atime", "relatime", "devices", "exec", "setuid", "readonly", "xattr", "nbmand")


def remount_refused(m, name: str, props: list) -> bool:
    """A property of the mount itself changed on a mounted filesystem: libzfs remounts it,
    which Linux refuses a caller that is not root."""
    if PRIVILEGED or "@" in name or not any(p in NAMESPACE for p in props):
        return False
    d = m.ds[name]
    if not d["mounted"] or d["inconsistent"]:
        return False
    err(m.mount_refused(name))
    err("property may be set but unable to remount filesystem")
    return True


def cmd_inherit(host: Host, args) -> int:
    opts, ops = getopts(args, "rS", colon_msgs=False)
    flags = {ch for ch, _ in opts}
    if not ops:
        raise usage_err("missing property argument")
    if len(ops) < 2:
        raise usage_err("missing dataset argument")
    prop = ops[0]
    native = canon_prop(prop)
    if native is not None:
        p = NATIVE[native]
        if p.kind == "ro":
            raise fail("%s property is read-only" % prop)
        if p.kind != "inherit" and "S" not in flags:
            err("'%s' property cannot be inherited" % prop)
            if native in ("quota", "reservation", "refquota", "refreservation"):
                err("use 'zfs set %s=none' to clear" % prop)
                err("use 'zfs inherit -S %s' to revert to received value" % prop)
            return 1
        prop = native
    elif not is_user_prop(prop):
        raise usage_err("invalid property '%s'" % prop)
    ret = 0
    with Session(host) as m:
        for name in ops[1:]:
            try:
                m.open(name)
            except Exit:
                ret = 1
                continue
            kind = "snapshot" if "@" in name else "filesystem"
            if native is not None and kind not in NATIVE[native].types:
                err("cannot inherit %s for '%s': '%s' does not apply to datasets of this type"
                    % (prop, name, prop))  # fmt: skip
                ret = 1
                continue
            targets = [name]
            if "r" in flags and "@" not in name:
                targets += m.children(name)
            if not all(m.may(t, prop if native else "userprop") for t in targets):
                err("cannot inherit %s for '%s': permission denied" % (prop, name))
                ret = 1
                continue
            for t in targets:
                m.inherit(t, prop, "S" in flags)
            if native in NAMESPACE and not PRIVILEGED:
                # inherited, then libzfs's remount refused: only that line (no "property may
                # be set" as `zfs set` says), exit 1 on 2.1.11 and 2.3.2 alike
                for t in targets:
                    if m.ds[t]["mounted"] and not m.ds[t]["inconsistent"]:
                        err(m.mount_refused(t))
                        ret = 1
        if prop == "mountpoint":
            m.relocate_dirs()
    return ret
