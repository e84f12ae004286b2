"""Upstream zrep 2.0.2 acted out at the zfs level: for tests that mix zrep and zrepq on a pair.

`Zrep(here, hosts)` is zrep installed on host `here`. Its `init`, `sync` and `expire` run the
zfs commands zrep's own shell functions run (`zrep_init`, `zrep_sync`/`_snapandsync`/`_sync`,
`zrep_expire`/`_expire`, `zrep_lock_fs`/`zrep_unlock_fs`, `getlastsnapsent`, `makesnap`,
`getallsnaps` in zrep_snap, zrep_sync and zrep_vars), in zrep's order, and give back what a
script running zrep sees: its stdout, its stderr and its exit status (`ZrepRun`), plus every
zfs command, in order, on which host. For example:

- a snapshot is the next `@zrep_NNNNNN` after the highest existing one (counting `_unsent`);
- `zfs send -I LASTSENT NEW | [ssh HOST] zfs recv [-s] DESTFS`, then `zrep:sent` on the
  destination's snapshot, then on the source's;
- expire on the master keeps the last sent snapshot, everything newer and `savecount - 1`
  older; the remote side runs `zrep expire DESTFS` there (its own lock and savecount), keeping
  the newest `savecount`. `zfs destroy -r` is run one snapshot at a time and a refusal is
  printed as zfs prints it (OpenZFS 2.1.11: `cannot destroy snapshot FS@S: dataset is busy`,
  2.3.2: `... it's being held. Run 'zfs holds -r FS@S' to see holders.`) while zrep goes on
  and exits 0;
- errors print `Error: ...` on stderr and exit 1, leaving the fs lock in place as zrep does
  (`zrep_errquit` does not unlock); a failed send renames the new snapshot `_unsent` (unless
  resume is on).

Hosts: a `ZrepHost` runs `zfs` and `sh` there (any `ZfsBackend`) and says how another host's
shell reaches it (`reach`, e.g. `ssh -F cfg hostb`, or "" for a host on the same machine:
zrep's `zrep_ssh` runs such commands directly too). Control commands on the other host go
through its backend (zrep runs them over ssh: same command, same result); the stream is one
shell pipeline on the sending host, `zfs send ... | REACH zfs recv ...`, as zrep runs it.
The same actor works on the stand-in hosts of tests/harness/fleet.py (over real sshd) and on
real OpenZFS (both "hosts" as two pools of one `zfs_backend`).

zrep's lock is `zrep:lock-pid=$$` with `kill -0` on that host; each run here gets the pid of a
shell started on that host for the purpose (dead by the time it is checked, as a finished
zrep's would be). Not modelled: `-q`/`-c`, `ZREP_R`, filters, `refresh`, failover/takeover,
init's clean-up after a failed transfer.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tests.harness.zfs_backend import ZfsBackend, ZfsResult

q = shlex.quote


@dataclass(frozen=True)
class ZrepHost:
    name: str  # zrep's name for it (`uname -n` up to the dot; zrep:src-host / dest-host)
    backend: ZfsBackend
    reach: str = ""  # shell words that run a command on this host from another host's shell


@dataclass
class ZrepRun:
    """What running `zrep ARGS` gave: exit status, stdout, stderr, and the zfs commands."""

    argv: list[str]
    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    commands: list[str] = field(default_factory=list)  # "host: zfs ..." in order

    def out(self, text: str) -> None:
        self.stdout += text + "\n"

    def err(self, text: str) -> None:
        self.stderr += text if text.endswith("\n") else text + "\n"

    @property
    def refused_destroys(self) -> list[str]:
        """zfs's own lines for a destroy it refused (a held snapshot)."""
        return [
            ln
            for ln in self.stderr.splitlines()
            if "dataset is busy" in ln or "it's being held" in ln
        ]

    def __str__(self) -> str:
        return f"$ {shlex.join(self.argv)}  (exit {self.rc})\n{self.stdout}" + "".join(
            f"stderr: {ln}\n" for ln in self.stderr.splitlines()
        )


class _Quit(Exception):
    """zrep_errquit / exit 1: the run ends here (locks stay, as in zrep)."""


