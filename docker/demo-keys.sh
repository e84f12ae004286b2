#!/bin/sh
# The demo-keys service: one ssh client key and a host key per demo host, in /demo-ssh.
# Runs once (it keeps existing keys), before the demo workers start.
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
