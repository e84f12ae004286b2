#!/usr/bin/env bash
# Set up and run zrepq's whole test suite on a fresh Debian 12 machine (run as root):
# lint (ruff), types (mypy), the import contracts (lint-imports), then pytest. Extra arguments
# go to pytest (`scripts/test.sh -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --diff . | head -50; exit 1; }
.venv/bin/mypy
.venv/bin/lint-imports  # producer -> tasks -> workers; the engine imports no Celery/Redis/SSH
# Real OpenZFS in QEMU guests (tests/realzfs) for these lines; `ZREPQ_REALZFS= ` turns it off.
export ZREPQ_REALZFS="${ZREPQ_REALZFS-2.1,2.3}"
exec .venv/bin/python -m pytest "$@"
