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
    "$venv/bin/python" -m pip install -q pytest >&2
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps . >&2
    echo "$venv/bin/python"
}
