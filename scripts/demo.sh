#!/usr/bin/env bash
# `make demo`: the whole pipeline on this machine for a bounded time (DEMO_SECONDS, default 30):
# embedded broker + TimescaleDB under .sqal/, analyzer, ingest and a simulated fleet, a live
# summary, then the evaluation against the simulator's ground truth. The data stays in .sqal/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/sqal demo --duration "${DEMO_SECONDS:-30}" --data-dir "${SQAL_DATA_DIR:-.sqal}" "$@"
