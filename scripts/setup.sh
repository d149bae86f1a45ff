# Sourced by demo.sh and test.sh: finds interpreters and installs refhunt into a venv per
# Python version, under .venv/X.Y. Nothing here depends on this machine's paths.

# What the end-to-end tests import besides refhunt. simplejson: a real C extension whose wheel
# ships its own test suite. The others are the C extensions of the corpus of real programs
# (tests/corpus; binary wheels, PyYAML's with libyaml).
TEST_PACKAGES="pytest pytest-xdist simplejson orjson PyYAML lxml Pillow regex msgpack markupsafe psutil zstandard"

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

# Creates venv VENV for interpreter PYTHON, with refhunt and the test tools installed; prints
# the venv's python.
install_venv() {
    local python=$1 venv=$2
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    # maturin builds the Rust zoo extension (zoo/native_rs) in the native-memory tests.
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q $TEST_PACKAGES maturin >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps . >&2
    echo "$venv/bin/python"
}

# Creates .venv/X.Y with refhunt and the test tools installed; prints the venv's python.
setup_venv() {
    local version=$1 python
    python=$(find_python "$version") || return 1
    install_venv "$python" ".venv/$version"
}

# Installs Debian packages with apt when FILE is missing.
apt_install_for() {
    local file=$1 sudo=""
    shift
    [ -e "$file" ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

# Debian's own python3.X (/usr/bin/python3.X; bookworm's 3.11 links libpython statically):
# creates .venv/system-X.Y like setup_venv does and prints the venv's python.
setup_system_venv() {
    local version=$1
    apt_install_for "/usr/bin/python$version" "python$version"
    apt_install_for "/usr/lib/python$version/ensurepip/__main__.py" "python$version-venv"
    install_venv "/usr/bin/python$version" ".venv/system-$version"
}

# Debian's debug build of CPython X.Y (sys.gettotalrefcount, /usr/bin/python3.Xd), installed
# with apt when missing; creates .venv/X.Yd with refhunt and prints the venv's python.
setup_debug_venv() {
    local version=${1:-3.11} python venv
    python=/usr/bin/python${version}d venv=.venv/${version}d
    apt_install_for "$python" "python$version-dbg"
    apt_install_for "/usr/lib/python$version/ensurepip/__main__.py" "python$version-venv"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q pytest >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps . >&2
    echo "$venv/bin/python"
}
