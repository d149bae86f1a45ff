#!/usr/bin/env bash
# What watching refcounts with hardware breakpoints costs (issue 12): plain runs of the seed
# and the zoo's holder patterns with and without --no-watch, and check() with and without
# its holder run, on CPython 3.11 and 3.13. Writes docs/bench-holders.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

args=()
for version in ${REFHUNT_BENCH_VERSIONS:-3.11 3.13}; do
    python=$(setup_venv "$version")
    zoo=$("$python" zoo/build.py --python "$python" --out "target/bench-zoo/$version")
    "$python" -c "import sys; sys.path.insert(0, 'zoo'); import build; build.build(sys.executable, sys.argv[1], source='zoo/holders.c', name='zoo_holders')" "$zoo"
    args+=(--venv "$(dirname "$(dirname "$python")")" --zoo "$zoo")
done
{
    echo "# Holders: what watching refcounts costs"
    echo
    echo "Written by \`bench/holders.sh\` on $(uname -srm), $(nproc) cores, $(date -u +%Y-%m-%d)."
    echo "Medians of ${REFHUNT_BENCH_RUNS:-5} interleaved runs, whole process. \"Not watched\" is"
    echo "\`refhunt run --no-watch\`, or for \`check()\` the same call with REFHUNT_NO_WATCH=1 (no"
    echo "breakpoints, so no holder run). Target: a plain run within 1.2x."
    echo
    "$python" bench/holders.py "${args[@]}" --runs "${REFHUNT_BENCH_RUNS:-5}"
} | tee docs/bench-holders.md