class Zrep:
    def __init__(
        self,
        here: ZrepHost,
        hosts: Iterable[ZrepHost] = (),
        *,
        tag: str = "zrep",
        save_count: int = 5,
        resume: bool = False,
        rename_unsent: bool = True,
    ) -> None:
        self.here = here
        self.hosts = {h.name: h for h in (here, *hosts)}
        self.tag = tag
        self.save_count = save_count
        self.resume = resume  # ZREP_RESUME / sync -r
        self.rename_unsent = rename_unsent  # ZREP_RENAME_UNSENT (default yes)
        self.inc_flag = "-I" if tag == "zrep" else "-i"
        self._run = ZrepRun([])
        self._pid = 0

    def on(self, host: str) -> Zrep:
        """zrep installed on another host (for `zrep_ssh HOST zrep expire FS`)."""
        z = Zrep(
            self.hosts[host],
            self.hosts.values(),
            tag=self.tag,
            save_count=self.save_count,
            resume=self.resume,
            rename_unsent=self.rename_unsent,
        )
        return z

    # ---- the commands ------------------------------------------------------------------

    def init(self, fs: str, desthost: str, destfs: str) -> ZrepRun:
        """`zrep init fs desthost destfs` (zrep_init, no -f, resume off unless set)."""
        return self._command(
            ["zrep", "init", fs, desthost, destfs], self._init, fs, desthost, destfs
        )

    def sync(self, fs: str) -> ZrepRun:
        """`zrep sync fs` (zrep_sync, without -q/-c): snapshot, send, sent marks, expire."""
        return self._command(["zrep", "sync", fs], self._sync, fs)

    def expire(self, fs: str, *, local_only: bool = False) -> ZrepRun:
        """`zrep expire [-L] fs` (zrep_expire): this side, then the remote one if master."""
        argv = ["zrep", "expire", *(["-L"] if local_only else []), fs]
        return self._command(argv, self._expire_cmd, fs, local_only)

    # ---- zrep's functions ----------------------------------------------------------------

    def _command(self, argv: list[str], fn: Callable[..., None], *args: object) -> ZrepRun:
        self._run = ZrepRun(argv)
        self._pid = self._new_pid()
        try:
            fn(*args)
        except _Quit:
            self._run.rc = 1
        return self._run

    def _new_pid(self) -> int:
        """The pid of a shell on this host: zrep's `$$`, and dead once the run is over."""
        res = self.here.backend.sh("echo $$")
        return int(res.check().stdout.strip())

    def _errquit(self, *words: str) -> None:
        self._run.err("Error: " + " ".join(words))
        raise _Quit

    def _zfs(self, *args: str, host: str | None = None, check: bool = False) -> ZfsResult:
        h = self.hosts[host or self.here.name]
        self._run.commands.append(f"{h.name}: {shlex.join(['zfs', *args])}")
        res = h.backend.zfs(*args)
        if check and not res.ok:
            self._run.err(res.stderr)
        return res

    def _getval(self, prop: str, name: str, host: str | None = None) -> str:
        """$ZFSGETVAL: `zfs get -H -o value PROP NAME`."""
        return self._zfs("get", "-H", "-o", "value", prop, name, host=host).stdout.strip()

    def _getlval(self, prop: str, name: str, host: str | None = None) -> str:
        """$ZFSGETLVAL: `zfs get -H -o value -s local PROP NAME` ("" when not set locally)."""
        return self._zfs(
            "get", "-H", "-o", "value", "-s", "local", prop, name, host=host
        ).stdout.strip()

    def _p(self, name: str) -> str:
        return f"{self.tag}:{name}"

    def _snap_re(self) -> re.Pattern[str]:
        return re.compile(rf"@{re.escape(self.tag)}_[0-9a-f]{{6}}")

    def _getallsnaps(self, fs: str) -> list[str]:
        """`zfs list -t snapshot -H -o name -d 1 -r fs | sed -n '/@TAG_xxxxxx/p' | sort`."""
        out = self._zfs("list", "-t", "snapshot", "-H", "-o", "name", "-d", "1", "-r", fs).stdout
        return sorted(n for n in out.split() if self._snap_re().search(n))

    def _getlastsnapsent(self, fs: str) -> str:
        """`zfs get -H -o name -r -s local TAG:sent fs | sort | tail -1`."""
        out = self._zfs("get", "-H", "-o", "name", "-r", "-s", "local", self._p("sent"), fs).stdout
        names = sorted(out.split())
        return names[-1] if names else ""

    def _lock_fs(self, fs: str) -> bool:
        check = self._getlval(self._p("lock-pid"), fs)
        if check:
            alive = self.here.backend.sh(f"kill -0 {q(check)} 2>/dev/null").ok
            if alive:
                return False
        self._zfs("set", f"{self._p('lock-pid')}={self._pid}", fs)
        self._zfs("set", f"{self._p('lock-time')}={time.strftime('%Y%m%d%H%M%S')}", fs)
        return True

    def _unlock_fs(self, fs: str) -> None:
        if self._getlval(self._p("lock-pid"), fs) != str(self._pid):
            return
        self._zfs("inherit", self._p("lock-time"), fs)
        self._zfs("inherit", self._p("lock-pid"), fs)

    def _has_fs_lock(self, fs: str) -> bool:
        return self._getlval(self._p("lock-pid"), fs) == str(self._pid)

    def _now(self) -> str:
        return str(int(time.time()))

    def _pipe(self, send_args: list[str], desthost: str, recv_args: list[str]) -> ZfsResult:
        """`eval zfs send ... | zrep_ssh desthost "zfs recv ..."`, run on this host."""
        reach = "" if desthost in ("localhost", self.here.name) else self.hosts[desthost].reach
        recv = shlex.join(["zfs", "recv", *recv_args])
        script = f"{shlex.join(['zfs', 'send', *send_args])} | {reach + ' ' if reach else ''}{recv}"
        self._run.commands.append(f"{self.here.name}: {script}")
        res = self.here.backend.sh(script)
        self._run.stdout += res.stdout
        self._run.stderr += res.stderr
        return res

    # -- init

    def _init(self, srcfs: str, desthost: str, destfs: str) -> None:
        if self._zfs("list", destfs, host=desthost).ok:
            self._errquit(f"{desthost}:{destfs} already exists! Will not overwrite without -f")
        if self._getval(self._p("dest-fs"), srcfs) != "-":
            self._run.out(f"{srcfs} is at least partially configured by zrep")
            if self._getlval(self._p("master"), srcfs):
                self._errquit(f"{self._p('master')} detected!!")
            self._errquit(f"To re-initialize, first use zrep clear {srcfs}")
        mountpoint = self._getlval("mountpoint", srcfs)
        self._run.out(f"Setting zrep properties on {srcfs}")
        if not self._zfs("list", srcfs).ok:
            self._errquit(f"filesystem {srcfs} must exist already")
        for prop, value in (
            ("src-fs", srcfs),
            ("src-host", self.here.name),
            ("dest-fs", destfs),
            ("dest-host", desthost),
            ("savecount", str(self.save_count)),
        ):
            self._zfs("set", f"{self._p(prop)}={value}", srcfs)
        snap = f"{srcfs}@{self.tag}_000000"
        self._run.out(f"Creating snapshot {snap}")
        self._zfs("snapshot", snap, check=True)
        self._run.out(f"Sending initial replication stream to {desthost}:{destfs}")
        recv = ["-u", "-o", "readonly=on", *(["-s"] if self.resume else []), "-F", destfs]
        if not self._pipe(["-p", snap], desthost, recv).ok:
            self._errquit(f"Error transferring {snap} to {desthost}:{destfs}. Resetting")
        self._zfs("set", f"{self._p('sent')}={self._now()}", snap)
        if mountpoint:
            self._run.out("clearing mountpoint value for remote")
            self._zfs("inherit", "mountpoint", destfs, host=desthost)
        self._zfs("set", f"{self._p('master')}=yes", srcfs)
        self._run.out(f"Initialization copy of {srcfs} to {desthost}:{destfs} complete")
        self._run.out("Filesystem will not be mounted")

    # -- sync

    def _sync(self, srcfs: str) -> None:
        if self._getlval(self._p("master"), srcfs) != "yes":
            self._errquit(f"{srcfs} not master. Cannot sync")
        desthost = self._getval(self._p("dest-host"), srcfs)
        destfs = self._getval(self._p("dest-fs"), srcfs)
        if desthost in ("", "-") or destfs in ("", "-"):
            self._errquit(f"Problem getting zrep properties for fs {srcfs}")
        if not self._lock_fs(srcfs):
            self._errquit(f"Cannot lock {srcfs}. Cannot continue")
        self._snapandsync(srcfs, desthost, destfs)
        self._run.out(f"Expiring zrep snaps on {srcfs}")
        self._expire(srcfs)
        self._unlock_fs(srcfs)

    def _snapandsync(self, srcfs: str, desthost: str, destfs: str) -> None:
        sentsnap = self._getlastsnapsent(srcfs)
        if not sentsnap:
            self._run.out(f"zrep_sync could not find sent snap for {srcfs}.")
            self._errquit(f"You must initialize {srcfs} for zrep")
        newsnap = self._makesnap(srcfs)
        if not newsnap:
            self._errquit(f"zrep_sync could not create new snapshot for {srcfs}")
        self._send(srcfs, desthost, destfs, sentsnap, newsnap)

    def _makesnap(self, fs: str) -> str:
        check = self._getval(self._p("src-host"), fs)
        if check != self.here.name:
            self._run.err(f"ERROR: we are not master host for {fs}")
            self._run.err(f"master is {check}, we are {self.here.name}")
            raise _Quit
        if not self._has_fs_lock(fs):
            self._run.err(f"Internal error:  makesnap fail, no lock on {fs}")
            raise _Quit
        snaps = self._getallsnaps(fs)
        last = snaps[-1] if snaps else ""
        m = re.search(rf"@{re.escape(self.tag)}_([0-9a-f]{{6}})", last)
        seq = int(m.group(1), 16) if m else 0
        newsnap = f"{fs}@{self.tag}_{seq + 1:06x}"
        return newsnap if self._zfs("snapshot", newsnap, check=True).ok else ""

    def _send(self, srcfs: str, desthost: str, destfs: str, lastsent: str, newsnap: str) -> None:
        """zrep's `_sync`: the only place a sync sends."""
        if newsnap == lastsent:
            self._run.out(f"{newsnap} already sent")
            return
        remote = self._zfs(
            "get", "-H", "-o", "value", "-s", "local", self._p("master"), destfs, host=desthost
        )
        if not remote.ok:
            self._errquit(f"{desthost} is not reachable via ssh? Cannot sync")
        if remote.stdout.strip() == "yes":
            self._errquit(f"Other side ({desthost}:{destfs}) is also master. Split brain detected")
        snapname = newsnap.split("@", 1)[1]
        now = self._now()
        self._run.out(f"sending {newsnap} to {desthost}:{destfs}")
        token = ""
        if self.resume:
            token = self._getval("receive_resume_token", destfs, host=desthost)
            token = "" if token == "-" else token
        recv = [*(["-s"] if self.resume else []), destfs]
        if token:
            res = self._pipe(["-t", token], desthost, recv)
        else:
            res = self._pipe([self.inc_flag, lastsent, newsnap], desthost, recv)
        if not res.ok:
            if not self.resume:
                if self.rename_unsent:
                    self._zfs("rename", newsnap, f"{newsnap}_unsent")
                    self._errquit(f"Problem doing sync for {newsnap}. Renamed to {newsnap}_unsent")
                self._zfs("destroy", newsnap)
            self._errquit(f"Problem doing sync for {newsnap}.")
        res = self._zfs("set", f"{self._p('sent')}={now}", f"{destfs}@{snapname}", host=desthost)
        if not res.ok:  # e.g. after a resumed stream, which did not carry newsnap
            self._run.stderr += res.stderr
            self._run.out(
                f"WARNING: setting {self._p('sent')} failed on {desthost}:{destfs}@{snapname}"
            )
            self._run.out(
                f"Using fallback methods. You should go patch {destfs} to have newer ZFS version"
            )
            self._zfs("set", f"{self._p('lastsent')}={newsnap}", destfs, host=desthost)
            self._zfs("set", f"{self._p('lastsenttime')}={now}", destfs, host=desthost)
        self._zfs("set", f"{self._p('sent')}={now}", newsnap)

    # -- expire

    def _expire_cmd(self, fs: str, local_only: bool) -> None:
        """zrep_expire: lock (its result unchecked, as in zrep), expire, unlock."""
        self._lock_fs(fs)
        self._run.out(f"Expiring zrep snaps on {fs}")
        try:
            self._expire(fs, local_only=local_only)
        except _Quit:
            self._run.out(f"WARNING: expire failed for {fs}")
            raise
        self._unlock_fs(fs)

    def _expire(self, fs: str, *, local_only: bool = False) -> None:
        master = self._getlval(self._p("master"), fs)
        if not self._has_fs_lock(fs):
            self._errquit(f"zrep_expire Internal Err caller did not hold fs lock on {fs}")
        savecount_text = self._getval(self._p("savecount"), fs)
        if savecount_text < "1":  # zrep compares the strings: [[ $savecount < 1 ]]
            self._errquit(f"{self._p('savecount')} on {fs} set to improper value {savecount_text}")
        savecount = int(savecount_text)
        snaps = self._getallsnaps(fs)
        if master == "yes":
            lastsent = self._getlastsnapsent(fs)
            if not lastsent:
                self._errquit("corrupted zrep data: no last sent detected. Stopping expire")
            # awk '$1 == lastsent {exit} {print}': the snapshots before the last sent one
            candidates = snaps[: snaps.index(lastsent)] if lastsent in snaps else snaps
            savecount -= 1
        else:
            candidates = snaps
        if len(candidates) > savecount:
            for snap in candidates[: len(candidates) - savecount]:
                res = self._zfs("destroy", "-r", snap)
                self._run.stderr += res.stderr  # zfs's own refusal, and on it goes
        if master != "yes" or local_only:
            return
        remotehost = self._getval(self._p("dest-host"), fs)
        remotefs = self._getval(self._p("dest-fs"), fs)
        self._run.out(f"Also running expire on {remotehost}:{remotefs} now...")
        sanity = self._getlval(self._p("master"), remotefs, host=remotehost)
        if sanity == "yes":
            self._run.err(f"ERROR: Remote side {remotehost} also marked as master.")
            self._errquit("ERROR: Split brain scenario detected")
        far = self.on(remotehost).expire(remotefs)  # `zrep_ssh HOST zrep expire FS`
        self._run.stdout += far.stdout
        self._run.stderr += far.stderr
        self._run.commands += far.commands
        if far.rc != 0:
            self._run.out("REMOTE expire failed")


