"""docs/install.md's command blocks, run as written.

Every ```sh block of install.md follows a marker line `<!-- test: NAME -->`; the tier runs
each block by name, in a checkout copy on this machine or inside a container. A test may
replace a few literal strings (its ports, passwords, host names: what an admin types in
differently); each replaced string must occur in the block, so an edit of the doc that drops
one fails here instead of silently testing something else. tests/integration/test_deploy.py
checks that every block is marked and that every marked block is run by this tier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from tests.harness.netutil import REPO

INSTALL_MD = REPO / "docs" / "install.md"
MARKED = re.compile(r"^<!-- test: ([a-z0-9-]+) -->\n```sh\n(.*?)^```$", re.S | re.M)
ANY_BLOCK = re.compile(r"^```(\w*)\n", re.M)
# The blocks this tier runs, as its source names them: `block("NAME"`, `run_block("NAME"`
# (on this machine) or `.doc(HOST, "NAME"` (in a container).
USE = re.compile(r"""(?:block|\.doc)\(\s*(?:[\w.]+,\s*)?["']([a-z0-9-]+)["']""")


def blocks(path: Path = INSTALL_MD) -> dict[str, str]:
    text = path.read_text()
    found: dict[str, str] = {}
    for name, body in MARKED.findall(text):
        assert name not in found, f"{path.name}: two blocks named {name!r}"
        found[name] = body
    return found


def block(name: str, subs: Mapping[str, str] | None = None, path: Path = INSTALL_MD) -> str:
    """The shell text of block `name`, with each `subs` key replaced by its value."""
    all_blocks = blocks(path)
    assert name in all_blocks, f"{path.name} has no block marked `<!-- test: {name} -->`"
    text = all_blocks[name]
    for old, new in (subs or {}).items():
        assert old in text, f"{path.name} block {name!r} no longer says {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


def used_by_tier(tier: Path) -> set[str]:
    sources = [*sorted(tier.glob("test_*.py")), tier / "conftest.py"]
    return {name for f in sources for name in USE.findall(f.read_text())}
