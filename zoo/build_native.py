"""Build the native-leak zoo extensions for one interpreter:
python zoo/build_native.py [--python PY] [--out DIR] [--what cpp|rust|all]

zoo_native_cpp (zoo/native_cpp.cpp) is compiled with g++ -O2 -g against the interpreter's own
headers; zoo_native_rs (zoo/native_rs, pyo3) is built with maturin in release mode with line
tables. Both leak native memory rather than Python objects. Prints the directory that holds
the modules.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from build import interpreter_config  # noqa: E402

CPP_SOURCE = os.path.join(HERE, "native_cpp.cpp")
RUST_CRATE = os.path.join(HERE, "native_rs")
# Shared by every interpreter: with abi3 one compilation of pyo3 serves them all.
RUST_TARGET = os.path.join(RUST_CRATE, "target")
# maturin hands pyo3 a config file named after the interpreter's version, so each switch of
# interpreter would rebuild pyo3 although an abi3-py39 build is the same for all of them. One
# fixed file (what maturin itself writes for abi3-py39) keeps the cache across interpreters.
ABI3_CONFIG = (
    "implementation=CPython\n"
    "version=3.9\n"
    "target_abi=CPython-abi3-3.9\n"
    "shared=true\n"
    "build_flags=\n"
    "suppress_build_script_link_lines=false\n"
)


def _default_out(python):
    return os.path.join(HERE, "build", "native-" + interpreter_config(python)["version"])


def build_cpp(python=sys.executable, out=None):
    """Compiles zoo_native_cpp for `python` into `out`; returns `out`."""
    config = interpreter_config(python)
    out = out or os.path.join(HERE, "build", "native-" + config["version"])
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, "zoo_native_cpp" + config["suffix"])
    command = [
        "g++", "-shared", "-fPIC", "-O2", "-g", "-Wall", "-pthread",
        "-I", config["include"], CPP_SOURCE, "-o", target,
    ]
    subprocess.run(command, check=True)
    return out


def _check_maturin(python):
    probe = subprocess.run([python, "-m", "maturin", "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise RuntimeError(
            f"maturin is not installed for {python}: "
            f"run `{python} -m pip install maturin` first ({probe.stderr.strip()})"
        )


def _abi3_capable(python):
    code = (
        "import sys, sysconfig; print(sys.implementation.name == 'cpython' and sys.version_info >= (3, 9)"
        " and not sysconfig.get_config_var('Py_GIL_DISABLED'))"
    )
    probe = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def _abi3_config_file():
    path = os.path.join(RUST_TARGET, "pyo3-config-abi3-py39.txt")
    os.makedirs(RUST_TARGET, exist_ok=True)
    try:
        with open(path) as existing:
            if existing.read() == ABI3_CONFIG:
                return path
    except FileNotFoundError:
        pass
    # Written whole then renamed: concurrent builds never read half a file.
    fd, temporary = tempfile.mkstemp(dir=RUST_TARGET, prefix=".pyo3-config-")
    with os.fdopen(fd, "w") as stream:
        stream.write(ABI3_CONFIG)
    os.replace(temporary, path)
    return path


def build_rust(python=sys.executable, out=None):
    """Builds zoo_native_rs with maturin for `python` and puts its .so into `out`; returns `out`."""
    out = out or _default_out(python)
    if shutil.which("cargo") is None:
        raise RuntimeError("cargo is not on PATH: a Rust toolchain is needed to build zoo_native_rs")
    _check_maturin(python)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, CARGO_TARGET_DIR=RUST_TARGET)
    if "PYO3_CONFIG_FILE" not in env and _abi3_capable(python):
        env["PYO3_CONFIG_FILE"] = _abi3_config_file()
    with tempfile.TemporaryDirectory(prefix="zoo-native-rs-") as wheels:
        command = [
            python, "-m", "maturin", "build", "--release", "--locked",
            "--manifest-path", os.path.join(RUST_CRATE, "Cargo.toml"),
            "--interpreter", python, "--out", wheels,
        ]
        # maturin reports on stdout; keep our stdout for the result alone.
        subprocess.run(command, check=True, env=env, stdout=sys.stderr.fileno())
        built = glob.glob(os.path.join(wheels, "*.whl"))
        if len(built) != 1:
            raise RuntimeError(f"expected one wheel from maturin, found {built}")
        with zipfile.ZipFile(built[0]) as wheel:
            libraries = [name for name in wheel.namelist()
                         if name.endswith(".so") and ".dist-info/" not in name]
            if not libraries:
                raise RuntimeError(f"no extension module in {built[0]}: {wheel.namelist()}")
            # A stale build with another suffix (say cpython-311 beside abi3) would shadow the new one.
            for stale in glob.glob(os.path.join(out, "zoo_native_rs.*so")):
                os.remove(stale)
            for name in libraries:
                with wheel.open(name) as source, open(os.path.join(out, os.path.basename(name)), "wb") as dest:
                    shutil.copyfileobj(source, dest)
    return out


def build_all(python=sys.executable, out=None):
    out = out or _default_out(python)
    build_cpp(python, out)
    build_rust(python, out)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to build for")
    parser.add_argument("--out", help="output directory (default: zoo/build/native-X.Y)")
    parser.add_argument("--what", choices=("cpp", "rust", "all"), default="all", help="which extension")
    args = parser.parse_args()
    builder = {"cpp": build_cpp, "rust": build_rust, "all": build_all}[args.what]
    print(builder(args.python, args.out))


if __name__ == "__main__":
    main()
