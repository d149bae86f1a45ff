"""Build the zoo extension for one interpreter: python zoo/build.py [--python PY] [--out DIR]

Compiles with gcc against the interpreter's own headers, at -O2 with DWARF, as a typical
extension is built. Prints the directory that holds the module.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def interpreter_config(python):
    code = (
        "import json, sysconfig; print(json.dumps({"
        "'include': sysconfig.get_paths()['include'],"
        "'suffix': sysconfig.get_config_var('EXT_SUFFIX'),"
        "'version': sysconfig.get_python_version()}))"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def build(python=sys.executable, out=None, source=os.path.join(HERE, "zoo.c"), name="zoo", extra_flags=()):
    """Compiles `source` into module `name` for `python`; returns the output directory."""
    config = interpreter_config(python)
    out = out or os.path.join(HERE, "build", config["version"])
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, name + config["suffix"])
    command = [
        "gcc", "-shared", "-fPIC", "-O2", "-g", "-Wall", "-pthread",
        "-I", config["include"], *extra_flags, source, "-o", target,
    ]
    subprocess.run(command, check=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to build for")
    parser.add_argument("--out", help="output directory (default: zoo/build/X.Y)")
    args = parser.parse_args()
    print(build(args.python, args.out))


if __name__ == "__main__":
    main()
