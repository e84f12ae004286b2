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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
from celery.result import AsyncResult

from producer.watch import wait
from tasks.contract import ZrepqError

if TYPE_CHECKING:
    from producer.api import Producer

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


class Ctx:
    def __init__(
        self, producer: Producer, host: str | None, wait: bool, as_json: bool, timeout: float | None
    ) -> None:
        self.producer, self.host, self.wait, self.json, self.timeout = (
            producer,
            host,
            wait,
            as_json,
            timeout,
        )

    def finish(
        self,
        results: dict[str, AsyncResult[Any]],
        render: Callable[[Any], str] | None = None,
        *,
        bars: bool = True,
    ) -> None:
        if not self.wait:
            for key, r in results.items():
                click.echo(
                    json.dumps({"target": key, "task_id": r.id})
                    if self.json
                    else f"{key}: queued as {r.id}"
                )
            return
        done = wait(results, timeout=self.timeout, show=bars and not self.json)
        failed = False
        for key, rec in done.items():
            if self.json:
                continue
            if rec.get("ok"):
                text = render(rec["result"]) if render else _default_text(key, rec["result"])
                if text:
                    click.echo(text, nl=not text.endswith("\n"))
            else:
                failed = True
                err = rec.get("error", {})
                click.echo(f"Error: {key}: {err.get('message')}", err=True)
        if self.json:
            click.echo(json.dumps(done, indent=2, default=str))
            failed = any(not rec.get("ok") for rec in done.values())
        sys.exit(1 if failed else 0)


def _default_text(key: str, result: Any) -> str:
    if isinstance(result, dict) and "dest_fs" in result and "status" not in result:
        return (
            f"{key}: initialized {result['snapshot']} -> {result['dest_host']}:"
            f"{result['dest_fs']} ({result['bytes_sent']} bytes)"
        )
    if isinstance(result, dict) and "status" in result:
        snap = result.get("snapshot") or ""
        extra = f" ({result['bytes_sent']} bytes)" if result.get("bytes_sent") else ""
        return f"{key}: {result['status']} {snap}{extra}".rstrip()
    if isinstance(result, dict) and "role" in result:
        return _roles_text(result)
    return "" if result is None else f"{key}: {json.dumps(result, default=str)}"


def _roles_text(result: dict[str, Any]) -> str:
    """failover/takeover: one line per host that changed (or found nothing to do), each
    labelled with its own host and dataset, in the order the halves ran."""
    sides = result.get("sides") or [
        {k: result.get(k) for k in ("host", "dataset", "role", "synced", "message")}
    ]
    out = []
    for side in sides:
        where = f"{side['host']}:{side['dataset']}"
        if side.get("message"):  # nothing changed there, and why ("... already standby")
            out.append(f"{where}: {side['message']}")
        elif side.get("synced"):
            out.append(f"{where}: now {side['role']} (after a final sync of {side['synced']})")
        else:
            out.append(f"{where}: now {side['role']}")
    return "\n".join(out)


def _expire_text(results: Any) -> str:
    """zrep's lines for each fs expired: its own, then the far side's when it is master."""
    out = []
    for r in results if isinstance(results, list) else [results]:
        out.append(f"Expiring zrep snaps on {r['dataset']}")
        if r.get("remote_host"):
            out.append(f"Also running expire on {r['remote_host']}:{r.get('remote_fs')} now...")
            out.append(f"Expiring zrep snaps on {r.get('remote_fs')}")
    return "\n".join(out)


def _summary_text(host: str, result: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.get("counts", {}).items()))
    lines = [
        f"{host}: {counts or 'no master filesystems'}; {result.get('bytes', 0)} bytes "
        f"in {result.get('seconds', 0)} s"
    ]
    for row in result.get("datasets", []):
        tail = row.get("error") or row.get("snapshot") or ""
        lines.append(f"  {row['status']:<9} {row['dataset']:<40} {tail}")
    return "\n".join(lines)


