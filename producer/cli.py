"""`zrepq`: zrep's verbs and flags, enqueued to the storage hosts' workers.

    zrepq -S hosta:pool/fs --wait          sync one fs (zrep -S), show progress, exit status
    zrepq sync all [--host H ...] --wait   every master fs of every (or the named) host
    zrepq -i pool/fs hostb poolb/fs -H hosta
    zrepq status -H hosta [-v] [-a]        zrep's own text; --json for machine output
    zrepq status --fleet                   every host: what runs, how far behind, what failed
    zrepq schedule add|list|remove         periodic sync/expire (redbeat, kept in Redis)
    zrepq scheduler | metrics | config     run the scheduler, the exporter; check settings

A target is `HOST:pool/fs`, or `pool/fs` with `--host` (or ZREPQ_DEFAULT_HOST). Without
`--wait` the task id is printed and the command returns at once.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from producer import ops_cli
from producer.render import clear_text, expire_text, handback_text, summary_text
from producer.session import Ctx
from producer.watch import wait
from tasks.contract import ZrepqError

if TYPE_CHECKING:
    pass

EX_CONFIG = 78

ALIASES = {
    "-S": "sync",
    "-i": "init",
    "-s": "status",
    "-l": "list",
    "-e": "expire",
    "-C": "changeconfig",
    "getlastsent": "lastsent",
}


pass_ctx = click.make_pass_decorator(Ctx)

# zrep's flags, named as the task fields they set (`tasks.contract`): a command passes them on.
FORCE = click.option("-f", "force", is_flag=True, help="receive with -F")
# Not given: None, the worker's setting (ZREP_RESUME: on unless switched off).
RESUME = click.option("-r", "resume", is_flag=True, default=None, help="resumable receive")
LOCAL_ONLY = click.option("-L", "local_only", is_flag=True, help="this side only")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-t", "tag", default=None, envvar="ZREPTAG", help="replication tag (zrep -t)")
@click.option(
    "-H",
    "--host",
    default=None,
    envvar="ZREPQ_DEFAULT_HOST",
    help="host whose worker runs the task (or write HOST:pool/fs)",
)
@click.option("-w", "--wait", "wait_", is_flag=True, help="wait, show progress, exit with status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--timeout", type=float, default=None, help="give up waiting after SECONDS")
@click.pass_context
def cli(
    ctx: click.Context,
    tag: str | None,
    host: str | None,
    wait_: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    """zrep-style ZFS replication through a queue: zrep's verbs, run by each host's worker."""
    # Imported here, not at the top: importing the app reads the configuration, and a bad
    # setting must become a message naming it (see `main`), not a traceback.
    if ctx.invoked_subcommand in ops_cli.STANDALONE:
        return  # `keygen` writes the key a configuration may name before it exists
    from producer.api import Producer

    ctx.obj = Ctx(Producer(tag=tag or "zrep", default_host=host), host, wait_, as_json, timeout)


@cli.command()
@FORCE
@RESUME
@click.option("-v", "verbose", is_flag=True, hidden=True)
@click.argument("fs")
@click.argument("dest_host")
@click.argument("dest_fs")
@pass_ctx
def init(c: Ctx, /, verbose: bool, fs: str, dest_host: str, dest_fs: str, **fields: Any) -> None:
    """init [-f] fs desthost destfs: seed the standby (full send)."""
    c.finish({fs: c.producer.init(fs, dest_host, dest_fs, **fields)})


@cli.command()
@FORCE
@RESUME
@click.option("-c", "changed_only", is_flag=True, help="skip when nothing changed")
@click.option("-q", "quiet_secs", type=int, help="quietly skip busy fs synced within SECS")
@click.option("-v", "verbose", is_flag=True, hidden=True)
@click.option("--host", "hosts", multiple=True, help="with `all`: only these hosts")
@click.option("--ignore-pause", is_flag=True, help="sync a paused fs anyway")
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def sync(
    c: Ctx,
    /,
    verbose: bool,
    hosts: Sequence[str],
    ignore_pause: bool,
    targets: Sequence[str],
    **fields: Any,
) -> None:
    """sync [-f] [-r] [-c] [-q SECS] (fs ...|all|fs@snap)."""
    if list(targets) == ["all"]:
        results = c.producer.sync_all(list(hosts) or ([c.host] if c.host else None), **fields)
        c.finish(results, render=None if c.json else _summary)
        return
    send = lambda t: c.producer.sync(t, ignore_pause=ignore_pause, **fields)  # noqa: E731
    c.finish(c.each(targets, send))


def _summary(result: Any) -> str:
    host = result.get("host", "?") if isinstance(result, dict) else "?"
    return summary_text(host, result)


@cli.command()
@FORCE
@RESUME
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def synconly(c: Ctx, /, targets: Sequence[str], **fields: Any) -> None:
    """synconly (fs ...): send the newest existing snapshot."""
    c.finish(c.each(targets, lambda t: c.producer.synconly(t, **fields)))


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def snaponly(c: Ctx, /, targets: Sequence[str]) -> None:
    """snaponly (fs ...): make the next zrep snapshot only."""
    c.finish(c.each(targets, c.producer.snaponly), render=lambda r: str(r))


@cli.command()
@FORCE
@RESUME
@click.argument("target")
@pass_ctx
def refresh(c: Ctx, /, target: str, **fields: Any) -> None:
    """refresh destfs: pull from the master (runs on the standby's worker)."""
    c.finish({target: c.producer.refresh(target, **fields)})


@cli.command()
@LOCAL_ONLY
@click.argument("targets", nargs=-1)
@pass_ctx
def expire(c: Ctx, /, local_only: bool, targets: Sequence[str]) -> None:
    """expire [-L] [all|fs ...]."""
    if not targets or list(targets) == ["all"]:
        host = c.host or ""
        sent = c.producer.expire(host=host, all=bool(targets), local_only=local_only)
        c.finish({host: sent}, render=expire_text)
        return
    sent_each = c.each(targets, lambda t: c.producer.expire(t, local_only=local_only))
    c.finish(sent_each, render=expire_text)


@cli.command()
@LOCAL_ONLY
@click.argument("target")
@click.argument("other_host", required=False)
@pass_ctx
def failover(c: Ctx, /, target: str, **fields: Any) -> None:
    """failover [-L] fs[@snap] [host]: run on the master; hands takeover to the other side."""
    c.finish({target: c.producer.failover(target, **fields)})


@cli.command()
@LOCAL_ONLY
@click.option("-F", "force", is_flag=True, help="with -L: even if the other side claims master")
@click.argument("target")
@click.argument("other_host", required=False)
@pass_ctx
def takeover(c: Ctx, /, target: str, **fields: Any) -> None:
    """takeover [-L] fs[@snap] [host]: run on the standby."""
    c.finish({target: c.producer.takeover(target, **fields)})


@cli.command()
@click.option("-v", "verbose", is_flag=True)
@click.option("-a", "all", is_flag=True)
@click.option("--fleet", is_flag=True, help="every host: running, lag, paused, last failure")
@click.argument("fs", nargs=-1)
@pass_ctx
def status(c: Ctx, /, fleet: bool, fs: Sequence[str], **fields: Any) -> None:
    """status [-v] [-a|fs ...] | status --fleet: zrep's status lines, or the fleet view."""
    if fleet:
        _fleet(c)
    c.wait = True
    host = c.need_host()
    sent = c.producer.status(host, list(fs), **fields)
    c.finish({host: sent}, render=lambda r: r["text"], bars=False)


def _fleet(c: Ctx) -> None:
    from producer.fleet import fleet_status, fleet_text
    from producer.settings import settings_of

    data = fleet_status(c.producer, timeout=c.timeout or 30.0, tag=c.producer.tag)
    if c.json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(fleet_text(data, settings_of(c.producer.app).model.flower.url))
    bad = any(d["state"] == "failed" for d in data["datasets"]) or any(
        not h["alive"] for h in data["hosts"].values()
    )
    sys.exit(1 if bad else 0)


@cli.command(name="list")
@click.option("-v", "verbose", is_flag=True)
@click.option("-L", "masters_only", is_flag=True)
@click.option("-s", "snapshots", is_flag=True)
@click.argument("fs", nargs=-1)
@pass_ctx
def list_(c: Ctx, /, fs: Sequence[str], **fields: Any) -> None:
    """list [-v|-L|-s] [fs ...]."""
    c.wait = True
    host = c.need_host()
    sent = c.producer.list(host, list(fs), **fields)
    c.finish({host: sent}, render=lambda r: r["text"], bars=False)


@cli.command()
@click.argument("target")
@pass_ctx
def lastsent(c: Ctx, /, target: str) -> None:
    """lastsent fs."""
    c.wait = True
    c.finish({target: c.producer.lastsent(target)}, render=lambda r: f"{r or ''}", bars=False)


@cli.command()
@click.argument("target")
@pass_ctx
def uptodate(c: Ctx, /, target: str) -> None:
    """uptodate fs: exit 0 when nothing was written since the last snapshot."""
    done = wait({target: c.producer.uptodate(target)}, timeout=c.timeout, show=False)
    rec = done[target]
    if not rec.get("ok"):  # not "written since": it could not tell, and says why
        click.echo(f"Error: {target}: {rec.get('error', {}).get('message')}", err=True)
    sys.exit(0 if rec.get("ok") and rec.get("result") else 1)


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.argument("target")
@pass_ctx
def clear(c: Ctx, /, force: bool, target: str) -> None:
    """clear [-f] fs: remove zrep's snapshots and properties from fs."""
    if not force:
        click.confirm(f"Remove all zrep configs and snapshots from {target}?", abort=True)
    c.finish({target: c.producer.clear(target)}, render=lambda r: clear_text(target, r))


@cli.command()
@click.option("-L", "local_only", is_flag=True, help="this side only (the other is gone)")
@click.argument("target")
@pass_ctx
def handback(c: Ctx, /, target: str, **fields: Any) -> None:
    """handback [-L] fs: give the pair back to zrep (zrepq's holds, properties, partial
    receive removed on both sides; zrep's properties and snapshots kept)."""
    sent = c.producer.handback(target, **fields)
    c.finish({target: sent}, render=lambda r: handback_text(target, r), bars=False)


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.option("-d", "dest_side", is_flag=True)
@click.argument("target")
@click.argument("other_host")
@click.argument("other_fs")
@pass_ctx
def changeconfig(c: Ctx, /, target: str, other_host: str, other_fs: str, **fields: Any) -> None:
    """changeconfig [-f] [-d] fs host otherfs."""
    c.finish({target: c.producer.changeconfig(target, other_host, other_fs, **fields)})


@cli.command()
@LOCAL_ONLY
@click.argument("snapshot")
@pass_ctx
def sentsync(c: Ctx, /, snapshot: str, **fields: Any) -> None:
    """sentsync [-L] fs@snap: declare the last sent snapshot (recovery)."""
    c.finish({snapshot: c.producer.sentsync(snapshot, **fields)})


@cli.command()
@click.option("-r", "--reason", default="", help="why (shown by status)")
@click.option("--expire", is_flag=True, help="pause expire too")
@click.argument("target")
@pass_ctx
def pause(c: Ctx, /, target: str, **fields: Any) -> None:
    """pause [-r REASON] [--expire] fs: sync all skips it; a direct sync refuses."""
    sent = c.producer.pause(target, **fields)
    c.finish({target: sent}, render=lambda r: f"{target}: paused", bars=False)


@cli.command(name="resume")
@click.argument("target")
@pass_ctx
def resume_(c: Ctx, /, target: str) -> None:
    """resume fs: undo pause."""
    c.finish(
        {target: c.producer.resume(target)},
        render=lambda r: f"{target}: {'resumed' if r else 'was not paused'}",
        bars=False,
    )


@cli.command()
@pass_ctx
def hosts(c: Ctx) -> None:
    """hosts: the storage hosts whose workers have registered."""
    known = c.producer.hosts()
    click.echo(json.dumps(known, indent=2) if c.json else "\n".join(sorted(known)))


@cli.command()
def version() -> None:
    click.echo("zrepq 0.1.0 (zrep 2.0.2 compatible)")


for _command in ops_cli.COMMANDS:
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # --wait / --json / --timeout may come anywhere (zrep users put flags after the verb).
    hoisted: list[str] = []
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("-w", "--wait", "--json"):
            hoisted.append(a)
        elif a == "--timeout":
            hoisted += [a, next(it, "")]
        else:
            rest.append(a)
    args = hoisted + rest
    # zrep's short verbs (-S, -i, -s, ...) are commands here; map them before click parses.
    for i, a in enumerate(args):
        if a in ALIASES:
            args[i] = ALIASES[a]
            break
        if a in cli.commands:
            break
    try:
        cli.main(args=args, prog_name="zrepq", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ZrepqError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(EX_CONFIG if e.kind == "config" else 1)
    except (OSError, ValueError) as e:
        # From kombu/redis below us (a malformed broker URL, a refused connection): a message
        # an admin can act on, not a traceback. ZREPQ_DEBUG=1 shows the traceback.
        if os.environ.get("ZREPQ_DEBUG"):
            raise
        click.echo(f"Error: {type(e).__name__}: {e} (broker {_broker_hint()})", err=True)
        sys.exit(1)


def _broker_hint() -> str:
    from producer.api import redact

    return redact(os.environ.get("ZREPQ_BROKER_URL", "(from the configuration file)"))


if __name__ == "__main__":
    main()
