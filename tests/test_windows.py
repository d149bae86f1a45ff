"""Windows inside windows: `track()` in `track()`, `check()` in `track()`, both under
`refhunt run`, and `check()` inside a test that `pytest --refhunt` repeats. Each window
reports its own objects, and the enclosing one still counts everything made in it."""
import os
import subprocess
import textwrap

from conftest import marker_line

NEW_REF = marker_line("new_ref")


def run_plain(env, name, code):
    """Runs `code` with the venv's python, without `refhunt run`; returns its stdout lines."""
    completed = subprocess.run([env.python, env.script(name, textwrap.dedent(code))],
                               capture_output=True, text=True, cwd=str(env.tmp), timeout=300,
                               env={**os.environ, "PYTHONPATH": env.zoo})
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.splitlines()


# Leaked objects per type, summed over the groups (one group per Python line).
TOTALS = """
def totals(report):
    out = {}
    for g in report.leaks:
        out[g.type_name] = out.get(g.type_name, 0) + g.count
    return sorted(out.items())
"""


def test_a_track_inside_a_track(env):
    out = run_plain(env, "nested_track.py", TOTALS + """
import refhunt, zoo
with refhunt.track() as outer:
    zoo.leakNewRefs(5000, 100)
    with refhunt.track() as inner:
        zoo.leakNewRefs(6000, 25)
        zoo.leak_float(1.5, 7)
    zoo.leak_float(2.5, 3)
print(totals(inner.report))
print(totals(outer.report))
print(sorted({g.site.rsplit("/", 1)[-1] for g in inner.report.leaks if g.type_name == "int"}))
""")
    assert out[0] == "[('float', 7), ('int', 25)]"
    assert out[1] == "[('float', 10), ('int', 125)]"
    assert out[2] == "['zoo.c:%d']" % NEW_REF


def test_a_check_inside_a_track_counts_every_call_in_the_track(env):
    out = run_plain(env, "check_in_track.py", TOTALS + """
import refhunt, zoo
calls = [0]
def leaky():
    calls[0] += 1
    zoo.leakNewRefs(5000, 10)
with refhunt.track() as outer:
    report = refhunt.check(leaky)
[group] = report.leaks
print(group.type_name, group.count, group.per_call, group.runs)
print(calls[0], totals(outer.report))
""")
    assert out[0] == "int 40 10.0 [10, 10, 10, 10]"
    calls = int(out[1].split()[0])
    assert calls >= 9  # 5 warm-ups, 4 measured calls, and a holder run if one was wanted
    assert out[1] == "%d [('int', %d)]" % (calls, 10 * calls)


def test_an_exception_leaving_an_inner_window_closes_it(env):
    out = run_plain(env, "raising_inner.py", TOTALS + """
import refhunt, zoo
def fails():
    zoo.leakNewRefs(5000, 4)
    raise KeyError("inner")
with refhunt.track() as outer:
    try:
        refhunt.check(fails)
    except KeyError:
        pass
    zoo.leakNewRefs(5000, 6)
print(totals(outer.report))
""")
    # The check's first warm-up raised: its window never opened.
    assert out[0] == "[('int', 10)]"


def test_windows_under_refhunt_run_and_the_run_counts_them_all(env):
    script = env.script("under_run.py", textwrap.dedent(TOTALS + """
import refhunt, zoo
calls = [0]
def leaky():
    calls[0] += 1
    zoo.leakNewRefs(5000, 10)
zoo.leakNewRefs(5000, 300)
report = refhunt.check(leaky)
with refhunt.track() as t:
    zoo.leakNewRefs(5000, 5)
print(report.leaks[0].per_call, totals(t.report), calls[0])
"""))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    calls = int(r.stdout.split()[-1])
    assert r.stdout.startswith("10.0 [('int', 5)] "), r.stdout
    ints = sum(g["count"] for g in r.leaks if g["type_name"] == "int" and g["class"] == "leaked")
    assert ints == 300 + 10 * calls + 5, r.stderr
    sites = {g["site"].rsplit("/", 1)[-1] for g in r.leaks if g["type_name"] == "int"}
    assert sites == {"zoo.c:%d" % NEW_REF}


SUITE = """
import refhunt, zoo

def test_checks_a_leak_inside():
    report = refhunt.check(zoo.leakNewRefs, 5000, 7)
    assert report.leaks[0].per_call == 7

def test_checks_a_clean_function_inside():
    report = refhunt.check(sorted, [3, 2, 1])
    assert not report.leaks and not report.unexplained_beyond() and not report.native_beyond()
"""


def test_a_check_inside_a_test_that_pytest_refhunt_repeats(env):
    suite = env.script("test_nested_suite.py", textwrap.dedent(SUITE))
    completed = subprocess.run(
        [env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--refhunt", suite],
        capture_output=True, text=True, cwd=str(env.tmp), timeout=600,
        env={**os.environ, "PYTHONPATH": env.zoo})
    out = completed.stdout
    assert completed.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out, out[-3000:]
    # The outer window sees 7 ints from each of the inner check's calls in every test call,
    # in groups by Python line (the warm-ups', the measured runs', the holder run's).
    line = next(l for l in out.splitlines()
                if l.startswith("test_nested_suite.py::test_checks_a_leak_inside: "))
    rates = [float(part.split(" int per call")[0]) for part in line.split("(leaked, ")[1:]]
    assert sum(rates) >= 63 and sum(rates) % 7 == 0, line
    assert line.count("zoo.c:%d" % NEW_REF) == len(rates), line