pass_ctx = click.make_pass_decorator(Ctx)


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
    from producer.api import Producer

    ctx.obj = Ctx(Producer(tag=tag or "zrep", default_host=host), host, wait_, as_json, timeout)


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.option("-r", "resume", is_flag=True, default=None)
@click.option("-v", "verbose", is_flag=True, hidden=True)
@click.argument("fs")
@click.argument("dest_host")
@click.argument("dest_fs")
@pass_ctx
def init(
    c: Ctx, force: bool, resume: bool | None, verbose: bool, fs: str, dest_host: str, dest_fs: str
) -> None:
    """init [-f] fs desthost destfs: seed the standby (full send)."""
    c.finish({fs: c.producer.init(fs, dest_host, dest_fs, force=force, resume=resume or None)})


@cli.command()
@click.option("-f", "force", is_flag=True, help="receive with -F")
@click.option("-r", "resume", is_flag=True, help="resumable receive")
@click.option("-c", "changed_only", is_flag=True, help="skip when nothing changed")
@click.option("-q", "quiet", type=int, default=None, help="quietly skip busy fs synced within SECS")
@click.option("-v", "verbose", is_flag=True, hidden=True)
@click.option("--host", "hosts", multiple=True, help="with `all`: only these hosts")
@click.option("--ignore-pause", is_flag=True, help="sync a paused fs anyway")
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def sync(
    c: Ctx,
    force: bool,
    resume: bool,
    changed_only: bool,
    quiet: int | None,
    verbose: bool,
    hosts: Sequence[str],
    ignore_pause: bool,
    targets: Sequence[str],
) -> None:
    """sync [-f] [-r] [-c] [-q SECS] (fs ...|all|fs@snap)."""
    flags: dict[str, Any] = {
        "force": force,
        "resume": resume or None,
        "changed_only": changed_only,
        "quiet_secs": quiet,
    }
    if list(targets) == ["all"]:
        results = c.producer.sync_all(list(hosts) or ([c.host] if c.host else None), **flags)
        c.finish(results, render=None if c.json else _render_summary(results))
        return
    c.finish(_each(c, targets, lambda t: c.producer.sync(t, ignore_pause=ignore_pause, **flags)))


def _each(
    c: Ctx, targets: Sequence[str], send: Callable[[str], AsyncResult[Any]]
) -> dict[str, AsyncResult[Any]]:
    """One task per target; several are sent together (`Producer.batch`: one connection,
    pipelined)."""
    if len(targets) == 1:
        return {targets[0]: send(targets[0])}
    with c.producer.batch():
        return {t: send(t) for t in targets}


def _render_summary(results: dict[str, Any]) -> Callable[[Any], str]:
    def render(result: Any) -> str:
        host = result.get("host", "?") if isinstance(result, dict) else "?"
        return _summary_text(host, result)

    return render


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.option("-r", "resume", is_flag=True)
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def synconly(c: Ctx, force: bool, resume: bool, targets: Sequence[str]) -> None:
    """synconly (fs ...): send the newest existing snapshot."""
    c.finish(
        _each(
            c,
            targets,
            lambda t: c.producer.sync(t, force=force, resume=resume or None, snapshot=False),
        )
    )


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@pass_ctx
def snaponly(c: Ctx, targets: Sequence[str]) -> None:
    """snaponly (fs ...): make the next zrep snapshot only."""
    c.finish(_each(c, targets, c.producer.snaponly), render=lambda r: str(r))


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.option("-r", "resume", is_flag=True)
@click.argument("target")
@pass_ctx
def refresh(c: Ctx, force: bool, resume: bool, target: str) -> None:
    """refresh destfs: pull from the master (runs on the standby's worker)."""
    c.finish({target: c.producer.refresh(target, force=force, resume=resume or None)})


@cli.command()
@click.option("-L", "local_only", is_flag=True)
@click.argument("targets", nargs=-1)
@pass_ctx
def expire(c: Ctx, local_only: bool, targets: Sequence[str]) -> None:
    """expire [-L] [all|fs ...]."""
    if not targets or list(targets) == ["all"]:
        host = c.host or ""
        c.finish(
            {host: c.producer.expire(host=host, all=bool(targets), local_only=local_only)},
            render=_expire_text,
        )
        return
    c.finish(
        _each(c, targets, lambda t: c.producer.expire(t, local_only=local_only)),
        render=_expire_text,
    )


