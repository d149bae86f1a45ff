#!/usr/bin/env bash
# Every test, on a fresh machine: Rust unit tests, then the end-to-end suite against real
# interpreters and the real zoo. Arguments are pytest's (say tests/test_locate.py -x).
#
# Which interpreters (each variable a space-separated list; empty skips that kind):
#   REFHUNT_TEST_VERSIONS  pyenv's newest X.Y, else pythonX.Y on PATH, in .venv/X.Y
#                          (default "3.11 3.12 3.13")
#   REFHUNT_TEST_SYSTEM    Debian's own /usr/bin/pythonX.Y (bookworm's 3.11.2, libpython linked
#                          statically), installed with apt, in .venv/system-X.Y (default "3.11");
#                          it runs tests/test_distributions.py only
#   REFHUNT_TEST_DEBUG     Debian's debug build /usr/bin/pythonX.Yd, installed with apt, in
#                          .venv/X.Yd, for the total-refcount tests (default "3.11")
#   REFHUNT_TEST_SID       Debian unstable's python3.X, run in a Debian sid folder built once with
#                          debootstrap and cached (scripts/sid.sh; needs root), in .venv/sid-X.Y
#                          (default "3.13 3.14 3.15"; 3.14 brings its debug build, 3.14d, to the
#                          total-refcount tests)
#   REFHUNT_SID            where the sid folder is cached (default ~/.cache/refhunt/sid)
#   REFHUNT_TEST_WHEEL     the wheel for every CPython to test; built by scripts/build-wheel.sh
#                          when unset, and not tested when empty (the sid folder then gets a
#                          wheel of this machine's pip)
#   REFHUNT_TEST_CARGO     0 skips cargo fmt, clippy and the unit tests (for quick iterations;
#                          CI runs everything)
# pytest gets the venvs in REFHUNT_TEST_VENVS, those of debug builds in REFHUNT_TEST_DEBUG_VENV
# and the machine's own interpreters in REFHUNT_TEST_STATIC_VENV, each a space-separated list.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) ends the script too
. "$(dirname "$0")/sid.sh"
sid_versions=${REFHUNT_TEST_SID-3.13 3.14 3.15}
if [ -n "$sid_versions" ]; then
    sid=$(sid_dir)
    sid_prepare "$sid" "$0" "$@"
fi
cd "$(dirname "$0")/.."
. scripts/setup.sh

# The folder first: the layout probe among the unit tests reads its 3.14 and 3.15 headers.
if [ -n "$sid_versions" ]; then
    sid_open "$sid"
    export REFHUNT_SID=$sid
fi

if [ "${REFHUNT_TEST_CARGO:-1}" != 0 ]; then
    echo "== cargo fmt, clippy and unit tests"
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -q -- -D warnings
    cargo test --workspace -q
fi

# g++ builds the C++ zoo extension (zoo/native_cpp.cpp) in the native-memory tests.
if ! command -v g++ >/dev/null 2>&1; then
    echo "== installing g++"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++
fi

# Chromium opens the HTML report in tests/test_html.py.
if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

venvs=()
for version in ${REFHUNT_TEST_VERSIONS-3.11 3.12 3.13}; do
    echo "== installing refhunt for Python $version"
    venvs+=("$(dirname "$(dirname "$(setup_venv "$version")")")")
done
# Up to 3.12 a statically linked interpreter gives no creation events, so the whole suite does
# not hold there (README, known limits): the machine's own interpreters run
# tests/test_distributions.py, with the sid folder's.
static_venvs=()
for version in ${REFHUNT_TEST_SYSTEM-3.11}; do
    echo "== installing refhunt for Debian's python$version"
    static_venvs+=("$(dirname "$(dirname "$(setup_system_venv "$version")")")")
done
# pytest runs on this machine, from the first of these venvs (or Debian's python3.11 when
# there is none): it builds the Rust zoo extension with maturin, and refhunt's wheel for the
# sid folder.
if [ ${#venvs[@]} -gt 0 ]; then
    driver=${venvs[0]}/bin/python
else
    echo "== installing refhunt for Debian's python3.11, to run pytest"
    driver=$(setup_system_venv 3.11)
fi

# The driver validates SARIF logs and report JSON against their schemas (tests/test_ci.py).
"$driver" -m pip install -q jsonschema >&2

debug_venvs=()
for version in ${REFHUNT_TEST_DEBUG-3.11}; do
    echo "== installing refhunt for Debian's debug build, python${version}d"
    debug_venvs+=("$(dirname "$(dirname "$(setup_debug_venv "$version")")")")
done

# The wheel for every CPython: tests/test_wheel.py installs it into fresh venvs, and the sid
# folder's interpreters run the suite from it.
if [ "${REFHUNT_TEST_WHEEL-unset}" = unset ]; then
    echo "== building refhunt's wheel for every CPython (scripts/build-wheel.sh)"
    REFHUNT_TEST_WHEEL=$(bash scripts/build-wheel.sh)
fi
export REFHUNT_TEST_WHEEL

if [ -n "$sid_versions" ]; then
    started=$(date +%s)
    echo "== installing refhunt's wheel in the sid folder"
    wheel=$(sid_wheel "$sid" "$driver" "$REFHUNT_TEST_WHEEL")
    for version in $sid_versions; do
        echo "== installing refhunt for Debian sid's python$version"
        venvs+=("$(sid_venv "$sid" "$version" "$wheel")")
        if [ "$version" = 3.14 ]; then
            echo "== installing refhunt for Debian sid's debug build, python3.14d"
            debug_venvs+=("$(sid_venv "$sid" 3.14d "$wheel")")
        fi
    done
    echo "== installed refhunt in the sid folder in $(($(date +%s) - started)) s"
fi

# The whole suite, unless the arguments name tests (a file, a directory, FILE::TEST).
selection=(tests)
for argument in "$@"; do
    [ -e "${argument%%::*}" ] && selection=()
done
echo "== end-to-end tests"
REFHUNT_TEST_VENVS="${venvs[*]}" REFHUNT_TEST_DEBUG_VENV="${debug_venvs[*]}" \
    REFHUNT_TEST_STATIC_VENV="${static_venvs[*]}" \
    "$driver" -m pytest "${selection[@]}" -q "$@"
