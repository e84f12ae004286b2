"""How `zrepq flower` runs Flower: on zrepq's app, with [flower] username/password as its
basic auth.

Flower reads its options from its command line and its `FLOWER_*` environment variables, not
from zrepq's file; `zrepq flower` is the bridge, as `zrepq scheduler` is for beat.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from producer.settings import ProducerSettings
from tasks.settings import ConfigError

# Flower's own ways to be given credentials; with [flower] credentials too, which one counts
# would depend on Flower's precedence rules: refused instead.
_FLOWER_AUTH_ARGS = ("--basic-auth", "--basic_auth")
_FLOWER_AUTH_ENV = "FLOWER_BASIC_AUTH"


def flower_command(
    cfg: ProducerSettings, extra: Sequence[str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """`celery -A tasks.app flower EXTRA` and its environment, which carries the [flower]
    credentials as FLOWER_BASIC_AUTH (the environment, not the command line, which `ps`
    shows every user). Without [flower] credentials, Flower's own options apply unchanged."""
    argv = [sys.executable, "-m", "celery", "-A", "tasks.app", "flower", *extra]
    out = dict(env)
    auth = cfg.model.flower.basic_auth()
    if auth is None:
        return argv, out
    given = [a.split("=", 1)[0] for a in extra if a.startswith(_FLOWER_AUTH_ARGS)]
    if env.get(_FLOWER_AUTH_ENV):
        given.append(_FLOWER_AUTH_ENV)
    if given:
        raise ConfigError(
            f"[flower] username and password are set, and so is Flower's {given[0]}: "
            "give Flower its credentials one way"
        )
    out[_FLOWER_AUTH_ENV] = auth
    return argv, out
