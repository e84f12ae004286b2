#!/bin/sh
# The demo-keys service: one ssh client key and a host key per demo host, in /demo-ssh; and
# the signing keys (`zrepq keygen`) in /demo-ssh/signing: `ops` for the control plane (Flower,
# the scheduler, the exporter, the CLI), one per demo host (a worker signs the other half of
# a failover it hands on), every public key in trusted/ (what the workers accept).
# Runs once (it keeps existing keys), before the demo workers and the control plane start.
set -eu
cd /demo-ssh
[ -f id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C zrepq-demo -f id_ed25519
: > known_hosts.new
for host in $DEMO_HOSTS; do
    key=ssh_host_${host}_ed25519_key
    [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C "$host" -f "$key"
    echo "$host $(cut -d' ' -f1,2 "$key.pub")" >> known_hosts.new
done
mv known_hosts.new known_hosts
chmod 0644 ./*.pub known_hosts
install -d -m 0755 signing signing/trusted
for name in ops $DEMO_HOSTS; do
    [ -f "signing/$name.key" ] || zrepq keygen --dir signing "$name" >/dev/null
    cp "signing/$name.pub" signing/trusted/
done
# The control plane runs as the image's user zrepq (uid 10001); the demo hosts as root.
chown 10001:10001 signing/ops.key
