"""Who may run which verb on which dataset of this host: the worker's policy (TOML).

    # /etc/zrepq/policy.toml on hosta ([signing] policy, ZREPQ_POLICY)
    [defaults]
    allow = ["read", "routine"]       # what every trusted identity may do (the default)

    [[rule]]
    name = "storage admins"
    identities = ["alice", "ops-*"]   # globs over identities
    verbs = ["destructive"]           # verbs, or groups: read, routine, destructive, "*"
    datasets = ["poola/prod", "poola/prod/*"]   # globs; "*" also matches host-wide tasks

Verbs are zrep's, with the flag that makes one destructive written after it:

    read         status list lastsent uptodate
    routine      sync synconly sync_all expire snaponly refresh init failover takeover
                 pause resume handback
    destructive  clear rollback changeconfig sentsync "init -f" "sync -f" "synconly -f"
                 "sync_all -f" "refresh -f" "takeover -F"

`rollback` is `zrep.rollback`, zrep's `sync fs@snap`, and `failover`/`takeover` of an
`fs@snap` (each rolls a dataset back, destroying what came after). A `-f` receive rolls the
destination back to the base first, so it is destructive too. Without a file, or without
`[defaults]`, the default holds: read and routine verbs for every trusted identity,
destructive verbs for nobody. A refusal names the identity, the verb, the dataset and the
rule that was closest (or "no rule allows it").
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

READ = ("status", "list", "lastsent", "uptodate")
ROUTINE = (
    "sync", "synconly", "sync_all", "expire", "snaponly", "refresh", "init", "failover",
    "takeover", "pause", "resume", "handback",
)  # fmt: skip
DESTRUCTIVE = (
    "clear", "rollback", "changeconfig", "sentsync", "init -f", "sync -f", "synconly -f",
    "sync_all -f", "refresh -f", "takeover -F",
)  # fmt: skip
GROUPS: dict[str, tuple[str, ...]] = {
    "read": READ,
    "routine": ROUTINE,
    "destructive": DESTRUCTIVE,
    "*": READ + ROUTINE + DESTRUCTIVE,
}
VERBS = GROUPS["*"]


def verb_of(task: str, args: Any) -> tuple[str, str | None]:
    """(verb, dataset) of a validated task message; dataset None for host-wide tasks."""
    name = task.removeprefix("zrep.")
    fs = getattr(args, "fs", None)
    snapshot = getattr(args, "snapshot", None)  # zrep.sync's legacy `snapshot` is a bool
    snapshot = snapshot if isinstance(snapshot, str) else None
    force = bool(getattr(args, "force", False))
    if isinstance(fs, list):  # status, list: several or all
        fs = fs[0] if len(fs) == 1 else None
    if name == "rollback" or (isinstance(fs, str) and "@" in fs):
        return "rollback", (snapshot or fs or "").split("@", 1)[0] or None
    if snapshot is not None:
        fs = snapshot.split("@", 1)[0]
    if force and name in ("init", "sync", "synconly", "sync_all", "refresh"):
        return f"{name} -f", fs
    if force and name == "takeover":
        return "takeover -F", fs
    return name, fs if isinstance(fs, str) else None


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100)
    identities: list[str] = Field(min_length=1)
    verbs: list[str] = Field(min_length=1)
    datasets: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: list[str] = Field(default_factory=lambda: ["read", "routine"])


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults: _Defaults = Field(default_factory=_Defaults)
    rule: list[_Rule] = Field(default_factory=list)


class PolicyError(Exception):
    """The policy file is unreadable or invalid (the worker refuses to start)."""


def _expand(words: Sequence[str], where: str) -> frozenset[str]:
    out: set[str] = set()
    for w in words:
        if w in GROUPS:
            out.update(GROUPS[w])
        elif w in VERBS:
            out.add(w)
        else:
            raise PolicyError(
                f"{where}: unknown verb {w!r}; verbs: {', '.join(VERBS)}; "
                f"groups: {', '.join(GROUPS)}"
            )
    return frozenset(out)


@dataclass(frozen=True)
class Rule:
    name: str
    identities: tuple[str, ...]
    verbs: frozenset[str]
    datasets: tuple[str, ...]

    def names(self, identity: str) -> bool:
        return any(fnmatch.fnmatchcase(identity, g) for g in self.identities)

    def covers(self, dataset: str | None) -> bool:
        if dataset is None:  # a host-wide task: only a rule for every dataset covers it
            return "*" in self.datasets
        return any(fnmatch.fnmatchcase(dataset, g) for g in self.datasets)


@dataclass(frozen=True)
class Policy:
    default: frozenset[str] = field(default_factory=lambda: frozenset(READ + ROUTINE))
    rules: tuple[Rule, ...] = ()
    source: str = "the default policy"

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        if path is None:
            return cls()
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as e:
            raise PolicyError(f"cannot read policy {path}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"policy {path} is not valid TOML: {e}") from None
        try:
            f = _File.model_validate(raw)
        except ValidationError as e:
            lines = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise PolicyError(f"policy {path}: {lines}") from None
        rules = tuple(
            Rule(
                r.name,
                tuple(r.identities),
                _expand(r.verbs, f"policy {path}, rule {r.name!r}"),
                tuple(r.datasets),
            )
            for r in f.rule
        )
        default = _expand(f.defaults.allow, f"policy {path}, [defaults] allow")
        return cls(default, rules, str(path))

    def refusal(self, identity: str, verb: str, dataset: str | None, host: str) -> str | None:
        """None if `identity` may run `verb` on `dataset`; else why not, naming the rule."""
        if verb in self.default:
            return None
        near: Rule | None = None
        for rule in self.rules:
            if not rule.names(identity):
                continue
            if verb in rule.verbs and rule.covers(dataset):
                return None
            if verb in rule.verbs:
                near = rule
        on = f"{host}:{dataset}" if dataset else f"every dataset of {host}"
        if near is not None:
            why = f"rule {near.name!r} allows it only on {', '.join(near.datasets)}"
        else:
            why = "no rule allows it"
        return f"identity {identity!r} may not run {verb!r} on {on}: {why} ({self.source})"
