"""`zrepq`'s operations commands: schedules, the scheduler, Flower, the metrics exporter,
config.

Registered on the `zrepq` group by `producer/cli.py` (`COMMANDS`); they get its `Ctx`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from producer.render import schedule_line

if TYPE_CHECKING:
    from producer.session import Ctx


@click.group()
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
@click.pass_obj
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
    click.echo(json.dumps(d, indent=2) if c.json else f"added {schedule_line(d)}")


@schedule.command("list")
@click.pass_obj
def schedule_list(c: Ctx) -> None:
    """list the schedules."""
    from producer.schedule import list_schedules

    rows = list_schedules(c.producer.app)
    if c.json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo("\n".join(schedule_line(d) for d in rows) or "no schedules")


@schedule.command("remove")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
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


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def scheduler(extra: Sequence[str]) -> None:
    """scheduler: run the beat that fires schedules (any number may run; one is active)."""
    from producer.settings import load_producer
    from tasks.beat import scheduler_argv

    argv = scheduler_argv(load_producer().model.worker.loglevel, extra)
    os.execv(argv[0], argv)  # noqa: S606 (argv list; no shell wanted)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def flower(extra: Sequence[str]) -> None:
    """flower: run Flower on zrepq's app, with [flower] username/password as its basic auth."""
    from producer.flower import flower_command
    from producer.settings import load_producer

    argv, env = flower_command(load_producer(), extra, os.environ)
    os.execve(argv[0], argv, env)  # noqa: S606 (argv list; no shell wanted)


@click.command()
@click.option("--address", default=None, help="listen address ([metrics] address)")
@click.option("--port", type=int, default=None, help="listen port ([metrics] port)")
@click.option("--status-interval", type=float, default=None, help="seconds; 0: no polling")
@click.pass_obj
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


@click.command()
@click.pass_obj
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


@click.command()
@click.option(
    "--dir",
    "directory",
    default="/etc/zrepq/keys",
    show_default=True,
    help="where NAME.key and NAME.pub are written",
)
@click.argument("name")
def keygen(directory: str, name: str) -> None:
    """keygen NAME: an Ed25519 key pair for signing task messages as identity NAME.

    NAME.key (0600) stays with the producer ([signing] key); NAME.pub goes into the
    trusted directory of every worker that should accept NAME ([signing] trusted)."""
    from pathlib import Path

    from tasks.contract import KeyFileError, generate_keys

    try:
        private, public = generate_keys(name, Path(directory))
    except KeyFileError as e:
        click.echo(f"zrepq keygen: {e}", err=True)
        sys.exit(1)
    click.echo(f"private key {private} (keep it on the producer: ZREPQ_SIGNING_KEY={private})")
    click.echo(f"public key  {public} (copy it into each worker's [signing] trusted directory)")


# Commands that need no settings (the group builds no producer for them).
STANDALONE = ("keygen",)

COMMANDS = (schedule, scheduler, flower, metrics, config, keygen)
