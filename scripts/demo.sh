#!/usr/bin/env bash
# The seed scenario, end to end: build the zoo extension, leak a million ints in it, watch the
# memory jump (notice), let refhunt name the C line that made the ints with the counters and
# "not collectable" (locate, measure), and confirm the leak by repetition with its rate.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

version=${REFHUNT_DEMO_VERSION:-3.11}
echo "== installing refhunt for Python $version (first run builds the Rust code)"
python=$(setup_venv "$version")
zoo=$("$python" zoo/build.py --out ".venv/zoo-$version")
echo "== built the zoo extension in $zoo"

echo "== notice: refhunt watch PID, while the program leaks a million ints after 1 s"
PYTHONPATH=$zoo "$python" -c "import time, zoo; time.sleep(1); zoo.leakNewRefs(1000, 1000000); time.sleep(2)" &
pid=$!
sleep 0.5  # as in the seed, the process is already running when it is watched
"$(dirname "$python")/refhunt" watch "$pid" --interval 0.25 --plot .venv/demo-watch.svg
wait
echo "== the memory curve: .venv/demo-watch.svg"

echo "== locate: refhunt run -- python -c 'import zoo; zoo.leakNewRefs(1000, 1000000)'"
PYTHONPATH=$zoo "$(dirname "$python")/refhunt" run --json .venv/demo-report.json -- \
    "$python" -c "import zoo; zoo.leakNewRefs(1000, 1000000)"
echo "== the same report as JSON: .venv/demo-report.json"

echo "== measure: repeat the call, as regrtest -R does: a leak grows in every run"
PYTHONPATH=$zoo "$(dirname "$python")/refhunt" run --repeat 4 --warmup 5 -- \
    "$python" -m refhunt.call zoo:leakNewRefs 1000 1000
