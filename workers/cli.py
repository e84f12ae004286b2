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
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from workers.engine import Engine
from workers.engine.errors import ZrepqError
from workers.engine.events import Event, Message, StreamFinished, StreamProgress, StreamStarted
from workers.engine.formats import list_verbose_text, names_text, status_details, status_line
from workers.runtime import engine_from_env

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
  handback [-L] fs    give the pair back to zrep: zrepq's holds, properties, partial receive
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


class Printer:
    """Shows engine events: zrep's lines on stdout, zrepq's own on stderr, progress on a
    terminal.

    `quiet` (--json) keeps stdout for the JSON record: zrep's lines are not printed.
    `verbose` (a command's -v) adds zrepq's details, such as the stream's size estimate, on
    stderr, where zrep's -v (`zfs send -v`) puts its own.
    """

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool, verbose: bool = False) -> None:
        self.out, self.err, self.quiet, self.verbose = out, err, quiet, verbose
        self._last = 0.0
        self._estimate_shown = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            if event.level == "info":
                if not self.quiet:
                    print(event.text, file=self.out, flush=True)
            elif event.level != "detail" or self.verbose:
                print(event.text, file=self.err, flush=True)
        elif isinstance(event, StreamStarted):
            self._estimate_shown = False
            if self.verbose and event.total:
                self._estimate_shown = True
                print(f"estimated size: {event.total} bytes", file=self.err)
        elif isinstance(event, StreamProgress):
            # The estimate comes from the send itself, with the first progress event.
            if not self._estimate_shown and event.total and self.verbose:
                self._estimate_shown = True
                print(f"estimated size: {event.total} bytes", file=self.err)
            if not self.err.isatty():
                return
            now = time.monotonic()
            if now - self._last >= 0.5:
                self._last = now
                pct = f"{100 * event.bytes_sent / event.total:5.1f}%" if event.total else ""
                print(
                    f"\r{event.snapshot}: {event.bytes_sent} bytes {pct} "
                    f"{event.rate / 1e6:.1f} MB/s",
                    end="",
                    file=self.err,
                    flush=True,
                )
        elif isinstance(event, StreamFinished) and self.err.isatty():
            print(file=self.err)


