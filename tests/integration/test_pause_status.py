"""Pause/resume per dataset, the error flag, and a deliberate rollback that is not an error."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from tests.harness.fleet import Fleet, Site
from workers.cli import main as zrepq_local
from workers.engine import run
from workers.engine.errors import Conflict
from workers.engine.pause import Paused
from workers.engine.requests import (
    ExpireRequest,
    InitRequest,
    PauseRequest,
    ResumeRequest,
    RollbackRequest,
    StatusRequest,
    SyncRequest,
)


@pytest.fixture
def pair(fleet: Callable[..., Fleet]) -> tuple[Fleet, Site, Site]:
    f = fleet("hosta", "hostb")
    a, b = f["hosta"], f["hostb"]
    for leaf in ("prod", "other"):
        a.zfs.zfs("create", a.fs(leaf))
        a.zfs.write(a.fs(leaf), "f.txt", b"v1\n")
        run(f.context("hosta"), InitRequest(fs=a.fs(leaf), dest_host="hostb", dest_fs=b.fs(leaf)))
    return f, a, b


def q(site: Site, name: str, ds: str) -> str:
    return site.zfs.get(f"zrepq:zrep:{name}", ds)


def test_paused_dataset_refuses_direct_sync_unless_forced_and_resumes(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, _b = pair
    ctx = f.context("hosta")
    src = a.fs("prod")
    run(ctx, PauseRequest(fs=src, reason="disk swap on hostb", by="ops@hosta"))
    # The state is on the dataset itself, visible with plain `zfs get`.
    assert q(a, "paused-reason", src) == "disk swap on hostb"
    assert q(a, "paused-by", src) == "ops@hosta"
    assert int(q(a, "paused", src)) > 0
    with pytest.raises(Paused, match=r"paused since .* by ops@hosta \(disk swap on hostb\)"):
        run(ctx, SyncRequest(fs=src))
    assert a.zfs.snapshots(src) == [f"{src}@zrep_000000"]  # nothing happened
    assert run(ctx, SyncRequest(fs=src, ignore_pause=True)).status == "synced"
    assert run(ctx, ResumeRequest(fs=src)) is True
    assert q(a, "paused", src) == "-"
    assert run(ctx, ResumeRequest(fs=src)) is False
    assert run(ctx, SyncRequest(fs=src)).status == "synced"


def test_expire_keeps_working_unless_paused_for_it_too(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    ctx = f.context("hosta")
    src = a.fs("prod")
    run(ctx, PauseRequest(fs=src))
    assert run(ctx, ExpireRequest(fs=src)).dataset == src
    run(ctx, PauseRequest(fs=src, expire=True))
    with pytest.raises(Paused):
        run(ctx, ExpireRequest(fs=src))


def test_sync_all_cli_skips_paused_and_reports_it(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    ctx = f.context("hosta")
    run(ctx, PauseRequest(fs=a.fs("other"), reason="migration"))
    out, err = io.StringIO(), io.StringIO()
    code = zrepq_local(["--json", "sync", "all"], context=f.context("hosta"), out=out, err=err)
    assert code == 0
    assert '"status": "paused"' in out.getvalue() and '"status": "synced"' in out.getvalue()


def test_error_flag_is_raised_by_a_failed_sync_and_cleared_by_the_next_good_one(
    pair: tuple[Fleet, Site, Site],
) -> None:
    f, a, b = pair
    ctx = f.context("hosta")
    src = a.fs("prod")
    b.zfs.zfs("snapshot", f"{b.fs('prod')}@stray")
    with pytest.raises(Conflict):
        run(ctx, SyncRequest(fs=src))
    assert "diverged" in q(a, "last-error", src)
    row = next(r for r in run(ctx, StatusRequest(fs=[src])) if r.dataset == src)
    assert row.error is not None and "diverged" in row.error["message"]
    assert row.rolled_back is None
    out, err = io.StringIO(), io.StringIO()
    zrepq_local(["status", "-v", src], context=f.context("hosta"), out=out, err=err)
    assert "ERROR: last sync failed at" in err.getvalue()  # zrepq's extras: stderr
    assert out.getvalue().count("\n") == 1  # zrep's one line on stdout
    b.zfs.zfs("destroy", f"{b.fs('prod')}@stray")
    assert run(ctx, SyncRequest(fs=src)).status == "synced"
    assert q(a, "last-error", src) == "-"
    assert run(ctx, StatusRequest(fs=[src]))[0].error is None


def test_deliberate_rollback_is_shown_but_not_as_an_error(pair: tuple[Fleet, Site, Site]) -> None:
    f, a, _b = pair
    ctx = f.context("hosta")
    src = a.fs("prod")
    a.zfs.write(src, "f.txt", b"v2\n")
    run(ctx, SyncRequest(fs=src))
    run(ctx, RollbackRequest(snapshot=f"{src}@zrep_000000"))
    row = run(ctx, StatusRequest(fs=[src]))[0]
    assert row.error is None
    assert row.rolled_back is not None and row.rolled_back["snapshot"] == f"{src}@zrep_000000"
    out, err = io.StringIO(), io.StringIO()
    zrepq_local(["status", "-v", src], context=f.context("hosta"), out=out, err=err)
    text = err.getvalue()
    assert "rolled back on purpose" in text and "ERROR" not in text
    assert out.getvalue().count("\n") == 1
    # zrep's plain status line is unchanged by any of this.
    out = io.StringIO()
    zrepq_local(["status", src], context=f.context("hosta"), out=out, err=io.StringIO())
    assert out.getvalue().startswith(f"{src:<52} last: ") and out.getvalue().count("\n") == 1
    run(ctx, SyncRequest(fs=src, force=True))
    assert run(ctx, StatusRequest(fs=[src]))[0].rolled_back is None
