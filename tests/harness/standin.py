"""Test-side helpers for the stand-in `zfs`/`zpool` (the package in tests/standin/).

A `StandinHost` is one simulated host: a state directory (`ZFS_STANDIN_ROOT`) plus an
environment whose PATH finds the stand-in first. Everything it does goes through the
stand-in's CLI or the dataset's mountpoint directory, as a test on a real host would; the
only stand-in specific reads are `calls()` (the call log) and `mountpoint()` (which asks
the state file where the content directory is, so it also works for unmounted datasets).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STANDIN_BIN = Path(__file__).resolve().parent.parent / "standin"


def standin_env(root: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{STANDIN_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["ZFS_STANDIN_ROOT"] = str(root)
    env.pop("ZFS_STANDIN_DELAY", None)
    return env


class StandinHost:
    """One simulated ZFS host backed by the stand-in."""

    def __init__(self, root: Path, name: str, env: Mapping[str, str] | None = None):
        self.root = Path(root)
        self.name = name
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = standin_env(self.root, env)

    def __repr__(self) -> str:
        return f"StandinHost({self.name!r}, root={str(self.root)!r})"

    # -- commands
    def zfs(
        self,
        *args: str,
        check: bool = True,
        input: bytes | str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["zfs", *args], check=check, input=input, timeout=timeout)

    def zpool(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run(["zpool", *args], check=check, input=None, timeout=timeout)

    def sh(
        self,
        script: str,
        check: bool = True,
        input: bytes | str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run a /bin/sh script with this host's environment."""
        return self._run(["/bin/sh", "-c", script], check=check, input=input, timeout=timeout)

    def _run(
        self,
        argv: list[str],
        *,
        check: bool,
        input: bytes | str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            argv,
            input=data if data is not None else b"",
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )
        res = subprocess.CompletedProcess(
            argv,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{self.name}: {' '.join(argv)} exited {res.returncode}\n"
                f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
            )
        return res

    # -- pools and datasets
    def create_pool(self, name: str) -> str:
        self.zpool("create", name, f"/dev/fake-{name}")
        return name

    def get(self, prop: str, ds: str) -> str:
        return self.zfs("get", "-H", "-p", "-o", "value", prop, ds).stdout.rstrip("\n")

    def exists(self, ds: str) -> bool:
        return self.zfs("list", "-H", "-o", "name", ds, check=False).returncode == 0

    def snapshots(self, fs: str) -> list[str]:
        out = self.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", fs).stdout
        return out.split()

    def mountpoint(self, ds: str) -> Path:
        """The directory holding the live files of `ds`."""
        try:
            state = json.loads((self.root / "state.json").read_text())
            return Path(state["ds"][ds]["dir"])
        except (OSError, KeyError, ValueError):
            return Path(self.get("mountpoint", ds))

    # -- file content
    def write(self, ds: str, relpath: str, data: bytes, mode: int | None = None) -> Path:
        path = self.mountpoint(ds) / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mode is not None:
            path.chmod(mode)
        return path

    def read(self, ds: str, relpath: str) -> bytes:
        return (self.mountpoint(ds) / relpath).read_bytes()

    def remove(self, ds: str, relpath: str) -> None:
        (self.mountpoint(ds) / relpath).unlink()

    def tree(self, ds: str) -> dict[str, str]:
        """{relpath: sha256 hex (files) | 'dir' | 'link:<target>'} of the live content."""
        return tree_of(self.mountpoint(ds))

    def calls(self) -> list[dict[str, Any]]:
        log = self.root / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def zfs_calls(self, subcommand: str | None = None) -> list[list[str]]:
        out = []
        for c in self.calls():
            argv = c["argv"]
            if argv and argv[0] == "zfs" and (subcommand is None or argv[1:2] == [subcommand]):
                out.append(argv)
        return out


def wipe_root(root: Path) -> None:
    """Empty a stand-in state directory (the directory itself stays: sshd's env names it)."""
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def tree_of(top: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not top.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        rel = Path(dirpath).relative_to(top)
        for d in dirnames:
            p = Path(dirpath) / d
            key = str(rel / d) if str(rel) != "." else d
            out[key] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath) / f
            key = str(rel / f) if str(rel) != "." else f
            if p.is_symlink():
                out[key] = f"link:{os.readlink(p)}"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