def snapshots_and_holds(backend: ZfsBackend, *fss: str) -> dict[str, dict[str, list[str]]]:
    """{fs: {short snapshot name: its hold tags}} for each fs, in one shell call on the
    backend (a guest round trip is what a check costs on real OpenZFS)."""
    script = "".join(
        f"zfs get -H -p -d 1 -t snapshot -o name,value userrefs {q(fs)} | "
        'while IFS="$(printf \'\\t\')" read -r n v; do echo "S\t$n"; '
        '[ "$v" = 0 ] || zfs holds -H "$n" | sed "s/^/H\t/"; done\n'
        for fs in fss
    )
    out = backend.sh(script).check().stdout
    found: dict[str, dict[str, list[str]]] = {fs: {} for fs in fss}
    for line in out.splitlines():
        kind, name, *rest = line.split("\t")
        fs, short = name.split("@", 1)
        if kind == "S":
            found[fs][short] = []
        elif rest:
            found[fs][short].append(rest[0])
    return found


def snapshot_count(backend: ZfsBackend, fs: str, tag: str = "zrep") -> int:
    """How many `@TAG_NNNNNN` snapshots (zrep's `getallsnaps`) fs has."""
    pattern = re.compile(rf"^{re.escape(tag)}_[0-9a-f]{{6}}")
    return sum(1 for s in snapshots_and_holds(backend, fs)[fs] if pattern.match(s))


def holds_by_snapshot(backend: ZfsBackend, fs: str) -> dict[str, list[str]]:
    """{short snapshot name: its hold tags} for every held snapshot of fs."""
    return {s: tags for s, tags in snapshots_and_holds(backend, fs)[fs].items() if tags}
