"""End-to-end fixtures: one refhunt installation per interpreter, and the zoo built for each.

scripts/test.sh passes the venvs in REFHUNT_TEST_VENVS; without it the tests use the venv
that runs pytest.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ZOO_SOURCE = ROOT / "zoo" / "zoo.c"
sys.path.insert(0, str(ROOT / "zoo"))
import build as zoo_build  # noqa: E402

pytest_plugins = ["pytester"]


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

    def script(self, name, text):
        path = self.tmp / name
        path.write_text(text)
        return str(path)


def _venvs():
    listed = os.environ.get("REFHUNT_TEST_VENVS", "").split()
    return listed or [sys.prefix]


@pytest.fixture(scope="session", params=_venvs(), ids=lambda v: pathlib.Path(v).name)
def env(request, tmp_path_factory):
    return Env(request.param, tmp_path_factory.mktemp(pathlib.Path(request.param).name))

