"""`zrepq-local`: zrep's command line, run right here by the engine, without the queue.

A drop-in for `zrep` on one host (same verbs, flags, output and exit codes), and the command
a peer runs over SSH for `takeover -L` in direct mode. `zrepq` (the producer) enqueues the
same verbs for the workers instead.

Output: stdout carries exactly zrep's lines (the engine's "info" messages and the report
formats), so scripts that parse or compare zrep's output keep working; zrepq's own lines go
to stderr ("notice", "warning"), or appear only with -v ("detail", the size estimate).
docs/migrating-from-zrep.md lists each command and every deliberate difference.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TextIO

from workers.engine import Context, admin, expire, handback, init, pause, report, roles, sync
from workers.engine import requests as r
from workers.engine.errors import StateError, ZrepqError
from workers.engine.formats import status_details, status_line
from workers.engine.names import validate_dataset
from workers.engine.rollback import rollback
from workers.engine.verbs import record
from workers.printer import Printer
from workers.runtime import context_from_env

VERSION = "zrepq 0.1.0 (zrep 2.0.2 compatible)"

USAGE = """\
usage: zrepq-local [-t TAG] [--json] COMMAND ...
  init|-i [-f] [-r] fs desthost destfs
  sync|-S [-f] [-r] [-c] [-P] [-q SECS] (fs ...|all|fs@snap)   (-P: even if paused)
  snaponly (fs ...|all)      synconly [-f] [-r] (fs ...|all)
  refresh [-f] [-r] destfs
  expire|-e [-L] [all|fs ...]
  failover [-L] fs[@snap] [host]      takeover [-L] [-F] fs[@snap] [host]
  status|-s [-v] [-a|fs ...]          list|-l [-v|-L|-s] [fs ...]
  lastsent fs    uptodate fs    clear [-f] fs    sentsync [-L] fs@snap
  pause [-r REASON] [-E] fs      resume fs       (-E: pause expire too)
  handback [-L] fs    give the pair back to zrep: zrepq's holds, cursors, props, partial receive
  changeconfig|-C [-f] fs desthost destfs | changeconfig|-C [-f] -d destfs srchost srcfs
  version
