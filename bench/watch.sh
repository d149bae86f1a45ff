#!/usr/bin/env bash
# CPU per sample of `refhunt watch` beside psutil, as the seed's pidmon.py samples. Target:
# under 50 µs. Writes docs/bench-watch.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

python=$(setup_venv "${REFHUNT_BENCH_VERSION:-3.11}")
"$python" -m pip install -q psutil
{
    echo "# refhunt watch: CPU per sample"
    echo
    echo "Written by \`bench/watch.sh\` on $(uname -srm), $(nproc) cores, $(date -u +%Y-%m-%d)."
    echo
    "$python" bench/watch_cost.py "$(dirname "$python")/refhunt"
} | tee docs/bench-watch.md
