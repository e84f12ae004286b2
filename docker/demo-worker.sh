#!/bin/sh
# Entry point of the demo-worker image: one demo storage host.
#   1. the stand-in ZFS state (pool POOL, created once, kept in the volume),
#   2. sshd on port 22, trusting the demo's client key (shared volume /demo-ssh, made by the
#      demo-keys service) so other demo hosts can `zfs recv` here,
#   3. then exactly what a real host runs: `zrepq-worker`.
set -eu
: "${ZREPQ_HOST:?set ZREPQ_HOST}"
: "${POOL:?set POOL (the demo pool, e.g. poola)}"
keys=/demo-ssh

mkdir -p "$ZFS_STANDIN_ROOT"
zpool list -H -o name "$POOL" >/dev/null 2>&1 || zpool create "$POOL" "/dev/demo-$POOL"

install -d -m 0700 /root/.ssh
cp "$keys/id_ed25519" "$keys/id_ed25519.pub" /root/.ssh/
cp "$keys/id_ed25519.pub" /root/.ssh/authorized_keys
cp "$keys/known_hosts" /root/.ssh/known_hosts
chmod 0600 /root/.ssh/id_ed25519 /root/.ssh/authorized_keys
cat > /etc/ssh/sshd_config.d/zrepq-demo.conf <<CONF
HostKey $keys/ssh_host_${ZREPQ_HOST}_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
SetEnv PATH=/opt/zfs-standin:/opt/zrepq/bin:/usr/local/bin:/usr/bin:/bin ZFS_STANDIN_ROOT=$ZFS_STANDIN_ROOT ZFS_STANDIN_PYTHON=$ZFS_STANDIN_PYTHON
CONF
/usr/sbin/sshd

exec zrepq-worker "$@"
