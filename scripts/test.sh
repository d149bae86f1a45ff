#!/usr/bin/env bash
# Every test, on a fresh machine: Rust unit tests, then the end-to-end suite against real
# interpreters (3.11, 3.12 and 3.13 by default; set REFHUNT_TEST_VERSIONS; Debian's debug build
# python3.11d, installed with apt) and the real zoo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

echo "== cargo fmt, clippy and unit tests"
cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace -q

# g++ builds the C++ zoo extension (zoo/native_cpp.cpp) in the native-memory tests.
if ! command -v g++ >/dev/null 2>&1; then
    echo "== installing g++"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++
fi

venvs=()
for version in ${REFHUNT_TEST_VERSIONS:-3.11 3.12 3.13}; do
    echo "== installing refhunt for Python $version"
    venvs+=("$(dirname "$(dirname "$(setup_venv "$version")")")")
done

echo "== installing refhunt for Debian's debug build, python3.11d"
debug_venv="$(dirname "$(dirname "$(setup_debug_venv)")")"

echo "== end-to-end tests"
REFHUNT_TEST_VENVS="${venvs[*]}" REFHUNT_TEST_DEBUG_VENV="$debug_venv" \
    "${venvs[0]}/bin/python" -m pytest tests -q "$@"
