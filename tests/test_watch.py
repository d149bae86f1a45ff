"""`refhunt watch` against real processes: a step leak from the zoo, steady growth, churn."""
import csv
import json
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import Env, _venvs, one_line_error

CHANGE = re.compile(r"^\s+([\d.]+) \[MB\]\s+([+-][\d.]+) \[MB\]$", re.M)
MB = 1e6

STEP = """
import time, zoo
time.sleep(1)
zoo.leakNewRefs(5000, 1000000)
time.sleep(2)
"""

# About 1 MB every 0.1 s for 3 s; the bytes are written, so they count in RSS.
STEADY = """
import time
keep = []
start = time.monotonic()
while time.monotonic() - start < 3:
    keep.append(bytearray(b"x" * 1_000_000))
    time.sleep(0.1)
print(len(keep) * 1_000_000 / (time.monotonic() - start))
"""

CHURN = """
import time
start = time.monotonic()
while time.monotonic() - start < 3:
    tables = [list(range(1000)) for _ in range(300)]
    buffer = bytearray(b"y" * 30_000_000)
    del tables, buffer
    time.sleep(0.15)  # freed most of the time, so a sample rarely lands on a peak
"""


@pytest.fixture(scope="module")
def one_env(tmp_path_factory):
    """watch does not depend on the interpreter: one is enough."""
    # A venv of this machine: one run in a folder of its own is entered through chroot, which
    # the unprivileged user of some tests may not call.
    venv = next((v for v in _venvs() if not (pathlib.Path(v) / "chroot").is_file()), _venvs()[0])
    return Env(venv, tmp_path_factory.mktemp("watch"))


def _start(env, code):
    process = subprocess.Popen([env.python, "-c", code], env=dict(os.environ, PYTHONPATH=env.zoo),
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.1)  # let the interpreter exist before it is watched
    return process


def _watch(env, *args, **kwargs):
    return subprocess.run([env.refhunt, "watch", *args], capture_output=True, text=True,
                          cwd=str(env.tmp), timeout=60, **kwargs)


def _field(stdout, name):
    return re.search(r"^%s\s+(.*)$" % name, stdout, re.M).group(1)


def test_a_step_leak_is_named_with_its_time_and_size(one_env, tmp_path):
    process = _start(one_env, STEP)
    out = {ext: tmp_path / ("w." + ext) for ext in ("json", "csv", "svg")}
    watched = _watch(one_env, str(process.pid), "--interval", "0.2", "--json", str(out["json"]),
                     "--csv", str(out["csv"]), "--plot", str(out["svg"]))
    process.wait()
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith("PID %d (python" % process.pid) and "faults" in lines[0]
    changes = [float(c) for _, c in CHANGE.findall(watched.stdout)]
    assert max(changes) >= 30, watched.stdout
    assert "PID %d (python" % process.pid in watched.stdout and " exited" in watched.stdout

    size, when = re.match(r"\+([\d.]+) MB at ([\d.]+) s", _field(watched.stdout, "largest step")).groups()
    assert float(size) >= 30
    assert 0.8 <= float(when) <= 1.8, watched.stdout
    assert _field(watched.stdout, "verdict").startswith("step growth")

    # Every printed sample is in the JSON and the CSV.
    report = json.loads(out["json"].read_text())
    printed = len(CHANGE.findall(watched.stdout)) + 1
    assert len(report["samples"]) == printed
    assert report["summary"]["verdict"] == "step_growth"
    assert all(s["uss"] and s["pss"] for s in report["samples"])
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == printed
    assert [int(r["rss"]) for r in rows] == [s["rss"] for s in report["samples"]]
    svg = out["svg"].read_text()
    assert svg.startswith("<svg") and "<polyline" in svg and re.search(r"\+3\d\.\d MB at", svg)


def test_steady_growth_and_its_slope(one_env):
    watched = _watch(one_env, "--interval", "0.2", "--", one_env.python, "-c", STEADY)
    assert watched.returncode == 0, watched.stderr
    slope = float(re.match(r"([+-][\d.]+) MB/min", _field(watched.stdout, "steady slope")).group(1))
    assert _field(watched.stdout, "verdict").startswith("steady growth"), watched.stdout
    # The program prints how fast it really grew, in bytes per second.
    true_rate = next(float(l) for l in watched.stdout.splitlines() if re.fullmatch(r"[\d.e+]+", l))
    truth = true_rate * 60 / MB
    assert abs(slope - truth) <= 0.2 * truth, (slope, truth)


