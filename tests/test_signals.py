"""Signals under `refhunt run`: what is sent to refhunt reaches the program, refhunt stays to
report, never leaves the program orphaned, and ends by the signal that ended the program."""
import os
import signal
import subprocess
import time

from conftest import marker_line

PROGRAM = """\
import os, signal, sys, time
import zoo
signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
zoo.leakNewRefs(5000, 100)
print(os.getpid(), flush=True)
time.sleep(60)
"""


def _start(env, script, **kwargs):
    full_env = dict(os.environ, PYTHONPATH=env.zoo)
    return subprocess.Popen([env.refhunt, "run", "--", env.python, script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=str(env.tmp),
                            **kwargs)


def _reports_the_leak(stderr):
    return "100 int objects" in stderr and "zoo.c:%d" % marker_line("new_ref") in stderr


def test_sigterm_to_the_process_group_reports_and_keeps_the_exit_code(env):
    """As `timeout` sends it: refhunt and the program both get it; the program exits."""
    run = _start(env, env.script("term.py", PROGRAM), start_new_session=True)
    run.stdout.readline()
    os.killpg(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 3, err
    assert _reports_the_leak(err), err


def test_sigterm_to_refhunt_alone_is_passed_on(env):
    run = _start(env, env.script("term.py", PROGRAM))
    run.stdout.readline()
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 3, err
    assert _reports_the_leak(err), err


def test_a_program_killed_by_a_signal_ends_refhunt_by_it(env):
    script = env.script("selfkill.py", "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    run = _start(env, script)
    out, err = run.communicate(timeout=30)
    assert run.returncode == -signal.SIGTERM, err
    assert "there is no report" in err


def _gone_or_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_program_dies_with_refhunt(env):
    run = _start(env, env.script("term.py", PROGRAM))
    child = int(run.stdout.readline())
    run.kill()
    run.wait(timeout=10)
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(child), "the program outlived refhunt"
