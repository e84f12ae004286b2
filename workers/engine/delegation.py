"""Least privilege: the worker as a dedicated user, with `zfs allow` instead of root.

zrep runs as an unprivileged user with `zfs allow`; so can zrepq's worker, on both sides.
The permissions each side needs (one `zfs allow` line per side, on the pool or the parent of
the replicated datasets; failover swaps the roles, so a pair that fails over needs both on
both sides):

    send side:    zfs allow -u zrepq SEND_SIDE POOL      (`allow_line(SEND_SIDE, POOL)`)
    receive side: zfs allow -u zrepq RECEIVE_SIDE POOL   (`allow_line(RECEIVE_SIDE, POOL)`)

with the permissions below, comma-separated (docs/operations.md has them written out).
Linux lets only root mount: a worker that is not root receives with `-u`
(`ZREPQ_RECV_UNMOUNTED`, on by default when the worker is not root), and a takeover that
cannot mount says so and goes on (mount it as root, or leave it to zfs-mount.service).

When zfs says `permission denied`, the error names the permission the command needs and the
`zfs allow` line that grants it (`hint`): zfs itself names neither.
"""

from __future__ import annotations

from collections.abc import Sequence

SEND_SIDE = (
    "send", "snapshot", "hold", "release", "bookmark", "destroy", "mount", "userprop",
    "rename", "rollback", "readonly",
)  # fmt: skip
RECEIVE_SIDE = (
    "receive", "create", "mount", "rollback", "userprop", "hold", "release", "destroy",
    "rename", "readonly", "load-key",
)  # fmt: skip

# zfs subcommand -> the permissions it checks (OpenZFS's zfs_deleg / zfs_ioctl rules).
_NEEDS: dict[str, tuple[str, ...]] = {
    "send": ("send",),
    "snapshot": ("snapshot",),
    "hold": ("hold",),
    "release": ("release",),
    "bookmark": ("bookmark",),
    "destroy": ("destroy", "mount"),
    "recv": ("receive", "create", "mount"),
    "receive": ("receive", "create", "mount"),
    "rollback": ("rollback",),
    "rename": ("rename", "create", "mount"),
    "create": ("create", "mount"),
    "mount": ("mount",),
    "load-key": ("load-key",),
    "change-key": ("change-key",),
}


def allow_line(perms: Sequence[str], dataset: str, user: str = "zrepq") -> str:
    return f"zfs allow -u {user} {','.join(perms)} {dataset}"


def needs(argv: Sequence[str]) -> tuple[str, ...]:
    """The permissions the zfs command `argv` needs (`set`/`inherit`: the property's own
    name for a native one, `userprop` for a user property like `zrep:sent`)."""
    if len(argv) < 2 or argv[0] != "zfs":
        return ()
    sub = argv[1]
    if sub in ("set", "inherit"):
        props = [a.split("=", 1)[0] for a in argv[2:-1] if not a.startswith("-")]
        return tuple(dict.fromkeys("userprop" if ":" in p else p for p in props))
    return _NEEDS.get(sub, ())


def _target(argv: Sequence[str]) -> str:
    """The pool or dataset to grant on: the command's last dataset argument's filesystem."""
    name = next((a for a in reversed(argv[2:]) if not a.startswith("-") and "/" in a), "")
    return name.split("@", 1)[0].split("#", 1)[0] or "POOL/FS"


def hint(argv: Sequence[str], host: str | None, perms: Sequence[str] | None = None) -> str:
    """What to say after zfs's `permission denied`: the permission (`perms`, else what
    `argv` needs), and the grant."""
    perms = needs(argv) if perms is None else tuple(perms)
    if not perms:
        return ""
    where = f" on {host}" if host else ""
    return (
        f" (the worker's user lacks the zfs permission {'/'.join(perms)} on {_target(argv)}"
        f"{where}; grant it there with `{allow_line(perms, _target(argv))}`, zrepq being the "
        "user the worker runs as or logs in as over ssh; docs/operations.md, Least privilege)"
    )
