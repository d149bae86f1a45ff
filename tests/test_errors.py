"""Bad input: one clear line and a non-zero exit, never a traceback or a panic."""
import os
import subprocess

import pytest

from conftest import one_line_error


def _refhunt(env, *args):
    return subprocess.run([env.refhunt, *args], capture_output=True, text=True, cwd=str(env.tmp))


def test_command_that_is_not_python(env):
    assert "ls is not a Python" in one_line_error(_refhunt(env, "run", "--", "ls", "-l"))


def test_command_not_found(env):
    assert "command not found" in one_line_error(_refhunt(env, "run", "--", "no-such-command-xyz"))


def test_missing_script(env):
    assert "script not found: missing.py" in one_line_error(_refhunt(env, "run", "--", env.python, "missing.py"))


def test_unwritable_json_path(env):
    line = one_line_error(_refhunt(env, "run", "--json", "/nonexistent-dir/r.json", "--", env.python, "-c", "pass"))
    assert "cannot write /nonexistent-dir/r.json" in line


def test_corrupt_capture(env, tmp_path):
    bad = tmp_path / "bad.capture"
    bad.write_text("{ not json")
    assert "is not a refhunt capture" in one_line_error(_refhunt(env, "report", str(bad)))


def test_capture_renders_again(env, tmp_path):
    capture = tmp_path / "run.capture"
    r = env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 10)", refhunt_args=["-o", str(capture)])
    assert r.rc == 0
    again = _refhunt(env, "report", str(capture))
    assert again.returncode == 0 and "10 int objects" in again.stdout


def test_repeat_without_a_window(env):
    line = one_line_error(_refhunt(env, "run", "--repeat", "4", "--", env.python, "-c", "pass"))
    assert "--repeat needs a window to repeat" in line


def test_json_and_capture_naming_one_file(env):
    line = one_line_error(_refhunt(env, "run", "--json", "x.json", "-o", "./x.json", "--", env.python, "-c", "pass"))
    assert "--json and -o name the same file" in line


def test_an_argument_that_is_not_utf8_keeps_the_report(env):
    """Bytes that are not UTF-8 reach Python as lone surrogates, which JSON cannot carry."""
    completed = subprocess.run([env.refhunt.encode(), b"run", b"--", env.python.encode(), b"-c",
                                b"print('ok')", b"\xff"], capture_output=True, cwd=str(env.tmp))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"ok\n"
    assert b"leak group" in completed.stderr and b"no report" not in completed.stderr


@pytest.mark.parametrize("flag", ["-I", "-E", "-S", "-uS"])
def test_python_options_that_skip_the_site_hooks_are_refused_before_the_program_runs(env, flag):
    completed = _refhunt(env, "run", "--", env.python, flag, "-c", "print('ran')")
    assert "turns off the site hooks" in one_line_error(completed)
    assert completed.stdout == ""


@pytest.mark.parametrize("pythonpath", [None, "", ":{zoo}", "{zoo}::"])
def test_the_program_sees_pythonpath_exactly_as_set(env, pythonpath):
    """Empty entries mean the current directory to Python: the program and its children keep
    them; an unset PYTHONPATH stays unset."""
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        full_env["PYTHONPATH"] = pythonpath.format(zoo=env.zoo)
    code = "import os; print(repr(os.environ.get('PYTHONPATH')))"
    completed = subprocess.run([env.refhunt, "run", "--", env.python, "-c", code], capture_output=True,
                               text=True, env=full_env, cwd=str(env.tmp))
    assert completed.returncode == 0, completed.stderr
    expected = None if pythonpath is None else pythonpath.format(zoo=env.zoo)
    assert completed.stdout.strip() == repr(expected)