"""


class UsageError(Exception):
    pass


def _flags(args: list[str], allowed: str, valued: str = "") -> tuple[dict[str, str], list[str]]:
    """Leading single-letter flags (zrep style, any order); the rest are operands."""
    flags: dict[str, str] = {}
    while args and args[0].startswith("-") and len(args[0]) == 2 and args[0] != "--":
        f = args.pop(0)[1]
        if f in valued:
            if not args:
                raise UsageError(f"-{f} needs a value")
            flags[f] = args.pop(0)
        elif f in allowed:
            flags[f] = "1"
        else:
            raise UsageError(f"unknown flag -{f}")
    return flags, args


def main(
    argv: Sequence[str] | None = None,
    *,
    context: Context | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one zrep command line; `context` (tests): the engine's parts, else from settings."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    tag = None
    as_json = False
    while args and args[0] in ("-t", "-D", "--json"):
        a = args.pop(0)
        if a == "-t":
            if not args:
                print(USAGE, file=err)
                return 2
            tag = args.pop(0)
        elif a == "--json":
            as_json = True
    if not args:
        print(USAGE, file=out)
        return 2
    printer = Printer(err if as_json else out, err, quiet=as_json)
    io = CliIO(out, err, printer)
    try:
        base = context if context is not None else context_from_env(observer=printer)
        ctx = replace(base, observer=printer).with_tag(tag)
        result = _dispatch(ctx, args.pop(0), args, io)
    except UsageError as e:
        print(f"Error: {e}\n{USAGE}", file=err)
        return 2
    except ZrepqError as e:
        if as_json:
            print(json.dumps({"ok": False, "error": e.to_record()}), file=out)
        print(f"Error: {e}", file=err)
        return 1
    code, payload = result
    if as_json and payload is not None:
        print(json.dumps(payload, indent=2, default=str), file=out)
    return code


@dataclass
class CliIO:
    """Where a command writes: stdout (zrep's lines), stderr, and the event printer."""

    out: TextIO
    err: TextIO
    printer: Printer


Handler = Callable[[Context, list[str], CliIO], tuple[int, Any]]


def _dispatch(ctx: Context, cmd: str, args: list[str], io: CliIO) -> tuple[int, Any]:
    table: dict[str, Handler] = {
        "init": _init,
        "-i": _init,
        "sync": _sync,
        "-S": _sync,
        "synconly": _synconly,
        "snaponly": _snaponly,
        "refresh": _refresh,
        "expire": _expire,
        "-e": _expire,
        "failover": _failover,
        "takeover": _takeover,
        "status": _status,
        "-s": _status,
        "list": _list,
        "-l": _list,
        "lastsent": _lastsent,
        "getlastsent": _lastsent,
        "uptodate": _uptodate,
        "clear": _clear,
        "changeconfig": _changeconfig,
        "-C": _changeconfig,
        "sentsync": _sentsync,
        "pause": _pause,
        "resume": _resume,
        "handback": _handback,
        "version": _version,
    }
    handler = table.get(cmd)
    if handler is None:
        raise UsageError(f"unrecognized subcommand {cmd}")
    return handler(ctx, args, io)


def _need(args: list[str], n: int, what: str) -> None:
    if len(args) < n:
        raise UsageError(f"missing {what}")


def _all_or(ctx: Context, args: list[str]) -> list[str]:
    return report.masters(ctx) if args == ["all"] else args


def _resume_flag(f: dict[str, str]) -> bool | None:
    """zrep's -r asks for a resumable receive; without it, the config's (on by default)."""
    return True if "r" in f else None


def _run_each(
    io: CliIO,
    items: list[str],
    fn: Callable[[str], Any],
    skip_kinds: Sequence[str] = (),
) -> tuple[int, Any]:
    """Run per fs and keep going: one bad fs must not stop `all` (zrep's loop stops)."""
    results, code = [], 0
    for fs in items:
        try:
            results.append({"ok": True, **record(fn(fs))})
        except ZrepqError as e:
            if e.kind in skip_kinds:
                print(f"{fs}: {e.kind}, skipped", file=io.err)
                results.append({"ok": True, "dataset": fs, "status": e.kind})
                continue
            print(f"Error: {e}", file=io.err)
            results.append({"ok": False, "dataset": fs, "error": e.to_record()})
            code = 1
    return code, results


def _init(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 3, "fs desthost destfs")
    req = r.InitRequest(
        fs=rest[0], dest_host=rest[1], dest_fs=rest[2], force="f" in f, resume=_resume_flag(f)
    )
    return 0, record(init.init(ctx, req))


def _sync(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvrcP", valued="q")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem (or all)")
    if len(rest) == 1 and "@" in rest[0]:
        res = rollback(ctx, r.RollbackRequest(snapshot=rest[0]), before_rollback=lambda: _wait(io))
        return 0, record(res)
    quiet = int(f["q"]) if "q" in f else None

    def one(fs: str) -> Any:
        if quiet is not None and quiet < 30:  # zrep's check and words, after the name's
            validate_dataset(fs)
            raise StateError("-q must use value greater than 30")
        req = r.SyncRequest(
            fs=fs,
            force="f" in f,
            resume=_resume_flag(f),
            changed_only="c" in f,
            quiet_secs=quiet,
            ignore_pause="P" in f,
        )
        return sync.sync(ctx, req)

    skip = ("paused",) if rest == ["all"] else ()
    return _run_each(io, _all_or(ctx, rest), one, skip_kinds=skip)


def _wait(io: CliIO) -> None:
    """zrep's 20 s to think it over before a rollback. Only with someone at a terminal to
    interrupt: a script would just wait (zrep waits in every case)."""
    if io.printer.quiet or not sys.stdin.isatty():
        return
    for left in (20, 10):
        print(f"Continuing in {left} seconds....", file=io.out, flush=True)
        time.sleep(10)


def _synconly(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem (or all)")

    def one(fs: str) -> Any:
        req = r.SynconlyRequest(fs=fs, force="f" in f, resume=_resume_flag(f))
        return sync.synconly(ctx, req)

    return _run_each(io, _all_or(ctx, rest), one)


def _snaponly(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem (or all)")
    names = [admin.snaponly(ctx, r.SnaponlyRequest(fs=fs)) for fs in _all_or(ctx, args)]
    # zrep prints the name without a newline; several run together there, a space here.
    io.out.write(" ".join(names))
    return 0, names


def _refresh(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem")
    req = r.RefreshRequest(fs=rest[0], force="f" in f, resume=_resume_flag(f))
    return 0, record(sync.refresh(ctx, req))


def _expire(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    items = report.list_names(ctx) if rest == ["all"] else rest or report.masters(ctx)

    def one(fs: str) -> Any:
        return expire.expire(ctx, r.ExpireRequest(fs=fs, local_only="L" in f))

    return _run_each(io, items, one)


def _role(args: list[str], allowed: str) -> tuple[dict[str, str], dict[str, Any]]:
    f, rest = _flags(args, allowed)
    _need(rest, 1, "filesystem")
    other = rest[1] if len(rest) > 1 else None
    return f, {"fs": rest[0], "local_only": "L" in f, "other_host": other}


def _failover(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    _, fields = _role(args, "Lf")
    return 0, record(roles.failover(ctx, r.FailoverRequest(**fields)))


def _takeover(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, fields = _role(args, "LF")
    return 0, record(roles.takeover(ctx, r.TakeoverRequest(**fields, force="F" in f)))


def _status(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "va")
    rows = report.status(ctx, r.StatusRequest(fs=rest, all="a" in f, verbose="v" in f))
    fmt = ctx.config.dateformat
    for row in rows:
        io.out.write(status_line(row, verbose="v" in f, all_fs="a" in f, dateformat=fmt) + "\n")
        if "v" in f and not io.printer.quiet:
            # zrepq's extra facts (last sent, pause, last error) go to stderr: a script that
            # reads `status -v` line by line sees exactly zrep's lines on stdout.
            io.out.flush()
            io.err.write("".join(line + "\n" for line in status_details(row, fmt)))
            io.err.flush()
    return 0, [row.to_dict() for row in rows]


def _list(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "vLs")
    if "s" in f and not rest and not report.masters(ctx):
        print("No zrep master filesystems found", file=io.err)  # zrep's words, rc 0
        return 0, ""
    req = r.ListRequest(fs=rest, verbose="v" in f, masters_only="L" in f, snapshots="s" in f)
    listing = report.listing(ctx, req)
    io.out.write(listing.text)
    if listing.names is not None:
        return 0, listing.names
    return 0, listing.text if listing.entries is None else listing.entries


def _lastsent(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    snap = report.lastsent(ctx, r.LastsentRequest(fs=args[0]))
    io.out.write(f"{snap or ''}\n")
    return 0, snap


def _uptodate(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    ok = report.uptodate(ctx, r.UptodateRequest(fs=args[0]))
    return (0 if ok else 1), ok


def _clear(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "f")
    _need(rest, 1, "filesystem")

    def say(line: str) -> None:
        if not io.printer.quiet:
            print(line, file=io.out)

    say(f"WARNING: Removing all zrep configs and snapshots from {rest[0]}")
    say(f" (for TAG={ctx.tag})")
    # zrep always pauses here; with nobody at a terminal to interrupt, zrepq does not.
    if "f" not in f and sys.stdin.isatty():
        say("Continuing in 10 seconds")
        io.out.flush()
        time.sleep(10)
    return 0, admin.clear(ctx, r.ClearRequest(fs=rest[0]))


def _changeconfig(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fd")
    _need(rest, 3, "fs host otherfs")
    req = r.ChangeconfigRequest(
        fs=rest[0], other_host=rest[1], other_fs=rest[2], force="f" in f, dest_side="d" in f
    )
    admin.changeconfig(ctx, req)
    return 0, None


def _sentsync(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    _need(rest, 1, "fs@snap")
    admin.sentsync(ctx, r.SentsyncRequest(snapshot=rest[0], local_only="L" in f))
    return 0, None


def _pause(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "E", valued="r")
    _need(rest, 1, "filesystem")
    # What is stored anyway (one line, bounded): a longer reason is not refused here.
    reason = pause.clean(f.get("r", ""))
    return 0, pause.pause(ctx, r.PauseRequest(fs=rest[0], reason=reason, expire="E" in f))


def _resume(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    return 0, pause.resume(ctx, r.ResumeRequest(fs=args[0]))


def _handback(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    _need(rest, 1, "filesystem")
    req = r.HandbackRequest(fs=rest[0], local_only="L" in f)
    return 0, record(handback.handback(ctx, req))


def _version(ctx: Context, args: list[str], io: CliIO) -> tuple[int, Any]:
    io.out.write(VERSION + "\n")
    return 0, VERSION


def run() -> NoReturn:
    sys.exit(main())
