"""Option parsing as the zfs command does it (GNU getopt, permuting, long options)."""

from .errors import usage_err


def getopts(args, spec: str, longopts: "dict | None" = None, colon_msgs: bool = True):
    """GNU-style (permuting) getopt. spec like "rHd:o:". Returns (opts, operands)."""
    takes = {}
    i = 0
    while i < len(spec):
        ch = spec[i]
        if i + 1 < len(spec) and spec[i + 1] == ":":
            takes[ch] = True
            i += 2
        else:
            takes[ch] = False
            i += 1
    opts, operands = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            operands.extend(args[i + 1 :])
            break
        if a.startswith("--") and longopts is not None:
            name, eq, val = a[2:].partition("=")
            if name not in longopts:
                raise usage_err("invalid option '%s'" % a)
            ch, needs = longopts[name]
            if needs:
                if not eq:
                    if i + 1 >= len(args):
                        raise usage_err("missing argument for '%s' option" % a)
                    i += 1
                    val = args[i]
                opts.append((ch, val))
            else:
                opts.append((ch, None))
            i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch not in takes:
                    raise usage_err("invalid option '%s'" % ch)
                if takes[ch]:
                    if j + 1 < len(a):
                        opts.append((ch, a[j + 1 :]))
                    elif i + 1 < len(args):
                        i += 1
                        opts.append((ch, args[i]))
                    else:
                        if colon_msgs:
                            raise usage_err("missing argument for '%s' option" % ch)
                        raise usage_err("invalid option '%s'" % ch)
                    break
                opts.append((ch, None))
                j += 1
            i += 1
            continue
        operands.append(a)
        i += 1
    return opts, operands