def test_allocate_and_free_is_stable(one_env):
    # 0.1 s samples: the end window holds five, which all land on a peak about once in 1,000.
    watched = _watch(one_env, "--interval", "0.1", "--", one_env.python, "-c", CHURN)
    assert watched.returncode == 0, watched.stderr
    assert _field(watched.stdout, "verdict").startswith("stable"), watched.stdout


def test_a_started_command_keeps_its_exit_code(one_env):
    watched = _watch(one_env, "--interval", "0.05", "--", one_env.python, "-c",
                     "import time, sys; time.sleep(0.3); sys.exit(3)")
    assert watched.returncode == 3
    assert re.search(r"PID \d+ \(python[\d.]*\) exited with code 3", watched.stdout), watched.stdout


def test_sigterm_ends_with_the_summary(one_env, tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        watch = subprocess.Popen([one_env.refhunt, "watch", str(sleeper.pid), "--interval", "0.1",
                                  "--json", str(tmp_path / "w.json")], stdout=subprocess.PIPE, text=True)
        time.sleep(0.6)
        watch.send_signal(signal.SIGTERM)
        stdout, _ = watch.communicate(timeout=10)
    finally:
        sleeper.kill()
    assert watch.returncode == 0
    assert "watch ended by SIGTERM; PID %d (sleep) is still running" % sleeper.pid in stdout
    assert _field(stdout, "verdict").startswith("stable")
    assert len(json.loads((tmp_path / "w.json").read_text())["samples"]) >= 3


def test_on_a_terminal_ctrl_c_pauses_enter_resumes_and_a_second_ctrl_c_ends(one_env):
    sleeper = subprocess.Popen(["sleep", "30"])
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(one_env.refhunt, [one_env.refhunt, "watch", str(sleeper.pid), "--interval", "0.1"])
    output = b""

    def read_for(seconds):
        nonlocal output
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    return

    try:
        read_for(0.5)
        os.write(fd, b"\x03")
        read_for(0.5)
        paused_at = len(output)
        read_for(0.4)
        assert len(output) == paused_at, "no sample is printed while paused"
        os.write(fd, b"\n")
        read_for(0.5)
        os.write(fd, b"\x03")
        read_for(0.2)
        os.write(fd, b"\x03")
        read_for(0.5)
        _, status = os.waitpid(pid, 0)
    finally:
        sleeper.kill()
    text = output.decode()
    assert os.waitstatus_to_exitcode(status) == 0
    assert text.count("(paused: Enter resumes, Ctrl-C ends)") == 2
    assert "(resumed)" in text
    assert text.index("(resumed)") < text.rindex("+0.000 [MB]")
    assert "watch ended by Ctrl-C" in text and "verdict" in text


@pytest.mark.parametrize("args, says", [
    (["4194305"], "no process with PID 4194305"),
    (["12ab"], '"12ab" is not a process ID'),
    (["1", "--interval", "0"], "--interval must be greater than zero"),
    (["1", "--interval", "-0.5"], "--interval must be greater than zero"),
    (["1", "--interval", "soon"], '--interval "soon" is not a time'),
    (["1", "--interval", "1e20"], "--interval must be at most a week"),
    (["1", "--duration", "9999999"], "--duration must be at most a week"),
    (["--", "no-such-command-xyz"], "cannot start no-such-command-xyz"),
])
def test_bad_input(one_env, args, says):
    assert says in one_line_error(_watch(one_env, *args))


def test_the_duration_ends_the_watch_inside_a_long_interval(one_env):
    started = time.monotonic()
    completed = _watch(one_env, str(os.getpid()), "--interval", "10", "--duration", "1")
    assert completed.returncode == 0, completed.stderr
    assert time.monotonic() - started < 5
    assert "verdict" in completed.stdout


def test_a_process_the_user_may_not_read(one_env):
    refhunt = one_env.refhunt
    prefix = []
    if (one_env.venv / "chroot").is_file():
        pytest.skip("%s is entered through chroot, which an unprivileged user may not call" % one_env)
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without setpriv to drop privileges")
        prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        # The unprivileged user must be able to reach the binary itself.
        public = pathlib.Path(tempfile.mkdtemp(prefix="refhunt-watch-"))
        public.chmod(0o755)
        refhunt = shutil.copy(refhunt, public / "refhunt")
    try:
        line = one_line_error(subprocess.run(prefix + [refhunt, "watch", "1", "--duration", "1"],
                                              capture_output=True, text=True, timeout=30))
    finally:
        if prefix:
            shutil.rmtree(public)
    assert "permission denied" in line and "PID 1" in line
