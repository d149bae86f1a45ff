#!/usr/bin/env bash
# refhunt beside valgrind, memray and tracemalloc on CPython 3.11 and 3.13, and on Debian sid's
# 3.14 beside memray's object-lifetime tracking (3.13.3 and later); writes docs/benchmarks.md.
# Installs refhunt and memray into .venv/X.Y (and the sid folder's venv, as scripts/test.sh
# makes it; needs root); valgrind must be on PATH.
#   REFHUNT_BENCH_VERSIONS  pyenv's or PATH's CPythons (default "3.11 3.13")
#   REFHUNT_BENCH_SID       Debian sid's (default "3.14"; empty skips the sid folder)
#   REFHUNT_BENCH_RUNS      interleaved rounds (default 3)
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/../scripts/sid.sh"
sid_versions=${REFHUNT_BENCH_SID-3.14}
if [ -n "$sid_versions" ]; then
    sid=$(sid_dir)
    sid_prepare "$sid" "$0" "$@"
fi
cd "$(dirname "$0")/.."
. scripts/setup.sh

venvs=()
for version in ${REFHUNT_BENCH_VERSIONS:-3.11 3.13}; do
    python=$(setup_venv "$version")
    "$python" -m pip install -q memray pytest-memray >&2
    venvs+=(--venv "$(dirname "$(dirname "$python")")")
done
if [ -n "$sid_versions" ]; then
    sid_open "$sid"
    wheel=$(sid_wheel "$sid" "$python")
    for version in $sid_versions; do
        venv=$(sid_venv "$sid" "$version" "$wheel")
        "$venv/bin/pip" install -q memray pytest-memray >&2
        venvs+=(--sid-venv "$venv")
    done
fi
"$python" bench/run.py "${venvs[@]}" --runs "${REFHUNT_BENCH_RUNS:-3}"