@cli.command()
@click.option("-L", "local_only", is_flag=True)
@click.argument("target")
@click.argument("other_host", required=False)
@pass_ctx
def failover(c: Ctx, local_only: bool, target: str, other_host: str | None) -> None:
    """failover [-L] fs[@snap] [host]: run on the master; hands takeover to the other side."""
    c.finish({target: c.producer.failover(target, local_only=local_only, other_host=other_host)})


@cli.command()
@click.option("-L", "local_only", is_flag=True)
@click.option("-F", "force", is_flag=True, help="with -L: even if the other side claims master")
@click.argument("target")
@click.argument("other_host", required=False)
@pass_ctx
def takeover(c: Ctx, local_only: bool, force: bool, target: str, other_host: str | None) -> None:
    """takeover [-L] fs[@snap] [host]: run on the standby."""
    c.finish(
        {
            target: c.producer.takeover(
                target, local_only=local_only, other_host=other_host, force=force
            )
        }
    )


def _host(c: Ctx) -> str:
    if not c.host:
        raise click.UsageError("which host? give -H HOST (or set ZREPQ_DEFAULT_HOST)")
    return c.host


@cli.command()
@click.option("-v", "verbose", is_flag=True)
@click.option("-a", "all_", is_flag=True)
@click.option("--fleet", is_flag=True, help="every host: running, lag, paused, last failure")
@click.argument("fs", nargs=-1)
@pass_ctx
def status(c: Ctx, verbose: bool, all_: bool, fleet: bool, fs: Sequence[str]) -> None:
    """status [-v] [-a|fs ...] | status --fleet: zrep's status lines, or the fleet view."""
    if fleet:
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
    c.wait = True
    host = _host(c)
    c.finish(
        {host: c.producer.status(host, list(fs), all=all_, verbose=verbose)},
        render=lambda r: r["text"],
        bars=False,
    )


@cli.command(name="list")
@click.option("-v", "verbose", is_flag=True)
@click.option("-L", "masters_only", is_flag=True)
@click.option("-s", "snapshots", is_flag=True)
@click.argument("fs", nargs=-1)
@pass_ctx
def list_(c: Ctx, verbose: bool, masters_only: bool, snapshots: bool, fs: Sequence[str]) -> None:
    """list [-v|-L|-s] [fs ...]."""
    c.wait = True
    host = _host(c)
    c.finish(
        {
            host: c.producer.list(
                host, list(fs), verbose=verbose, masters_only=masters_only, snapshots=snapshots
            )
        },
        render=lambda r: r["text"],
        bars=False,
    )


@cli.command()
@click.argument("target")
@pass_ctx
def lastsent(c: Ctx, target: str) -> None:
    """lastsent fs."""
    c.wait = True
    c.finish({target: c.producer.lastsent(target)}, render=lambda r: f"{r or ''}", bars=False)


@cli.command()
@click.argument("target")
@pass_ctx
def uptodate(c: Ctx, target: str) -> None:
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
def clear(c: Ctx, force: bool, target: str) -> None:
    """clear [-f] fs: remove zrep's snapshots and properties from fs."""
    if not force:
        click.confirm(f"Remove all zrep configs and snapshots from {target}?", abort=True)
    c.finish(
        {target: c.producer.clear(target)},
        render=lambda destroyed: "\n".join(
            [f"Destroying any zrep-related snapshots from {target}"]
            + [f"  destroyed {snap}" for snap in destroyed]
            + [f"Removing zrep-related properties from {target}"]
        ),
    )


@cli.command()
@click.option("-L", "local_only", is_flag=True, help="this side only (the other is gone)")
@click.argument("target")
@pass_ctx
def handback(c: Ctx, local_only: bool, target: str) -> None:
    """handback [-L] fs: give the pair back to zrep (zrepq's holds, properties, partial
    receive removed on both sides; zrep's properties and snapshots kept)."""
    c.finish(
        {target: c.producer.handback(target, local_only=local_only)},
        render=lambda r: _handback_text(target, r),
        bars=False,
    )


