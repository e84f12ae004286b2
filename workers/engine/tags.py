"""Several standbys per dataset: every zrep tag configured on this host's datasets.

zrep replicates one dataset to several places only with a tag per destination (`-t TAG` /
`ZREPTAG`: properties `TAG:master`, `TAG:src-host`..., snapshots `TAG_NNNNNN`), and its
`sync all` serves one tag. zrepq's `sync all` and `status --fleet` find every tag this host
is master for, from the properties themselves, in one `zfs get` for the whole host. Each
pair is then its own: its savecount (`TAG:savecount`), its hold (`zrepq:TAG:lastsent`), its
cursor bookmark (`fs#zrepq_TAG_NNNNNN`), its lease (`zrepq:lock:TAG:HOST:FS`); one tag's
expire looks only at `TAG_` snapshots, so it never touches another tag's snapshots or base.

A dataset with the default tag `zrep` and others: zrep's `-I` from `zrep_` to `zrep_` would
carry the other tags' snapshots in between to the `zrep` standby; give every standby its own
tag (a tag other than `zrep` sends with `-i`, as in zrep), or set ZREP_INC_FLAG=-i.
"""

from __future__ import annotations

from .context import Context
from .errors import ValidationError
from .names import validate_tag


def masters_by_tag(ctx: Context) -> list[tuple[str, str]]:
    """(tag, fs) for every pair this host is master of, under any tag, sorted."""
    argv = ("zfs", "get", "-H", "-t", "filesystem,volume", "-s", "local",
            "-o", "name,property,value", "all")  # fmt: skip
    props: dict[str, dict[str, str]] = {}
    for line in ctx.local.run(argv).stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and ":" in parts[1]:
            props.setdefault(parts[0], {})[parts[1]] = parts[2]
    out = []
    for fs, p in props.items():
        for prop, value in p.items():
            tag, _, key = prop.rpartition(":")
            if key != "master" or value != "yes" or tag.startswith("zrepq:"):
                continue
            try:
                validate_tag(tag)
            except ValidationError:
                continue
            if p.get(f"{tag}:src-host") == ctx.host and p.get(f"{tag}:dest-fs"):
                out.append((tag, fs))
    return sorted(out)


def tags(ctx: Context) -> list[str]:
    """Every tag this host is master for (the context's own first, even with none)."""
    found = {t for t, _ in masters_by_tag(ctx)}
    return [ctx.tag, *sorted(found - {ctx.tag})]
