#!/usr/bin/env bash
# Sourced by test.sh, after setup.sh: the CPython versions of Debian unstable (sid), run from a
# Debian sid folder made with debootstrap and cached on this machine, and refhunt installed
# there from the build made on this machine. Needs root (debootstrap, mount, chroot).
#
# The folder, $REFHUNT_SID (default ~/.cache/refhunt/sid), holds one venv per interpreter in
# /opt/refhunt/X.Y. While the tests run, this machine's /tmp (and $TMPDIR) and the checkout are
# bind-mounted into it at the same absolute paths, so that every path a test uses means the
# same inside. .venv/sid-X.Y/bin/{python,refhunt,pip} are small sh wrappers: outside the folder
# they chroot into it (in the current directory) and run the venv's program there; inside it
# (the checkout is visible there) they run it directly. Their file `chroot` names the folder,
# which tells tests/conftest.py to build the zoo with the folder's compiler.

SID_PACKAGES="python3.13 python3.13-dev python3.13-venv python3.13-dbg python3.14 python3.14-dev python3.14-venv
python3.14-dbg python3.15 python3.15-dev python3.15-venv gcc g++ libc6-dev"
# At the folder's root: what it was built with (a different list rebuilds it). Its presence at
# / tells a wrapper that it already runs inside.
SID_MARKER=.refhunt-sid
SID_VENVS=/opt/refhunt

sid_dir() {
    realpath -m "${REFHUNT_SID:-${XDG_CACHE_HOME:-$HOME/.cache}/refhunt/sid}"
}

sid_manifest() {
    # shellcheck disable=SC2086
    printf 'debootstrap --variant=minbase sid: %s\n' "$(echo $SID_PACKAGES)"
}

sid_fail() {
    echo "refhunt sid: $*" >&2
    return 1
}

