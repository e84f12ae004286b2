"""zrep's text output formats, byte for byte, for the scripts that parse them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .results import StatusRow


def _date(seconds: int, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(seconds))


def status_line(
    row: StatusRow,
    *,
    verbose: bool = False,
    all_fs: bool = False,
    dateformat: str = "%Y/%m/%d-%H:%M:%S",
) -> str:
    """One line of `zrep status` (`%-52s last: DATE`) or `status -v` (`%-25s->%-35s VDATE`).

    zrep's -v date is the full date with its last `:field` cut off (minutes, not seconds, with
    the default format); a never-synced fs prints `[NEVER]` plainly and an empty -v date.
    """
    if row.last_sent is None or row.last_sent_time is None:
        date, vdate = "[NEVER]", ""
    else:
        date = _date(row.last_sent_time, dateformat)
        vdate = date.rsplit(":", 1)[0] if ":" in date else date
    src = row.src_fs if (all_fs and verbose) else row.dataset
    if verbose:
        return f"{src:<25}->{row.dest_host + ':' + row.dest_fs:<35} {vdate}"
    return f"{src:<52} last: {date}"


def status_details(row: StatusRow, dateformat: str = "%Y/%m/%d-%H:%M:%S") -> list[str]:
    """zrepq's extra facts for `status -v`, as indented lines under zrep's own line."""
    lines = [f"    last sent: {row.last_sent or '[NEVER]'}  savecount: {row.savecount or '-'}"]
    if row.standby_keystatus not in (None, "-"):
        lines.append(
            f"    standby {row.dest_host}:{row.dest_fs} keystatus: {row.standby_keystatus}"
        )
    if row.paused:
        p = row.paused
        since = _date(p["since"], dateformat) if p.get("since") else "?"
        what = "sync and expire" if p.get("expire") else "sync"
        why = f": {p['reason']}" if p.get("reason") else ""
        lines.append(f"    PAUSED ({what}) since {since} by {p.get('by') or '?'}{why}")
    if row.error:
        e = row.error
        when = _date(e["time"], dateformat) if e.get("time") else "?"
        lines.append(
            f"    ERROR: last sync failed at {when}"
            f"{' sending ' + e['snapshot'] if e.get('snapshot') else ''}: {e['message']}"
        )
    if row.rolled_back:
        r = row.rolled_back
        when = _date(r["time"], dateformat) if r.get("time") else "?"
        lines.append(f"    rolled back on purpose to {r['snapshot']} at {when} (not an error)")
    if row.from_bookmark:
        b = row.from_bookmark
        when = _date(b["time"], dateformat) if b.get("time") else "?"
        lines.append(
            f"    synced from bookmark {b['bookmark']} at {when} (its base snapshot was gone)"
        )
    return lines


def status_text(rows: Iterable[StatusRow], *, verbose: bool = False, **kw: Any) -> str:
    """zrep's lines; with -v, zrepq's extra facts follow each line, indented."""
    out = []
    for r in rows:
        out.append(status_line(r, verbose=verbose, **kw) + "\n")
        if verbose:
            fmt = kw.get("dateformat", "%Y/%m/%d-%H:%M:%S")
            out.extend(line + "\n" for line in status_details(r, fmt))
    return "".join(out)


def list_verbose_text(entries: Sequence[dict[str, Any]], *, blank_between: bool) -> str:
    """`zrep list -v`: `fs:`, tab-separated properties, `last snapshot synced: SNAP`."""
    out = []
    for e in entries:
        out.append(f"{e['dataset']}:\n")
        out.extend(f"{k}\t{v}\n" for k, v in e["properties"])
        out.append(f"last snapshot synced: {e['last_sent'] or ''}\n")
        if blank_between:
            out.append("\n")
    return "".join(out)


def names_text(names: Iterable[str]) -> str:
    return "".join(f"{n}\n" for n in names)
