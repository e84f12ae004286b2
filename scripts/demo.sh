#!/usr/bin/env bash
# Set up and run the demo on a fresh Debian 12 machine (run as root): two storage hosts
# (stand-in ZFS behind real sshd), Redis, a zrepq worker per host and Flower, all started
# here; then init, sync with progress, sync all, failover and back, status. The stack keeps
# running (Flower's URL is printed); `bash scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = stop ]; then
  exec .venv/bin/python scripts/demo.py --stop
fi
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
