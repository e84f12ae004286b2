"""Encrypted datasets stay encrypted (issue 15, point 2).

A source with `encryption` on is sent raw (`zfs send -w`): the standby receives the
ciphertext and holds no key (`keystatus=unavailable`, `keylocation=prompt`), so a standby
host that is stolen, or run by someone else, reads nothing. Its raw incrementals need the
same IV set on the base, which raw sends keep.

Sending the plaintext instead (the standby then holds the data unencrypted, or encrypted
under its own parent's key) is asked for explicitly: `ZREPQ_DECRYPT=yes`. Without it, a sync
of an encrypted source into a standby that is *not* encrypted (a pair set up before, or by
hand) is refused, saying why and how, rather than sending plaintext on and on.

Takeover of a raw-received standby: its key is not loaded; `takeover` checks with
`zfs load-key -n` that it can be (keylocation a readable file with the right key) before it
makes anything writable, loads it, and otherwise refuses with the runbook's first step
(docs/operations.md, "Encrypted datasets").

Cost: none per sync. `encryption` and `keystatus` are read in the `zfs get` that reads each
side's zrep properties already.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import commands as cmd
from .context import Context
from .errors import CommandError, StateError, ZrepqError
from .model import DatasetInfo
from .zfs import ZfsHost

RAW_FLAGS = ("-w", "--raw")


def encrypted(info: DatasetInfo) -> bool:
    return info.get("encryption") not in (None, "off")


def raw(ctx: Context, src: DatasetInfo) -> bool:
    """Send raw? For an encrypted source unless ZREPQ_DECRYPT asks for the plaintext."""
    return encrypted(src) and not ctx.config.decrypt


def send_args(ctx: Context, src: DatasetInfo, args: Sequence[str]) -> list[str]:
    """`args` with `-w` first when the send must be raw (once, if ZREP_SEND_FLAGS has it);
    a decrypted send of an encrypted dataset without `-p` (zfs refuses properties then)."""
    out = list(args)
    if raw(ctx, src):
        if not any(f in RAW_FLAGS for f in out):
            out.insert(0, "-w")
    elif encrypted(src):
        out = [a for a in out if a not in RAW_FLAGS and a not in ("-p", "--props")]
    return out


def check_destination(ctx: Context, src: DatasetInfo, dst_host: str, dst: DatasetInfo) -> None:
    """Refuse a sync that would carry an encrypted dataset's data into an unencrypted
    standby, unless ZREPQ_DECRYPT says so."""
    if not encrypted(src) or encrypted(dst) or ctx.config.decrypt:
        return
    raise StateError(
        f"{src.name} is encrypted but its standby {dst_host}:{dst.name} is not: a raw send "
        "(zfs send -w, the default for an encrypted source) cannot go into it, and sending "
        "the data decrypted would store it unencrypted there. Re-initialize the standby "
        "(zrep clear, destroy it, init) to keep it encrypted, or set ZREPQ_DECRYPT=yes to "
        "send the plaintext on purpose",
        dataset=src.name,
        host=dst_host,
    )


def ensure_key(ctx: Context, zh: ZfsHost, info: DatasetInfo) -> None:
    """Before a takeover makes `info` writable: its key must be loadable (and is loaded)."""
    if not encrypted(info) or info.get("keystatus") == "available":
        return
    fs = info.name
    try:
        zh.run(("zfs", "load-key", "-n", fs))
    except CommandError as e:
        raise StateError(
            f"cannot take over {fs}: it is encrypted and its key cannot be loaded "
            f"({e.stderr.strip() or e.message}). Load it first, e.g. "
            f"`zfs load-key -L file:///path/to/key {fs}` and "
            f"`zfs set keylocation=file:///path/to/key {fs}` (docs/operations.md, "
            "Encrypted datasets), then take over again; nothing was changed",
            dataset=fs,
            host=zh.host,
        ) from None
    zh.run(("zfs", "load-key", fs))
    ctx.say(f"loaded the key of {zh.host}:{fs}", fs, level="notice")


def standby_keys(ctx: Context, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`status -v`: each standby's `keystatus` ("available", "unavailable", "-" when it is
    not encrypted, or why it could not be read), for (host, fs) pairs: one `zfs get` per
    standby host."""
    by_host: dict[str, list[str]] = {}
    for host, fs in pairs:
        by_host.setdefault(host, []).append(fs)
    out: dict[tuple[str, str], str] = {}
    for host, names in by_host.items():
        argv = cmd.get(["keystatus"], *names, fields="name,value")
        try:
            res = ctx.zfs(host).run(argv, check=False)
        except ZrepqError as e:
            out.update({(host, fs): f"unknown ({e.message.splitlines()[0]})" for fs in names})
            continue
        got = dict(line.split("\t", 1) for line in res.stdout.splitlines() if "\t" in line)
        out.update({(host, fs): got.get(fs, "unknown (no such dataset)") for fs in names})
    return out


def carry_pair_props(
    ctx: Context, src: DatasetInfo, dst: ZfsHost, dst_fs: str, props: dict[str, str]
) -> None:
    """A decrypted init sends without `-p` (zfs refuses properties of an encrypted dataset
    in a non-raw stream): set the pair's properties on the standby as `-p` would have."""
    if encrypted(src) and not raw(ctx, src):
        dst.set(dst_fs, props)
