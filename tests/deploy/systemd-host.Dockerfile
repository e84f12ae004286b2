# A Debian 12 server for tests/deploy/test_systemd.py: systemd as PID 1, dbus, sshd, apt
# lists kept (docs/install.md's `apt-get install` steps run as written), and the stand-in
# zfs/zpool (tests/standin) installed as /usr/local/sbin/zfs and zpool, where a zfs package
# would put them on root's PATH for every process (a systemd unit, an ssh login). Pools:
# poola and poolb.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3009
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       systemd systemd-sysv dbus openssh-server python3 pv procps
COPY tests/standin/zfs tests/standin/zpool /opt/zfs-standin/
COPY tests/standin/standin /opt/zfs-standin/standin
# The wrappers' $-expressions are for the wrappers, not for this shell.
# hadolint ignore=SC2016
RUN for cmd in zfs zpool; do \
        printf '#!/bin/sh\n: "${ZFS_STANDIN_ROOT:=/var/lib/zfs-standin}"\nexport ZFS_STANDIN_ROOT\nexec /opt/zfs-standin/%s "$@"\n' \
            "$cmd" > /usr/local/sbin/$cmd \
        && chmod 0755 /usr/local/sbin/$cmd; \
    done \
    && install -d /var/lib/zfs-standin \
    && zpool create poola /dev/sda && zpool create poolb /dev/sdb
# Debian's redis-server.service asks for PrivateUsers=yes, which systemd cannot set up in a
# docker container ("Failed to set up user namespacing"); the rest of its sandbox stays.
RUN install -d /etc/systemd/system/redis-server.service.d \
    && printf '[Service]\nPrivateUsers=no\n' \
       > /etc/systemd/system/redis-server.service.d/container.conf
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