def _handback_text(target: str, r: dict[str, Any]) -> str:
    holds, props = len(r["released"]), len(r["properties"])
    done = [
        f"released {holds} hold{'' if holds == 1 else 's'}",
        f"removed {props} zrepq propert{'y' if props == 1 else 'ies'}",
    ]
    if r["aborted"]:
        done.append(f"aborted the partial receive on {', '.join(r['aborted'])}")
    return f"{target}: handed back to zrep ({'; '.join(done)})"


@cli.command()
@click.option("-f", "force", is_flag=True)
@click.option("-d", "dest_side", is_flag=True)
@click.argument("target")
@click.argument("other_host")
@click.argument("other_fs")
@pass_ctx
def changeconfig(
    c: Ctx, force: bool, dest_side: bool, target: str, other_host: str, other_fs: str
) -> None:
    """changeconfig [-f] [-d] fs host otherfs."""
    c.finish(
        {
            target: c.producer.changeconfig(
                target, other_host, other_fs, force=force, dest_side=dest_side
            )
        }
    )


@cli.command()
@click.option("-L", "local_only", is_flag=True)
@click.argument("snapshot")
@pass_ctx
def sentsync(c: Ctx, local_only: bool, snapshot: str) -> None:
    """sentsync [-L] fs@snap: declare the last sent snapshot (recovery)."""
    c.finish({snapshot: c.producer.sentsync(snapshot, local_only=local_only)})


@cli.command()
@click.option("-r", "--reason", default="", help="why (shown by status)")
@click.option("--expire", is_flag=True, help="pause expire too")
@click.argument("target")
@pass_ctx
def pause(c: Ctx, reason: str, expire: bool, target: str) -> None:
    """pause [-r REASON] [--expire] fs: sync all skips it; a direct sync refuses."""
    c.finish(
        {target: c.producer.pause(target, reason=reason, expire=expire)},
        render=lambda r: f"{target}: paused",
        bars=False,
    )


@cli.command(name="resume")
@click.argument("target")
@pass_ctx
def resume_(c: Ctx, target: str) -> None:
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


# ---- operations: schedules, scheduler, metrics, configuration ----------------------------


@cli.group()
def schedule() -> None:
    """Periodic sync/expire, kept in Redis and fired by `zrepq scheduler`."""


@schedule.command("add")
@click.option("--every", default=None, help="interval: 30s, 15m, 6h, 1d")
@click.option("--cron", default=None, help="'MIN HOUR DOM MON DOW' (UTC), e.g. '0 2 * * *'")
@click.option("--host", "host_opt", default=None, help="only this host (default: -H, or all)")
@click.option("--replace", is_flag=True, help="overwrite a schedule of that name")
@click.option("-f", "force", is_flag=True, help="sync: receive with -F")
@click.option("-r", "resume", is_flag=True, help="sync: resumable receive")
@click.option("-c", "changed_only", is_flag=True, help="sync: skip when nothing changed")
@click.option("-q", "quiet", type=int, default=None, help="sync: skip busy fs synced within SECS")
@click.argument("name")
@click.argument("verb", type=click.Choice(["sync", "expire"]))
@click.argument("target", required=False)
@pass_ctx
def schedule_add(
    c: Ctx,
    every: str | None,
    cron: str | None,
    host_opt: str | None,
    replace: bool,
    force: bool,
    resume: bool,
    changed_only: bool,
    quiet: int | None,
    name: str,
    verb: str,
    target: str | None,
) -> None:
    """add NAME (sync|expire) [all|HOST:pool/fs] (--every D | --cron SPEC).

    Without a host (-H/--host) `all` means every registered host, expanded when it fires.
    """
    from producer.api import split_host
    from producer.schedule import add_schedule

    host = host_opt or c.host
    fs = None
    if target and target != "all":
        host, fs = split_host(target, host)
    flags: dict[str, Any] = {}
    if verb == "sync":
        flags = {"force": force, "changed_only": changed_only}
        if resume:
            flags["resume"] = True
        if quiet is not None:
            flags["quiet_secs"] = quiet
        flags = {k: v for k, v in flags.items() if v}
    elif force or resume or changed_only or quiet is not None:
        raise click.UsageError("-f, -r, -c and -q are sync flags")
    d = add_schedule(
        c.producer.app,
        name,
        verb=verb,
        every=every,
        cron=cron,
        host=host,
        fs=fs,
        tag=c.producer.tag,
        flags=flags,
        replace=replace,
    )
    click.echo(json.dumps(d, indent=2) if c.json else f"added {_schedule_line(d)}")


