"""How to reach remote hosts over SSH, for both the paramiko control path and OpenSSH's data path.

The two paths must reach the same machine with the same trust: `resolve` reads the OpenSSH
client config the way `ssh -F` would (first value wins; explicit options beat the file) and
`openssh_argv` passes the same choices on to `ssh`.
"""

from __future__ import annotations

import getpass
import math
import os
from dataclasses import dataclass

import paramiko

from workers.engine.errors import ConfigError, ValidationError

_DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


@dataclass(frozen=True)
class SshOptions:
    """SSH settings for every remote host.

    config_file: an OpenSSH ssh_config (HostName, Port, User, IdentityFile, IdentitiesOnly,
        UserKnownHostsFile, GlobalKnownHostsFile are honoured by paramiko too; Include,
        ProxyJump and HostKeyAlias are not). None means
        `~/.ssh/config` when it exists, as `ssh` does.
    user, port, identity_file: override the config file, like `ssh -l/-p/-i`.
    known_hosts: one more known_hosts file, consulted besides the system and user ones.
    accept_unknown_host_keys: trust a host seen for the first time (OpenSSH `accept-new`;
        paramiko keeps the key in memory only). A *changed* key is always refused.
    cipher: `ssh -c` for the data path (e.g. aes128-gcm@openssh.com, the cheapest on AES-NI).
    extra_ssh_args: appended to the OpenSSH argv before the host name.
    connect_timeout: seconds to establish TCP and the SSH handshake.
    server_alive_interval, server_alive_count: OpenSSH keepalives on the data path, used
        unless the config file or extra_ssh_args set ServerAliveInterval themselves. Without
        them a stream over a dead link hangs until TCP gives up (~15 min), its lease renewed
        all the while; with 15 s x 4 it fails after about a minute and can be resumed.
    """

    config_file: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_unknown_host_keys: bool = False
    cipher: str | None = None
    extra_ssh_args: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    server_alive_interval: int = 15
    server_alive_count: int = 4

    def resolve(self, host: str) -> ResolvedHost:
        """Where and as whom to connect for `host`, after the config file."""
        _check_host(host)
        cfg = self._lookup(host)
        try:
            port = self.port or int(cfg.get("port", "22"))
        except ValueError:
            raise ConfigError(f"bad Port {cfg.get('port')!r} for {host} in ssh config") from None
        identities = [self.identity_file] if self.identity_file else []
        identities += _as_list(cfg.get("identityfile"))
        user_known = _split_paths(cfg.get("userknownhostsfile")) or _DEFAULT_USER_KNOWN_HOSTS
        global_known = _split_paths(cfg.get("globalknownhostsfile")) or _DEFAULT_GLOBAL_KNOWN_HOSTS
        return ResolvedHost(
            alias=host,
            hostname=cfg.get("hostname", host),
            port=port,
            user=self.user or cfg.get("user") or getpass.getuser(),
            identity_files=tuple(_expand(p) for p in identities),
            user_known_hosts=tuple(_expand(p) for p in user_known),
            global_known_hosts=tuple(_expand(p) for p in global_known),
            extra_known_hosts=(_expand(self.known_hosts),) if self.known_hosts else (),
            identities_only=cfg.get("identitiesonly", "no").lower() == "yes",
        )

    def openssh_argv(self, host: str) -> list[str]:
        """`ssh ... host`, ready for the remote command string to be appended."""
        _check_host(host)
        strict = "accept-new" if self.accept_unknown_host_keys else "yes"
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={strict}"]
        if self.config_file:
            argv += ["-F", self.config_file]
        if self.connect_timeout:
            argv += ["-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}"]
        if self.server_alive_interval > 0 and not self._sets_server_alive(host):
            argv += [
                "-o",
                f"ServerAliveInterval={self.server_alive_interval}",
                "-o",
                f"ServerAliveCountMax={max(1, self.server_alive_count)}",
            ]
        if self.cipher:
            argv += ["-c", self.cipher]
        if self.known_hosts:
            # On the command line UserKnownHostsFile *replaces* the user files; list them all so
            # the extra file adds to them, as it does for paramiko.
            resolved = self.resolve(host)
            files = (*resolved.user_known_hosts, *resolved.extra_known_hosts)
            argv += ["-o", "UserKnownHostsFile=" + " ".join(_ssh_word(f) for f in files)]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        argv += self.extra_ssh_args
        argv.append(host)
        return argv

    def _sets_server_alive(self, host: str) -> bool:
        """Does the config file (for this host) or extra_ssh_args choose keepalives already?"""
        if any("serveraliveinterval" in a.lower() for a in self.extra_ssh_args):
            return True
        return "serveraliveinterval" in self._lookup(host)

    def _lookup(self, host: str) -> paramiko.SSHConfigDict:
        path = self.config_file
        if path is None:
            default = os.path.expanduser("~/.ssh/config")
            path = default if os.path.exists(default) else None
        if path is None:
            return paramiko.SSHConfigDict()
        try:
            return paramiko.SSHConfig.from_path(path).lookup(host)
        except (OSError, ValueError, paramiko.ConfigParseError) as exc:
            raise ConfigError(f"cannot read ssh config {path}: {exc}") from None


@dataclass(frozen=True)
class ResolvedHost:
    alias: str  # the zrep host name, as given to ssh
    hostname: str  # what to connect to
    port: int
    user: str
    identity_files: tuple[str, ...]
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    extra_known_hosts: tuple[str, ...]
    identities_only: bool = False  # IdentitiesOnly: no agent keys, no ~/.ssh/id_* guessing

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_key(self) -> str:
        """The name this host has in known_hosts (`[addr]:port` unless port 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        """`hostb (127.0.0.1:2222)`, how errors name a host."""
        return f"{self.alias} ({self.address})"


def _check_host(host: str) -> None:
    # A leading '-' would be read by ssh as an option; the engine validates names, this is the
    # last line of defence where the name becomes argv.
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise ValidationError(f"invalid host name {host!r}", host=host)


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _split_paths(value: str | None) -> tuple[str, ...]:
    return tuple(value.split()) if value else ()


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def _ssh_word(path: str) -> str:
    return f'"{path}"' if any(c.isspace() for c in path) else path
