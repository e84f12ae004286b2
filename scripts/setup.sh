#!/usr/bin/env bash
# Shared by scripts/test.sh and scripts/demo.sh: install what zrepq needs on Debian 12 (as
# root), then a virtualenv in .venv with the package and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && [ -z "${ZREPQ_SKIP_APT:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends \
    redis-server openssh-server openssh-client iproute2 procps zstd pv \
    docker.io docker-compose debootstrap chromium openssl systemd \
    python3 python3-venv python3-pip ca-certificates git >/dev/null
  # syncoid, a peer in the benchmarks (bench/peers.py): Debian's sanoid. It depends on
  # zfs-fuse | zfsutils-linux | zfsutils; the tests' zfs is the stand-in, so where no ZFS
  # package is installed an empty local package provides "zfsutils" and apt pulls in no
  # zfs-fuse (a FUSE daemon, and a /sbin/zfs that is not the stand-in).
  if ! dpkg-query -W -f='${Status}\n' zfsutils-linux zfs-fuse zrepq-standin-zfsutils \
      2>/dev/null | grep -q "install ok installed"; then
    pkg=$(mktemp -d)
    mkdir -p "$pkg/deb/DEBIAN"
    printf '%s\n' \
      "Package: zrepq-standin-zfsutils" "Version: 1.0" "Architecture: all" \
      "Maintainer: zrepq developers <root@localhost>" "Provides: zfsutils" \
      "Section: admin" "Priority: optional" \
      "Description: zrepq's test stand-in zfs stands for zfsutils" \
      " zrepq's tests and benchmarks run zfs as a stand-in program (tests/standin). This" \
      " empty package lets Debian's sanoid (syncoid) install without zfs-fuse." \
      > "$pkg/deb/DEBIAN/control"
    dpkg-deb --build --root-owner-group "$pkg/deb" "$pkg/zrepq-standin-zfsutils.deb" >/dev/null
    dpkg -i "$pkg/zrepq-standin-zfsutils.deb" >/dev/null
    rm -rf "$pkg"
  fi
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends sanoid >/dev/null
fi
# The distribution's redis/sshd/docker services are not used: tests and demo start their own
# (tests/deploy starts dockerd when none runs).

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
