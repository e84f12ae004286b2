"""Run every zrepq benchmark, print one table, write docs/benchmarks.md.

    .venv/bin/python -m bench            # full set; rewrites docs/benchmarks.md's results
    .venv/bin/python -m bench --quick    # smaller sizes; prints only
    .venv/bin/python -m bench --only 2,4 # some sections

Run as root from the repository root, after `bash scripts/setup.sh` (which installs what
this needs: redis-server, sshd, zstd, pv, Debian's sanoid for syncoid, zfs-autobackup in
.venv). Section 5 boots two QEMU guests with real OpenZFS (the realzfs tier's cached image,
built on first use). A full run rewrites the part of docs/benchmarks.md between its
`bench:results` markers and keeps the rest; --quick and --smoke print only, unless --output
is given.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import datapath, lease, openzfs, peers, scale, signing, syncall
from bench.common import (
    REPO,
    Row,
    Section,
    fmt_s,
    loadavg,
    machine,
    metered,
    stop_on_sigterm,
    table_markdown,
    table_text,
)

SECTIONS: dict[str, tuple[str, Callable[[str], Section]]] = {
    "1": ("data path throughput", datapath.run),
    "2": ("sync all, zrepq and its peers", syncall.run),
    "3": ("scale", scale.run),
    "4": ("lease latency and enqueue rate", lease.run),
    "5": ("sync all on real OpenZFS", openzfs.run),
    "6": ("signed messages: sign, verify, replay guard", signing.run),
}
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def _interpreter() -> str:
    """This Python as the docs name it: `.venv/bin/python` when it is the repository's own
    virtualenv (what scripts/setup.sh makes), so the command in the docs runs as printed in
    any clone; its absolute path otherwise."""
    exe = Path(sys.executable)
    venv_bin = Path(__file__).resolve().parent.parent / ".venv" / "bin"
    if exe.parent.resolve() == venv_bin.resolve():
        return f".venv/bin/{exe.name}"
    return sys.executable


def render(
    sections: list[Section],
    mode: str,
    command: str,
    started: datetime,
    info: dict[str, str],
    loads: tuple[str, str],
    others: float,
    wall: float,
) -> str:
    rows: list[Row] = [r for s in sections for r in s.rows]
    lines = [
        BEGIN,
        "## Latest results",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, mode `{mode}`, {fmt_s(wall)} in all",
        f"- command: `{command}` (as root, from the repository root)",
        f"- machine: {info.get('cores')} cores ({info.get('cpu', '?')}), "
        f"{info.get('memory', '?')} memory, Linux {info.get('kernel')}, Python "
        f"{info.get('python')}, Celery {info.get('celery', '?')}, redis-server "
        f"{info.get('redis', '?')}, {info.get('openssh', '?')}, zstd {info.get('zstd', '?')}, "
        f"syncoid {info.get('syncoid', '?')}, zfs-autobackup {info.get('zfs-autobackup', '?')}",
        f"- load: the machine is shared; load average {loads[0]} at the start, {loads[1]} at the "
        f"end; other processes used {others:.2f} cores on average while this ran",
        "",
        table_markdown(rows),
        "",
    ]
    for s in sections:
        for t in s.tables:
            lines += [t, ""]
    for s in sections:
        if s.skipped:
            lines.append(f"- section {s.name} skipped: {s.skipped}")
    details = [d for s in sections for d in s.details]
    if details:
        lines += ["### Details", "", *(f"- {d}" for d in details), ""]
    lines.append(END)
    return "\n".join(lines)


SKELETON = f"""# Benchmarks

zrepq against what people run today, in the same run, as ratios (the machine is shared and
noisy; absolute numbers move, ratios much less). See `bench/` for what each section does.

```sh
.venv/bin/python -m bench            # full set, rewrites the results below
.venv/bin/python -m bench --quick    # smaller sizes, prints only
```

{BEGIN}
{END}
"""


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else SKELETON
    if BEGIN not in text or END not in text:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: does everything run?")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. 1,4")
    ap.add_argument(
        "--output",
        type=Path,
        help="write the results here (default for a full run: docs/benchmarks.md)",
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    stop_on_sigterm()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    output = args.output or (DOC if mode == "full" and not args.no_write else None)
    raw = sys.argv[1:] if argv is None else argv
    command = shlex.join([_interpreter(), "-m", "bench", *raw])

    started = datetime.now(UTC)
    info = {**machine(), **peers.versions()}
    load0 = loadavg()
    print(
        f"zrepq benchmarks, mode {mode}: {info.get('cores')} cores, {info.get('memory')}, "
        f"load average {load0}",
        flush=True,
    )
    sections: list[Section] = []
    t0 = time.monotonic()
    with metered() as total:
        for key in wanted:
            title, run = SECTIONS[key]
            print(f"\n== {key}. {title}", flush=True)
            t = time.monotonic()
            try:
                sec = run(mode)
            except Exception as exc:  # one broken section must not lose the others
                traceback.print_exc()
                sec = Section(key)
                sec.row(f"{title}: FAILED", f"{type(exc).__name__}: {exc}"[:200], ok=False)
            sec.seconds = time.monotonic() - t
            print(f"   ({fmt_s(sec.seconds)})", flush=True)
            sections.append(sec)
    wall = time.monotonic() - t0
    load1 = loadavg()
    rows = [r for s in sections for r in s.rows]
    print("\n" + table_text(rows))
    for s in sections:
        for t in s.tables:
            print("\n" + t)
    for s in sections:
        if s.skipped:
            print(f"section {s.name} skipped: {s.skipped}")
    print(
        f"\n{fmt_s(wall)} in all; load average {load0} -> {load1}; other processes used "
        f"{total.others_cores:.2f} cores on average"
    )
    if output is not None:
        block = render(
            sections, mode, command, started, info, (load0, load1), total.others_cores, wall
        )
        write_doc(output, block)
        print(f"wrote {output}")
    failed = any(r.what.endswith("FAILED") for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
