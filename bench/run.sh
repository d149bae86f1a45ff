#!/usr/bin/env bash
# refhunt beside valgrind, memray and tracemalloc on CPython 3.11 and 3.13; writes
# docs/benchmarks.md. Installs refhunt and memray into .venv/X.Y; valgrind must be on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

venvs=()
for version in ${REFHUNT_BENCH_VERSIONS:-3.11 3.13}; do
    python=$(setup_venv "$version")
    "$python" -m pip install -q memray pytest-memray >&2
    venvs+=(--venv "$(dirname "$(dirname "$python")")")
done
"$python" bench/run.py "${venvs[@]}" --runs "${REFHUNT_BENCH_RUNS:-3}"
