#!/usr/bin/env bash
# Set up and run zrepq's whole test suite on a fresh Debian 12 machine (run as root).
# Installs what the tests need (redis-server, OpenSSH, iproute2, zstd, Python venv), creates
# .venv with the package and its test extras, then runs ruff, mypy and pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && [ -z "${ZREPQ_SKIP_APT:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    redis-server openssh-server openssh-client iproute2 procps zstd \
    pv python3 python3-venv python3-pip ca-certificates git >/dev/null
fi
# The distribution's redis/sshd services are not used: the tests start their own.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"

.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --diff . | head -50; exit 1; }
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