# The mount points at DIR or under it, deepest first (as /proc/mounts has them, \040 decoded).
sid_mounts_under() {
    local dir=$1 target
    while read -r _ target _; do
        target=$(printf '%b' "$(printf '%s' "$target" | sed 's/\\\([0-7][0-7][0-7]\)/\\0\1/g')")
        case $target in
            "$dir" | "$dir"/*) printf '%s\n' "$target" ;;
        esac
    done </proc/mounts | sort -r
}

# Unmounts everything at DIR or under it; a busy mount is detached (umount -l), which leaves
# what it shows (say this machine's /tmp) untouched. Fails if anything is still mounted there.
sid_unmount() {
    local dir=$1 target
    while IFS= read -r target; do
        umount "$target" 2>/dev/null || umount -l "$target" || true
    done < <(sid_mounts_under "$dir")
    if [ -n "$(sid_mounts_under "$dir")" ]; then
        sid_fail "still mounted under $dir: $(sid_mounts_under "$dir" | tr '\n' ' ')"
        return 1
    fi
}

# rm -rf of a folder, only once nothing is mounted in it: a bind mount of /tmp or of the
# checkout is on the same file system, so rm --one-file-system would not stop at it.
sid_remove() {
    local dir=$1
    [ -e "$dir" ] || return 0
    sid_unmount "$dir" || sid_fail "not removing $dir while something is mounted in it" || return 1
    rm -rf "$dir"
}

# Before anything else, in test.sh (with the script's path and arguments) or when run directly:
# takes the folder DIR's lock, on DIR.lock, for the whole run (one run at a time uses or
# rebuilds the folder; file descriptor 9 holds it), unmounts what a run that died left mounted
# there, and starts the script again in a mount namespace of its own when it can
# (REFHUNT_SID_NAMESPACE marks the second start, which inherits the lock): whatever it mounts in
# the folder then disappears with its last process, even one killed by SIGKILL, and no other
# process on the machine sees it. Without one, the script's trap unmounts at exit.
sid_prepare() {
    local dir=$1
    shift
    [ -z "${REFHUNT_SID_NAMESPACE:-}" ] || return 0
    [ "$(id -u)" -eq 0 ] || sid_fail "the sid folder needs root (set REFHUNT_TEST_SID= to skip it)" || return 1
    mkdir -p "$(dirname "$dir")"
    exec 9>"$dir.lock"
    if ! flock -n 9; then
        echo "refhunt sid: waiting for another run using $dir" >&2
        flock 9
    fi
    sid_unmount "$dir" || return 1
    if unshare --mount --propagation private true 2>/dev/null; then
        REFHUNT_SID_NAMESPACE=1 exec unshare --mount --propagation private bash "$@"
    fi
    echo "refhunt sid: no private mount namespace (unshare); unmounting at exit instead" >&2
}

# Builds the folder DIR unless its marker lists the same packages: into DIR.new, renamed to
# DIR once complete, so that a half-built folder is never used.
sid_build() {
    local dir=$1 new=$1.new old=$1.old mirror started
    if [ -f "$dir/$SID_MARKER" ] && [ "$(cat "$dir/$SID_MARKER")" = "$(sid_manifest)" ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || sid_fail "building the sid folder needs root (set REFHUNT_TEST_SID= to skip it)" || return 1
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    # The Debian mirror apt uses here, else Debian's own.
    mirror=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -v security | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian/}
    mkdir -p "$(dirname "$dir")"
    sid_remove "$new" || return 1
    started=$(date +%s)
    echo "== building a Debian sid folder in $dir from $mirror (about a minute)" >&2
    # shellcheck disable=SC2086
    if ! debootstrap --variant=minbase --include="$(echo $SID_PACKAGES | tr ' ' ,)" \
        sid "$new" "$mirror" >"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        sid_remove "$new"
        sid_fail "debootstrap failed; its log: $dir.log"
        return 1
    fi
    sid_unmount "$new" || return 1
    sid_manifest >"$new/$SID_MARKER"
    sid_remove "$old" || return 1
    if [ -e "$dir" ]; then
        sid_unmount "$dir" || return 1
        mv -T "$dir" "$old"
    fi
    mv -T "$new" "$dir"
    sid_remove "$old"
    echo "== built the sid folder in $(($(date +%s) - started)) s" >&2
}

# Mounts, at the folder DIR, what the tests need: /proc, /dev/pts and a fresh /dev/shm (the
# device nodes are debootstrap's), and at their own absolute paths /tmp, $TMPDIR and each
# further directory given (the checkout). Anything mounted there before is unmounted first.
sid_mount() {
    local dir=$1 path
    shift
    sid_unmount "$dir" || return 1
    for path in null zero full random urandom tty ptmx; do
        [ -c "$dir/dev/$path" ] || sid_fail "$dir/dev/$path is missing" || return 1
    done
    # pip there reaches PyPI as it does here: the same name servers, pip configuration and
    # certificate authorities.
    for path in /etc/resolv.conf /etc/pip.conf /etc/ssl/certs/ca-certificates.crt \
        ${PIP_CERT:+"$PIP_CERT"} ${SSL_CERT_FILE:+"$SSL_CERT_FILE"} \
        ${REQUESTS_CA_BUNDLE:+"$REQUESTS_CA_BUNDLE"}; do
        [ -f "$path" ] || continue
        mkdir -p "$dir$(dirname "$path")"
        rm -f "$dir$path"  # not through a symbolic link of the folder's
        cp "$path" "$dir$path"
    done
    mount -t proc proc "$dir/proc"
    mount --bind /dev/pts "$dir/dev/pts"
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$dir/dev/shm"
    for path in /tmp ${TMPDIR:+"$TMPDIR"} "$@"; do
        path=$(realpath "$path")
        case $path in
            / | "$dir" | "$dir"/*) sid_fail "will not bind-mount $path into $dir" || return 1 ;;
        esac
        # Already visible through an earlier bind (TMPDIR under /tmp, say).
        mountpoint -q "$dir$path" 2>/dev/null && continue
        mkdir -p "$dir$path"
        mount --bind "$path" "$dir$path"
        mount --make-private "$dir$path"
    done
}

# Builds the folder DIR if needed and mounts it with the checkout (the current directory) for
# the rest of the calling script, unmounted on every way out of it; the mount namespace
# (sid_prepare) covers SIGKILL.
sid_open() {
    local dir=$1
    sid_build "$dir"
    # shellcheck disable=SC2064  # the folder's path, now
    trap "sid_unmount $(printf %q "$dir")" EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    sid_mount "$dir" "$PWD"
}

# Runs COMMAND... inside the folder DIR, in the current directory.
sid_run() {
    local dir=$1
    shift
    chroot "$dir" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$PWD" "$@"
}

# Builds refhunt's wheel with the host's PYTHON (this machine's Rust toolchain; the agent and
# the CLI serve every CPython version), tagged py3-none-linux_x86_64, into the folder DIR;
# prints its path inside the folder.
sid_wheel() {
    local dir=$1 python=$2 built=${3:-} out=$1$SID_VENVS/wheels
    rm -rf "$out"
    mkdir -p "$out"
    if [ -n "$built" ]; then
        # The wheel for every CPython (scripts/build-wheel.sh), as it is.
        cp "$built" "$out/"
        echo "$SID_VENVS/wheels/$(basename "$built")"
        return
    fi
    "$python" -m pip wheel -q --no-deps . -w "$out" >&2
    "$python" -c "import wheel" 2>/dev/null || "$python" -m pip install -q wheel >&2
    "$python" -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag linux_x86_64 \
        "$out"/refhunt-*.whl >/dev/null
    (cd "$out" && ls refhunt-*-py3-none-linux_x86_64.whl) | sed "s|^|$SID_VENVS/wheels/|"
}

# Writes the wrapper FILE that runs PROGRAM (a path inside the folder DIR).
sid_wrapper() {
    local file=$1 dir=$2 program=$3 chroot
    chroot=$(command -v chroot)  # some tests run programs with PATH=/usr/bin:/bin
    cat >"$file" <<WRAPPER
#!/bin/sh
# $program in the Debian sid folder $dir (written by scripts/sid.sh).
if [ -e /$SID_MARKER ]; then
    exec $program "\$@"
fi
exec $(printf %q "$chroot") $(printf %q "$dir") /bin/sh -c 'cd "\$1" && shift && exec "\$@"' sh "\$PWD" $program "\$@"
WRAPPER
    chmod +x "$file"
}

# Runs the python of the folder DIR's venv NAME with ARGS..., in the current directory.
sid_python() {
    local dir=$1 name=$2
    shift 2
    sid_run "$dir" "$SID_VENVS/$name/bin/python" "$@"
}

# Creates the venv NAME (3.14, or 3.14d for the debug build) in the folder DIR with refhunt
# from WHEEL (a path inside the folder) and, unless it is a debug build, the test packages
# (each alone when they do not all install: one may have no wheel for a new version, and no
# build from source there); then the host's wrappers .venv/sid-NAME. Prints .venv/sid-NAME.
sid_venv() {
    local dir=$1 name=$2 wheel=$3 venv=$SID_VENVS/$2 host=.venv/sid-$2 log package missing=""
    log=$dir$venv.pip.log
    if [ ! -x "$dir$venv/bin/python" ]; then
        sid_run "$dir" "python$name" -m venv "$venv" >&2
    fi
    sid_python "$dir" "$name" -m pip install -q --upgrade pip >&2
    if [ "${name%d}" = "$name" ]; then
        # shellcheck disable=SC2086
        if ! sid_python "$dir" "$name" -m pip install -q $TEST_PACKAGES >"$log" 2>&1; then
            for package in $TEST_PACKAGES; do
                sid_python "$dir" "$name" -m pip install -q "$package" >>"$log" 2>&1 ||
                    missing="$missing $package"
            done
        fi
    else
        sid_python "$dir" "$name" -m pip install -q pytest >&2
    fi
    if [ -n "$missing" ]; then
        echo "refhunt sid: not installed for Python $name:$missing (pip's output: $log)" >&2
    fi
    sid_python "$dir" "$name" -m pip install -q --force-reinstall --no-deps "$wheel" >&2
    sid_python "$dir" "$name" -c "import refhunt, refhunt._agent; refhunt._agent.load()" >&2 ||
        sid_fail "refhunt does not load in the sid folder's Python $name" || return 1
    sid_run "$dir" "$venv/bin/refhunt" --help >/dev/null ||
        sid_fail "refhunt --help fails in the sid folder" || return 1
    mkdir -p "$host/bin"
    sid_wrapper "$host/bin/python" "$dir" "$venv/bin/python"
    sid_wrapper "$host/bin/pip" "$dir" "$venv/bin/pip"
    sid_wrapper "$host/bin/refhunt" "$dir" "$venv/bin/refhunt"
    printf '%s\n' "$dir" >"$host/chroot"
    echo "$host"
}

# Run directly, `scripts/sid.sh COMMAND...` runs COMMAND here (default: a shell) with the folder
# mounted as during the tests, in a mount namespace of its own, the venvs that test.sh made
# usable: say scripts/sid.sh .venv/sid-3.14/bin/refhunt run -- .venv/sid-3.14/bin/python -c 1
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    shopt -s inherit_errexit
    sid=$(sid_dir)
    sid_prepare "$sid" "$0" "$@"
    cd "$(dirname "$0")/.."
    [ -f "$sid/$SID_MARKER" ] || sid_fail "no sid folder at $sid: scripts/test.sh builds it" || exit 1
    trap 'sid_unmount "$sid"' EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    sid_mount "$sid" "$PWD"
    [ $# -gt 0 ] || set -- "${SHELL:-/bin/sh}"
    "$@"
fi
