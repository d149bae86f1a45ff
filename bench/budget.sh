#!/usr/bin/env bash
# Each feature's share of refhunt's cost at this checkout and at a base commit (default: the
# commit before issue 16's wave), side by side in one run on one CPython (default 3.11); prints
# a Markdown table for docs/benchmarks.md. The base is built from a git worktree into
# .venv/budget-BASE-X.Y, this checkout into .venv/X.Y.
#   REFHUNT_BUDGET_BASE     the base commit (default e54c948)
#   REFHUNT_BUDGET_VERSION  the CPython (default 3.11)
#   REFHUNT_BUDGET_RUNS     interleaved rounds (default 5)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
. scripts/setup.sh

base=${REFHUNT_BUDGET_BASE:-e54c948}
version=${REFHUNT_BUDGET_VERSION:-3.11}
interpreter=$(find_python "$version")
head_venv=$(dirname "$(dirname "$(setup_venv "$version")")")
base_venv=.venv/budget-$base-$version
if [ ! -x "$base_venv/bin/refhunt" ]; then
    tree=$(mktemp -d)
    trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
    git worktree add -q --detach "$tree" "$base"
    "$interpreter" -m venv "$base_venv"
    # shellcheck disable=SC2086
    "$base_venv/bin/python" -m pip install -q $TEST_PACKAGES "$tree" >&2
fi
"$head_venv/bin/python" bench/budget.py --venv "$base=$base_venv" --venv "HEAD=$head_venv" \
    --runs "${REFHUNT_BUDGET_RUNS:-5}"