def _schedule_line(d: dict[str, Any]) -> str:
    what = d["what"] + (f" {d['dataset']}" if d.get("dataset") else f" on {d['host']}")
    flags = {k: v for k, v in d["kwargs"].items() if k not in ("host", "fs", "tag") and v}
    extra = " " + " ".join(f"{k}={v}" for k, v in sorted(flags.items())) if flags else ""
    last = d.get("last_run_at") or "never"
    return (
        f"{d['name']:<20} {d['schedule']:<22} {what}{extra}  "
        f"(runs: {d['total_run_count']}, last: {last[:19]})"
    )


@schedule.command("list")
@pass_ctx
def schedule_list(c: Ctx) -> None:
    """list the schedules."""
    from producer.schedule import list_schedules

    rows = list_schedules(c.producer.app)
    if c.json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo("\n".join(_schedule_line(d) for d in rows) or "no schedules")


@schedule.command("remove")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def schedule_remove(c: Ctx, names: Sequence[str]) -> None:
    """remove NAME ...."""
    from producer.schedule import remove_schedule

    missing = [n for n in names if not remove_schedule(c.producer.app, n)]
    for n in names:
        if n not in missing:
            click.echo(f"removed {n}")
    if missing:
        click.echo(f"Error: no schedule named {', '.join(missing)}", err=True)
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def scheduler(extra: Sequence[str]) -> None:
    """scheduler: run the beat that fires schedules (any number may run; one is active)."""
    from producer.settings import load_producer
    from tasks.beat import scheduler_argv

    argv = scheduler_argv(load_producer().model.worker.loglevel, extra)
    os.execv(argv[0], argv)  # noqa: S606 (argv list; no shell wanted)


@cli.command()
@click.option("--address", default=None, help="listen address ([metrics] address)")
@click.option("--port", type=int, default=None, help="listen port ([metrics] port)")
@click.option("--status-interval", type=float, default=None, help="seconds; 0: no polling")
@pass_ctx
def metrics(c: Ctx, address: str | None, port: int | None, status_interval: float | None) -> None:
    """metrics: serve zrepq's Prometheus metrics (/metrics)."""
    import logging

    from producer.metrics import serve
    from producer.settings import settings_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    m = settings_of(c.producer.app).model.metrics
    serve(
        c.producer,
        address or m.address,
        port or m.port,
        m.status_interval if status_interval is None else status_interval,
    )


@cli.command()
@pass_ctx
def config(c: Ctx) -> None:
    """config: check the settings and show them (secrets hidden)."""
    from producer.api import redact
    from producer.settings import settings_of

    cfg = settings_of(c.producer.app)
    shown = cfg.model.model_dump(mode="json")
    shown["broker"]["effective_url"] = redact(cfg.broker_url())
    if c.json:
        click.echo(json.dumps({"file": str(cfg.path) if cfg.path else None, **shown}, indent=2))
        return
    click.echo(f"# configuration OK; file: {cfg.path or '(none; environment only)'}")
    for table, values in shown.items():
        if not values:
            continue
        click.echo(f"[{table}]")
        for k, v in values.items():
            if v is not None and v != [] and v != {}:
                click.echo(f"{k} = {json.dumps(v)}")


@cli.command()
def version() -> None:
    click.echo("zrepq 0.1.0 (zrep 2.0.2 compatible)")


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
