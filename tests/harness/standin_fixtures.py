"""Pytest fixtures for the stand-in `zfs` (registered in tests/conftest.py).

- `standin_bin`: the directory holding the stand-in `zfs`/`zpool` executables.
- `standin_host`: factory, `standin_host("hosta")` -> a `StandinHost` with its own state root
  under the test's tmp_path and one pool (`poola` for "hosta", `poolb` for "hostb", ...;
  override with `pool=`, or `pool=None` for none).
- `zfs_backend`: the `ZfsBackend` the contract tests run against: the stand-in, or real
  OpenZFS in a QEMU guest when `--zfs`/`ZREPQ_REALZFS` asks for it (tests/realzfs/plugin.py
  parametrizes this fixture then).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.standin import STANDIN_BIN, StandinHost
from tests.harness.zfs_backend import StandinBackend, ZfsBackend

pytest_plugins = ["tests.realzfs.plugin"]  # --zfs=real-2.1,real-2.3

_UNSET = object()


@pytest.fixture(scope="session")
def standin_bin() -> Path:
    return STANDIN_BIN


def default_pool_for(name: str) -> str:
    if name.startswith("host") and len(name) > 4:
        return "pool" + name[4:]
    return name + "pool" if name[:1].isalpha() else "pool" + name


@pytest.fixture
def standin_host(tmp_path: Path) -> Callable[..., StandinHost]:
    made: dict[str, StandinHost] = {}

    def make(name: str = "hosta", pool: object = _UNSET) -> StandinHost:
        if name in made:
            return made[name]
        host = StandinHost(tmp_path / f"standin-{name}", name)
        p = default_pool_for(name) if pool is _UNSET else pool
        if p is not None:
            host.create_pool(str(p))
        made[name] = host
        return host

    return make


def clone_root(template: Path, dest: Path) -> None:
    """Copy a stand-in state root; the state file holds absolute paths, so rewrite them."""
    shutil.copytree(template, dest, symlinks=True)
    state = dest / "state.json"
    state.write_text(state.read_text().replace(str(template), str(dest)))
    for junk in ("hashcache.json", "calls.log"):
        (dest / junk).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def _standin_backend_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("standin-template") / "root"
    StandinBackend(StandinHost(root, "template"))
    return root


def shared_root(request: pytest.FixtureRequest) -> Path:
    """A state root that a user other than root can use (tests marked `unprivileged`): in
    /var/tmp (pytest's own directories are root's alone), world-writable, removed after the
    test. The stand-in then creates everything in it usable by all (cli.log_call), and its
    delegation model decides who may do what, as the kernel does for a pool."""
    top = Path(tempfile.mkdtemp(prefix="zrepq-standin-", dir="/var/tmp"))
    top.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    return top / "root"


def share(root: Path) -> None:
    subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)


@pytest.fixture
def zfs_backend(
    request: pytest.FixtureRequest, tmp_path: Path, _standin_backend_template: Path
) -> ZfsBackend:
    kind = getattr(request, "param", "standin")
    if kind != "standin":  # an OpenZFS line, e.g. "2.3": a pool pair in a QEMU guest
        from tests.realzfs.plugin import real_backend

        return real_backend(request, kind)
    unprivileged = request.node.get_closest_marker("unprivileged") is not None
    root = shared_root(request) if unprivileged else tmp_path / "standin-backend"
    clone_root(_standin_backend_template, root)
    if unprivileged:
        share(root)
    return StandinBackend(StandinHost(root, "backend"), fresh=False)
