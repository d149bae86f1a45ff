"""End-to-end fixtures: one refhunt installation per interpreter, and the zoo built for each.

scripts/test.sh passes the venvs in REFHUNT_TEST_VENVS; without it the tests use the venv
that runs pytest. It passes the venvs of debug builds in REFHUNT_TEST_DEBUG_VENV.

A venv whose directory holds a file `chroot` (scripts/sid.sh's, for Debian sid's interpreters)
runs in a folder of its own, where this machine's paths mean the same: its bin/python and
bin/refhunt run there from here too, but the zoo must be compiled with that folder's compiler
and headers, so the zoo builders below run there, through that python.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ZOO_SOURCE = ROOT / "zoo" / "zoo.c"
sys.path.insert(0, str(ROOT / "zoo"))
import build as zoo_build  # noqa: E402
import build_native  # noqa: E402

pytest_plugins = ["pytester"]


def _in_own_folder(python):
    """Whether `python` is the interpreter of a venv that runs in a folder of its own."""
    return (pathlib.Path(python).parent.parent / "chroot").is_file()


def _built_there(module, name):
    """module.name(python, ...), run by `python` itself when it runs in a folder of its own (its
    arguments and result are paths, the same there)."""
    original = getattr(module, name)
    code = ("import json, sys; sys.path.insert(0, %r); import %s as m; args, kwargs = json.loads(sys.argv[1]); "
            "print(json.dumps(m.%s(*args, **kwargs)))" % (str(ROOT / "zoo"), module.__name__, name))

    def build(python=sys.executable, *args, **kwargs):
        if not _in_own_folder(python):
            return original(python, *args, **kwargs)
        completed = subprocess.run([python, "-c", code, json.dumps([[python, *args], kwargs])],
                                   check=True, stdout=subprocess.PIPE, text=True)
        return json.loads(completed.stdout.splitlines()[-1])

    build.__doc__ = original.__doc__
    setattr(module, name, build)


def _built_here(module, name):
    """module.name(python, ...), built for this machine's python when `python` runs in a folder
    of its own: the Rust zoo extension is abi3 (one build serves every CPython 3.9+ that is not
    free-threaded), and cargo is here, not in the folder."""
    original = getattr(module, name)

    def build(python=sys.executable, *args, **kwargs):
        return original(sys.executable if _in_own_folder(python) else python, *args, **kwargs)

    build.__doc__ = original.__doc__
    setattr(module, name, build)


_built_there(zoo_build, "build")
_built_there(build_native, "build_cpp")
_built_here(build_native, "build_rust")


def one_line_error(completed):
    """refhunt's own errors: exit 2 and one line on stderr, never a traceback or a panic."""
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, completed.stderr
    assert len(lines) == 1 and lines[0].startswith("refhunt: error: "), completed.stderr
    assert "Traceback" not in completed.stderr and "panicked" not in completed.stderr
    return lines[0]


def marker_line(name, source=ZOO_SOURCE):
    """The line that carries `zoo:NAME` in the zoo's source."""
    for number, line in enumerate(source.read_text().splitlines(), 1):
        if "zoo:%s " % name in line or line.rstrip().endswith("zoo:%s */" % name):
            return number
    raise LookupError("no marker zoo:%s in %s" % (name, source))


def native_line(name, source):
    """The line that carries `zoo_native:NAME` in `source`, a file of the native zoo."""
    for number, line in enumerate(source.read_text().splitlines(), 1):
        if re.search(r"zoo_native:%s\b" % name, line):
            return number
    raise LookupError("no marker zoo_native:%s in %s" % (name, source))


class Result:
    def __init__(self, completed, report):
        self.rc = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.report = report

    @property
    def leaks(self):
        return self.report["leaks"]

    def at(self, filename, line):
        """Groups, leaks or listed survivors, whose creation site is filename:line."""
        suffix = "%s:%d" % (filename, line)
        groups = self.leaks + self.report.get("held", [])
        return [g for g in groups if (g["site"] or "").endswith(suffix)]

    def group_at(self, filename, line, class_="leaked"):
        groups = [g for g in self.at(filename, line) if g["class"] == class_]
        assert len(groups) == 1, "expected one %s group at %s:%d, got:\n%s" % (
            class_, filename, line, self.stderr)
        return groups[0]


class Env:
    def __init__(self, venv, tmp):
        self.venv = pathlib.Path(venv).resolve()
        self.python = str(self.venv / "bin" / "python")
        self.refhunt = str(self.venv / "bin" / "refhunt")
        out = subprocess.run([self.python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                             check=True, capture_output=True, text=True).stdout.split()
        self.version = (int(out[0]), int(out[1]))
        self.tmp = tmp
        self.zoo = zoo_build.build(self.python, str(tmp / "zoo"))
        zoo_build.build(self.python, self.zoo, source=str(ROOT / "zoo" / "holders.c"),
                        name="zoo_holders")

    def __repr__(self):
        return "Python %d.%d" % self.version

    def run(self, *command, json_report=True, env=None, refhunt_args=()):
        """`refhunt run -- COMMAND`; python is the venv's when COMMAND starts with 'python'."""
        command = [self.python if c == "python" else c for c in command]
        report_path = self.tmp / "report.json"
        if report_path.exists():
            report_path.unlink()
        args = [self.refhunt, "run", *refhunt_args]
        if json_report:
            args += ["--json", str(report_path)]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = self.zoo
        full_env.update(env or {})
        completed = subprocess.run(args + ["--", *command], capture_output=True, text=True,
                                   env=full_env, cwd=str(self.tmp), timeout=300)
        report = json.loads(report_path.read_text()) if json_report and report_path.exists() and report_path.stat().st_size else None
        return Result(completed, report)

    def python_output(self, code):
        """What this venv's python prints for `code`, run without refhunt."""
        return subprocess.run([self.python, "-c", code], check=True, capture_output=True,
                              text=True).stdout

    def script(self, name, text):
        path = self.tmp / name
        path.write_text(text)
        return str(path)


def _venvs():
    listed = os.environ.get("REFHUNT_TEST_VENVS", "").split()
    return listed or [sys.prefix]


def _debug_venvs():
    """The venvs of debug builds (sys.gettotalrefcount), for the total-refcount tests."""
    return os.environ.get("REFHUNT_TEST_DEBUG_VENV", "").split()


@pytest.fixture(scope="session", params=_venvs(), ids=lambda v: pathlib.Path(v).name)
def env(request, tmp_path_factory):
    return Env(request.param, tmp_path_factory.mktemp(pathlib.Path(request.param).name))