def main(
    argv: Sequence[str] | None = None,
    *,
    engine: Engine | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
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
        if engine is not None:
            engine.observer = printer
        eng = (engine or engine_from_env(observer=printer)).with_tag(tag)
        result = _dispatch(eng, args.pop(0), args, io)
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


Handler = Callable[[Engine, list[str], CliIO], tuple[int, Any]]


def _dispatch(eng: Engine, cmd: str, args: list[str], io: CliIO) -> tuple[int, Any]:
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
    return handler(eng, args, io)


def _need(args: list[str], n: int, what: str) -> None:
    if len(args) < n:
        raise UsageError(f"missing {what}")


def _all_or(eng: Engine, args: list[str]) -> list[str]:
    return eng.masters() if args == ["all"] else args


def _run_each(
    io: CliIO,
    items: list[str],
    fn: Callable[[str], dict[str, Any]],
    skip_kinds: Sequence[str] = (),
) -> tuple[int, Any]:
    """Run per fs and keep going: one bad fs must not stop `all` (zrep's loop stops)."""
    results, code = [], 0
    for fs in items:
        try:
            results.append({"ok": True, **fn(fs)})
        except ZrepqError as e:
            if e.kind in skip_kinds:
                print(f"{fs}: {e.kind}, skipped", file=io.err)
                results.append({"ok": True, "dataset": fs, "status": e.kind})
                continue
            print(f"Error: {e}", file=io.err)
            results.append({"ok": False, "dataset": fs, "error": e.to_record()})
            code = 1
    return code, results


def _init(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 3, "fs desthost destfs")
    res = eng.init(rest[0], rest[1], rest[2], force="f" in f, resume=True if "r" in f else None)
    return 0, res.to_dict()


def _sync(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvrcP", valued="q")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem (or all)")
    if len(rest) == 1 and "@" in rest[0]:
        return 0, eng.sync_to_snapshot(rest[0], before_rollback=lambda: _pause_for(io)).to_dict()
    quiet = int(f["q"]) if "q" in f else None
    return _run_each(
        io,
        _all_or(eng, rest),
        lambda fs: eng.sync(
            fs,
            force="f" in f,
            resume=True if "r" in f else None,
            changed_only="c" in f,
            quiet_secs=quiet,
            ignore_pause="P" in f,
        ).to_dict(),
        skip_kinds=("paused",) if rest == ["all"] else (),
    )


def _pause_for(io: CliIO) -> None:
    """zrep's 20 s to think it over before a rollback. Only with someone at a terminal to
    interrupt: a script would just wait (zrep waits in every case)."""
    if io.printer.quiet or not sys.stdin.isatty():
        return
    for left in (20, 10):
        print(f"Continuing in {left} seconds....", file=io.out, flush=True)
        time.sleep(10)


def _synconly(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem (or all)")
    return _run_each(
        io,
        _all_or(eng, rest),
        lambda fs: eng.synconly(fs, force="f" in f, resume=True if "r" in f else None).to_dict(),
    )


def _snaponly(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem (or all)")
    names = [eng.snaponly(fs) for fs in _all_or(eng, args)]
    # zrep prints the name without a newline; several run together there, a space here.
    io.out.write(" ".join(names))
    return 0, names


def _refresh(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fvr")
    io.printer.verbose = "v" in f
    _need(rest, 1, "filesystem")
    return 0, eng.refresh(rest[0], force="f" in f, resume=True if "r" in f else None).to_dict()


def _expire(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    items = eng.list_fs() if rest == ["all"] else rest or eng.masters()
    return _run_each(io, items, lambda fs: eng.expire(fs, local_only="L" in f).to_dict())


def _role(args: list[str], allowed: str) -> tuple[dict[str, str], str, str | None]:
    f, rest = _flags(args, allowed)
    _need(rest, 1, "filesystem")
    return f, rest[0], rest[1] if len(rest) > 1 else None


def _failover(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, fs, host = _role(args, "Lf")
    return 0, eng.failover(fs, local_only="L" in f, host=host).to_dict()


def _takeover(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, fs, host = _role(args, "LF")
    return 0, eng.takeover(fs, local_only="L" in f, host=host, force="F" in f).to_dict()


def _status(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "va")
    rows = eng.status(rest, all="a" in f)
    fmt = eng.config.dateformat
    for row in rows:
        io.out.write(status_line(row, verbose="v" in f, all_fs="a" in f, dateformat=fmt) + "\n")
        if "v" in f and not io.printer.quiet:
            # zrepq's extra facts (last sent, pause, last error) go to stderr: a script that
            # reads `status -v` line by line sees exactly zrep's lines on stdout.
            io.out.flush()
            io.err.write("".join(line + "\n" for line in status_details(row, fmt)))
            io.err.flush()
    return 0, [r.to_dict() for r in rows]


def _list(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "vLs")
    if "s" in f:
        if not rest and not eng.masters():
            print("No zrep master filesystems found", file=io.err)  # zrep's words, rc 0
            return 0, ""
        text = eng.list_snapshots(rest)
        io.out.write(text)
        return 0, text
    if "v" in f:
        entries = eng.list_verbose(rest)
        io.out.write(list_verbose_text(entries, blank_between=not rest))
        return 0, entries
    names = eng.list_fs(rest, masters_only="L" in f)
    io.out.write(names_text(names))
    return 0, names


def _lastsent(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    snap = eng.lastsent(args[0])
    io.out.write(f"{snap or ''}\n")
    return 0, snap


def _uptodate(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    ok = eng.uptodate(args[0])
    return (0 if ok else 1), ok


def _clear(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "f")
    _need(rest, 1, "filesystem")

    def say(line: str) -> None:
        if not io.printer.quiet:
            print(line, file=io.out)

    say(f"WARNING: Removing all zrep configs and snapshots from {rest[0]}")
    say(f" (for TAG={eng.tag})")
    # zrep always pauses here; with nobody at a terminal to interrupt, zrepq does not.
    if "f" not in f and sys.stdin.isatty():
        say("Continuing in 10 seconds")
        io.out.flush()
        time.sleep(10)
    return 0, eng.clear(rest[0])


def _changeconfig(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "fd")
    _need(rest, 3, "fs host otherfs")
    eng.changeconfig(rest[0], rest[1], rest[2], force="f" in f, dest_side="d" in f)
    return 0, None


def _sentsync(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    _need(rest, 1, "fs@snap")
    eng.sentsync(rest[0], local_only="L" in f)
    return 0, None


def _pause(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "E", valued="r")
    _need(rest, 1, "filesystem")
    return 0, eng.pause(rest[0], reason=f.get("r", ""), expire="E" in f)


def _resume(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    _need(args, 1, "filesystem")
    return 0, eng.resume(args[0])


def _handback(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    f, rest = _flags(args, "L")
    _need(rest, 1, "filesystem")
    return 0, eng.handback(rest[0], local_only="L" in f).to_dict()


def _version(eng: Engine, args: list[str], io: CliIO) -> tuple[int, Any]:
    io.out.write(VERSION + "\n")
    return 0, VERSION


def run() -> NoReturn:
    sys.exit(main())
