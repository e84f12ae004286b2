"""Signing keys for everything the harness starts: one set per process, made once.

Every worker the harness starts (`services.worker_env`), Flower, and every producer app a
test builds (`signed({...})`) use them, so every test runs with signed messages, as a real
fleet does:

- `tester`: the producers' identity, named for every verb by the workers' policy;
- `plain`: trusted, but no rule names it: the default policy only (read and routine verbs);
- `outsider`: a well-formed key that no worker trusts.

`ZREPQ_SIGNING_*` and `ZREPQ_POLICY` of the environment win (a session, or the demo, that
set them keeps its own); `keys()` puts them into `os.environ` so subprocesses inherit them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from workers.auth.signing import generate

POLICY = """\
# The test fleet's policy: the producers' identity may do everything, everywhere.
[[rule]]
name = "test producers"
identities = ["tester"]
verbs = ["*"]
datasets = ["*"]
"""

NAMES = ("ZREPQ_SIGNING_KEY", "ZREPQ_SIGNING_TRUSTED", "ZREPQ_POLICY", "ZREPQ_SIGNING_IDENTITY")


@lru_cache(maxsize=1)
def key_dir() -> Path:
    """The directory holding every key (`NAME.key`, and `trusted/NAME.pub`)."""
    base = Path(tempfile.mkdtemp(prefix="zrepq-test-keys-"))
    if not os.environ.get("ZREPQ_HARNESS_DETACH"):
        atexit.register(shutil.rmtree, base, True)
    trusted = base / "trusted"
    trusted.mkdir()
    for name in ("tester", "plain", "outsider"):
        _, pub = generate(name, base)
        if name != "outsider":
            shutil.copy(pub, trusted / pub.name)
    (base / "policy.toml").write_text(POLICY)
    return base


def keys() -> dict[str, str]:
    """The harness's signing settings (and into `os.environ`, for subprocesses)."""
    if not os.environ.get("ZREPQ_SIGNING_TRUSTED"):
        base = key_dir()
        os.environ.update(
            {
                "ZREPQ_SIGNING_KEY": str(base / "tester.key"),
                "ZREPQ_SIGNING_TRUSTED": str(base / "trusted"),
                "ZREPQ_POLICY": str(base / "policy.toml"),
            }
        )
    return {n: os.environ[n] for n in NAMES if os.environ.get(n)}


def signed(env: Mapping[str, str], as_: str | None = None) -> dict[str, str]:
    """`env` plus the signing settings (`as_`: sign with that key of `key_dir()` instead)."""
    out = {**keys(), **env}
    if as_ is not None:
        out["ZREPQ_SIGNING_KEY"] = str(key_dir() / f"{as_}.key")
        out.pop("ZREPQ_SIGNING_IDENTITY", None)
    return out
