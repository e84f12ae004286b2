"""pytest plugin: run every test that uses the `zfs_backend` fixture on real OpenZFS too.

    pytest tests/contract --zfs=real                 # OpenZFS 2.1 and 2.3 only
    pytest tests/contract --zfs=standin,real-2.3     # the stand-in and OpenZFS 2.3
    ZREPQ_REALZFS=2.1,2.3 pytest                      # the whole suite, contract tests x3

Without `--zfs` and `ZREPQ_REALZFS` nothing here runs (no parametrization, no guest, no
image lookup), so the normal run is unchanged. With a real backend requested:
- `zfs_backend` is parametrized; the ids name the OpenZFS version of the image,
  e.g. `test_x[openzfs-2.1.11]`, and the items are marked `realzfs` (so `-m realzfs` selects
  only them) and moved to the end of the run, grouped by version (one guest at a time);
- missing images are built before the first test, outside any per-test timeout (the build
  needs root and ~6-8 min per version on 2 cores);
- one guest per version boots on first use and is stopped after that version's last test;
- if an image cannot be built or a guest cannot boot, every test of that version fails with
  the reason; the summary names the `zfs version` each guest reported.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import pytest

from tests.realzfs.backend import GuestPool, RealZfsBackend
from tests.realzfs.guest import GuestError
from tests.realzfs.image import FLAVOURS, resolve, upstream

STANDIN = "standin"


@dataclass
class RealZfsState:
    specs: list[str]  # "standin" and/or OpenZFS lines ("2.1", "2.3")
    ids: dict[str, str] = field(default_factory=dict)
    pool: GuestPool = field(default_factory=GuestPool)
    per_label: dict[str, list[float]] = field(default_factory=dict)

    @property
    def real(self) -> list[str]:
        return [s for s in self.specs if s != STANDIN]

    def id(self, spec: str) -> str:
        return self.ids.get(spec, spec)


STATE = pytest.StashKey[RealZfsState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("realzfs").addoption(
        "--zfs",
        action="append",
        metavar="BACKENDS",
        help="backends for tests using zfs_backend, comma-separated or repeated: standin, "
        "real-2.1, real-2.3, real (= both). Default: standin, plus the lines in "
        "$ZREPQ_REALZFS (e.g. 2.1,2.3).",
    )


def parse_specs(values: list[str] | None, env: str) -> list[str]:
    words = [w.strip() for v in values or [] for w in v.split(",") if w.strip()]
    if not words:
        words = [STANDIN] + [w.strip() for w in env.split(",") if w.strip()]
    specs: list[str] = []
    for w in words:
        w = w.removeprefix("real-").removeprefix("openzfs-")
        expanded = list(FLAVOURS) if w in ("real", "all") else [w]
        for s in expanded:
            if s != STANDIN and s not in FLAVOURS:
                raise pytest.UsageError(f"--zfs: unknown backend {w!r}")
            if s not in specs:
                specs.append(s)
    return specs


def pytest_configure(config: pytest.Config) -> None:
    specs = parse_specs(config.getoption("zfs"), os.environ.get("ZREPQ_REALZFS", ""))
    state = RealZfsState(specs)
    for label in state.real:
        try:
            _key, pkgs = resolve(label)
            state.ids[label] = f"openzfs-{upstream(pkgs['zfs-dkms'])}"
        except Exception as e:  # reported by the tests themselves, loudly
            state.ids[label] = f"openzfs-{label}"
            state.pool.errors[label] = f"OpenZFS {label}: cannot look up the image: {e}"
    config.stash[STATE] = state
    if state.real:
        atexit.register(state.pool.close)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.pool.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE]
    if "zfs_backend" in metafunc.fixturenames and state.real:
        metafunc.parametrize(
            "zfs_backend", state.specs, indirect=True, ids=[state.id(s) for s in state.specs]
        )


def _label(item: pytest.Item) -> str | None:
    spec = getattr(item, "callspec", None)
    value = spec.params.get("zfs_backend") if spec is not None else None
    return value if isinstance(value, str) and value != STANDIN else None


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    if not state.real:
        return
    order = {label: i for i, label in enumerate(state.real)}
    for item in items:
        if _label(item):
            item.add_marker(pytest.mark.realzfs)

    def rank(item: pytest.Item) -> int:
        label = _label(item)
        if label is not None:
            return order[label]
        # other realzfs tests (the end-to-end one boots guests of its own) come last
        return len(order) if item.get_closest_marker("realzfs") else -1

    # the rest keeps its place; each OpenZFS line follows as one block (one guest at a time)
    items.sort(key=rank)


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash[STATE]
    labels = {_label(it) for it in session.items if it.get_closest_marker("realzfs")}
    needed = [lb for lb in state.real if lb in labels or None in labels]
    if not needed or config.option.collectonly:
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    tr = config.pluginmanager.getplugin("terminalreporter")
    for label in needed:
        if label in state.pool.errors:
            continue
        t0 = time.monotonic()
        try:
            with capman.global_and_fixture_disabled():  # the build logs its steps live
                img = state.pool.image(label)
        except (Exception, SystemExit) as e:  # every test of this line fails with it
            state.pool.errors[label] = f"OpenZFS {label}: no guest image: {e}"
            if tr:
                tr.write_line(f"realzfs: {state.pool.errors[label]}", red=True)
            continue
        if tr:
            tr.write_line(
                f"realzfs: {state.id(label)} image {img.dir} "
                f"(ready in {time.monotonic() - t0:.0f}s)"
            )


def real_backend(request: pytest.FixtureRequest, label: str) -> RealZfsBackend:
    """The `zfs_backend` for a real OpenZFS line (called by that fixture)."""
    state = request.config.stash[STATE]
    try:
        booted = state.pool.get(label)
        backend = RealZfsBackend(booted.guest, state.id(label))
    except GuestError as e:
        pytest.fail(str(e), pytrace=False)
    request.addfinalizer(backend.close)
    request.node.user_properties.append(("zfs_version", booted.version))
    return backend


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    t0 = time.monotonic()
    yield
    label = _label(item)
    if label:
        item.config.stash[STATE].per_label.setdefault(label, []).append(time.monotonic() - t0)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a version's guest after its last test: at most one guest runs at a time."""
    label = _label(item)
    if label and (nextitem is None or _label(nextitem) != label):
        item.config.stash[STATE].pool.stop(label)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    state = config.stash.get(STATE, None)
    if state is None or not (state.pool.history or state.pool.errors):
        return
    tr = terminalreporter
    tr.section("real OpenZFS")
    for b in state.pool.history:
        times = state.per_label.get(b.label, [])
        tr.write_line(
            f"{state.id(b.label)}: zfs version {b.version}; kernel {b.kernel}; "
            f"guest ssh-ready in {b.boot_seconds:.0f}s; {len(times)} tests in {sum(times):.0f}s"
        )
    for label, err in state.pool.errors.items():
        tr.write_line(f"{state.id(label)}: FAILED: {err.splitlines()[0]}", red=True)
