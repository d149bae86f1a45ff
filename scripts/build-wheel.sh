#!/usr/bin/env bash
# Builds refhunt's one wheel for every CPython (3.9 and newer, x86_64 Linux, glibc 2.28 and
# newer) and its sdist into dist/: the Rust agent and CLI are compiled by cargo-zigbuild
# against glibc 2.28's symbols (zig from PyPI's ziglang; no manylinux container), stripped,
# and packed with the Python package by scripts/wheel.py; auditwheel checks the result.
# Prints the wheel's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

# reallocarray (2.26), which the native hooks call, keeps the wheel above glibc 2.17.
glibc=2.28
platform=manylinux_${glibc/./_}_x86_64
target=x86_64-unknown-linux-gnu

python=$(find_python 3.11 2>/dev/null || command -v python3)
tools=.venv/wheel-tools
[ -x "$tools/bin/python" ] || "$python" -m venv "$tools" >&2
"$tools/bin/python" -m pip install -q --upgrade pip >&2
"$tools/bin/python" -m pip install -q ziglang cargo-zigbuild auditwheel build >&2
# cargo-zigbuild finds zig as `python3 -m ziglang`, the tools venv's.
export PATH=$PWD/$tools/bin:$PATH

echo "== compiling the agent and the CLI for glibc $glibc" >&2
cargo zigbuild --release -q --target "$target.$glibc" -p refhunt -p refhunt-agent >&2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
strip -o "$stage/refhunt" "target/$target/release/refhunt"
strip -o "$stage/agent.so" "target/$target/release/librefhunt_agent.so"

# refhunt demo's leak: the limited API of 3.9 (any CPython's headers serve), with its line
# tables, its file named as it ships (refhunt/_demo.c).
include=$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
(cd python && "../$tools/bin/python" -m ziglang cc -target "x86_64-linux-gnu.$glibc" -shared \
    -fPIC -O2 -g -fdebug-compilation-dir=. -I"$include" refhunt/_demo.c -o "$stage/_demo.abi3.so")

echo "== the sdist and the wheel" >&2
mkdir -p dist
rm -f dist/refhunt-*
"$tools/bin/python" -m build -q --sdist -o dist . >&2
wheel=$("$tools/bin/python" scripts/wheel.py --cli "$stage/refhunt" --agent "$stage/agent.so" \
    --demo "$stage/_demo.abi3.so" \
    --sdist dist/refhunt-*.tar.gz --platform "$platform" --out dist)
"$tools/bin/auditwheel" show "$wheel" >&2
echo "$PWD/$wheel"
