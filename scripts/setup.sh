# Sourced by demo.sh and test.sh: finds interpreters and installs refhunt into a venv per
# Python version, under .venv/X.Y. Nothing here depends on this machine's paths.

# The interpreter for version X.Y: pyenv's newest X.Y.*, else pythonX.Y on PATH.
find_python() {
    local version=$1 root candidate found=""
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
        for candidate in "$root"/versions/"$version".*/bin/python"$version"; do
            [ -x "$candidate" ] && found=$candidate
        done
    fi
    if [ -z "$found" ]; then
        found=$(command -v "python$version" || true)
    fi
    if [ -z "$found" ]; then
        echo "refhunt setup: no Python $version found on PATH or in pyenv" >&2
        return 1
    fi
    echo "$found"
}

# Creates .venv/X.Y with refhunt and the test tools installed; prints the venv's python.
setup_venv() {
    local version=$1 python venv
    python=$(find_python "$version") || return 1
    venv=.venv/$version
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    # simplejson: a real C extension whose wheel ships its own test suite. The others are the
    # C extensions of the corpus of real programs (tests/corpus; binary wheels, PyYAML's with
    # libyaml).
    # maturin builds the Rust zoo extension (zoo/native_rs) in the native-memory tests.
    "$venv/bin/python" -m pip install -q pytest simplejson orjson PyYAML lxml Pillow regex \
        msgpack markupsafe psutil zstandard maturin >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps . >&2
    echo "$venv/bin/python"
}

# Debian's debug build of CPython 3.11 (sys.gettotalrefcount), installed with apt when missing;
# creates .venv/3.11d with refhunt and prints the venv's python.
setup_debug_venv() {
    local python=/usr/bin/python3.11d venv=.venv/3.11d sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    if [ ! -x "$python" ] || [ ! -f /usr/lib/python3.11/ensurepip/__main__.py ]; then
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
            python3.11-dbg python3.11-venv >&2
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q pytest >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps . >&2
    echo "$venv/bin/python"
}
