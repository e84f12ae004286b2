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
fi
# The distribution's redis/sshd/docker services are not used: tests and demo start their own
# (tests/deploy starts dockerd when none runs).

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
