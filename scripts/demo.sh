#!/usr/bin/env bash
# The seed scenario, end to end: build the zoo extension, leak a million ints in it, and let
# refhunt name the C line that made them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

version=${REFHUNT_DEMO_VERSION:-3.11}
echo "== installing refhunt for Python $version (first run builds the Rust code)"
python=$(setup_venv "$version")
zoo=$("$python" zoo/build.py --out ".venv/zoo-$version")
echo "== built the zoo extension in $zoo"

echo "== locate: refhunt run -- python -c 'import zoo; zoo.leakNewRefs(1000, 1000000)'"
PYTHONPATH=$zoo "$(dirname "$python")/refhunt" run --json .venv/demo-report.json -- \
    "$python" -c "import zoo; zoo.leakNewRefs(1000, 1000000)"
echo "== the same report as JSON: .venv/demo-report.json"
