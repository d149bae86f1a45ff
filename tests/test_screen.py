"""The pytest plugin's screen (one warm-up, one tracked call) against the full method (five
warm-ups, four measured runs) on every leak and control of the zoo: the screen may send a clean
test on to the full method, but no leak the full method finds may pass it. Also under
pytest-xdist, whose workers send their outcomes to the controller's summary."""
import ast
import re
import subprocess
import textwrap
from xml.etree import ElementTree

import pytest
from conftest import ROOT, marker_line, native_line, zoo_build

NATIVE = ROOT / "zoo" / "native.c"



SUITE = '''
import pytest
import zoo, zoo_holders, zoo_native

# Made before the tests: a reference leaked to it is gained by an old object.
OLD = object()

LEAKS = {
    "new_refs": lambda: zoo.leakNewRefs(5000, 100),
    "incref": lambda: zoo.leak_incref(object()),
    "incref_old": lambda: zoo.leak_incref(OLD),
    "append": lambda: zoo.leak_append([], 20),
    "setitem": lambda: zoo.leak_setitem({}, 20),
    "build_value": lambda: zoo.leak_build_value(123456),
    "container": lambda: zoo.leak_container(20),
    "float": lambda: zoo.leak_float(1.5, 20),
    "tuple": lambda: zoo.leak_tuple(20),
    "fetched_error": zoo.leak_fetched_error,
    "keep_arg": lambda: zoo_holders.keep_arg(object()),
    "malloc": lambda: zoo_native.leak_malloc(10, 64),
    "pymem_error_path": lambda: zoo_native.pymem_error_path(10),
    "lose_array": lambda: zoo_native.lose_array(10),
    "strdup": lambda: zoo_native.leak_strdup(10),
}
CONTROLS = {
    "cached": zoo.cached,
    "cycle": lambda: zoo.make_cycle(20),
    "cache_in_buffer": lambda: zoo.cache_in_buffer(20),
    "keep_in_state": lambda: zoo.keep_in_state(object()),
    "table_once": zoo_native.table_once,
    "malloc_free": lambda: zoo_native.malloc_free(20),
    "to_bytes": lambda: zoo_native.to_bytes(20),
}

@pytest.mark.parametrize("name", sorted(LEAKS))
def test_leak(name):
    LEAKS[name]()

@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control(name):
    CONTROLS[name]()

def test_error_path():
    with pytest.raises(AttributeError):
        zoo.leak_on_error(123456)
'''
LEAKING = {"test_leak[%s]" % n for n in (
    "new_refs", "incref", "incref_old", "append", "setitem", "build_value", "container", "float",
    "tuple", "fetched_error", "keep_arg", "malloc", "pymem_error_path", "lose_array", "strdup")}
LEAKING.add("test_error_path")
# `leak_on_error` raises (None takes no attribute) and leaks its int on that error path.
CONTROL_TESTS = 7  # (zoo.touch_shared is none on 3.14, whose interned strings are mortal)


@pytest.fixture(scope="module")
def suite(env):
    zoo_build.build(env.python, env.zoo, source=str(NATIVE), name="zoo_native")
    return env.script("test_zoo_suite.py", textwrap.dedent(SUITE))


def leaking(completed):
    """{test name: what the summary says it leaks}, from the session's leak summary, without
    what the scan of memory found pointing to native blocks (stale stack slots vary), nor the
    groups owned by a leaked object: on 3.14 the str and tuple of a leaked exception are
    sometimes seen as indirect and sometimes not, in either run (see the issue 16 note)."""
    found = {}
    for line in completed.stdout.splitlines():
        m = re.match(r"\S*test_zoo_suite\.py::(\S+): (.*)$", line)
        if m:
            said = re.sub(r"(grew in \d+ of \d+ runs); [^;]*", r"\1", m.group(2))
            found[m.group(1)] = re.sub(r"; \d+ \w+ \(indirect[^;]*", "", said)
    return found


def uncounted(found):
    """`leaking()` without the numbers that precede a word: what leaks, and where."""
    return {test: re.sub(r"(?<![:\w.])\d[\d,]*(\.\d+)? ", "", said) for test, said in found.items()}


def run(env, suite, *args):
    return subprocess.run([env.python, "-m", "pytest", "--refhunt", "-q", "-p", "no:cacheprovider",
                           suite, *args], capture_output=True, text=True, timeout=900,
                          cwd=str(env.tmp), env={"PYTHONPATH": env.zoo, "PATH": "/usr/bin:/bin"})


def passed_the_screen(junit):
    """The tests whose screening call sent them on to no full method, from the outcomes the
    plugin leaves in each test's user properties (here, the JUnit XML's)."""
    passed = set()
    for case in ElementTree.parse(junit).iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "refhunt" and ast.literal_eval(prop.get("value"))["screened"]:
                passed.add(case.get("name"))
    return passed


def test_the_screen_passes_no_leak_that_the_full_method_finds(env, suite):
    full = run(env, suite, "--refhunt-no-screen")
    junit = env.tmp / "screened.xml"
    screened = run(env, suite, "--junitxml", str(junit), "-o", "junit_family=xunit1")
    assert set(leaking(full)) == LEAKING, full.stdout[-6000:]
    # The claim itself: no test that the full method finds leaking passes the screen.
    passed = passed_the_screen(junit)
    assert len(passed) >= 6 and not passed & LEAKING, (passed, screened.stdout[-4000:])
    # What the screened run's full method reports is what the full run reports: the same
    # objects, counts and sites; for native blocks the same sites (how many of them a scan
    # finds still pointed to varies with what the stack held).
    found, expected = leaking(screened), leaking(full)
    assert set(found) == LEAKING, screened.stdout[-6000:]
    assert uncounted(found) == uncounted(expected)
    assert ({t: said for t, said in found.items() if "native blocks" not in said}
            == {t: said for t, said in expected.items() if "native blocks" not in said})
    # Type, rate and C line, as the full method gives them.
    seed = leaking(screened)["test_leak[new_refs]"]
    assert "400 int (leaked, 100 int per call) created at " in seed
    assert "zoo.c:%d" % marker_line("new_ref") in seed
    assert "native.c:%d" % native_line("malloc", NATIVE) in leaking(screened)["test_leak[malloc]"]
    checked = re.search(r"refhunt: (\d+) tests checked \((\d+) passed the screen\), (\d+) leaking",
                        screened.stdout)
    assert checked, screened.stdout[-2000:]
    total, screened_out, leaks = map(int, checked.groups())
    assert (total, screened_out, leaks) == (len(LEAKING) + CONTROL_TESTS, len(passed), len(found))


def test_xdist_workers_bring_their_outcomes_to_the_summary(env, suite):
    if "xdist" not in env.python_output("import importlib.util as u; print(u.find_spec('xdist'))"):
        pytest.skip("pytest-xdist has no build for %r" % env)
    screened = run(env, suite, "-n", "2")
    assert screened.returncode == 1, screened.stdout[-4000:]
    assert set(leaking(screened)) == LEAKING, screened.stdout[-6000:]
    assert re.search(r"refhunt: %d tests checked \(\d+ passed the screen\), %d leaking"
                     % (len(LEAKING) + CONTROL_TESTS, len(LEAKING)), screened.stdout), screened.stdout[-2000:]


TRACEMALLOC_SUITE = '''
import tracemalloc
import zoo

def test_uses_tracemalloc():
    tracemalloc.start()
    tracemalloc.take_snapshot()
    tracemalloc.stop()

def test_leaks_after():
    zoo.leakNewRefs(5000, 100)

def test_clean_after():
    [object() for _ in range(100)]
'''


def test_a_test_that_used_tracemalloc_leaves_the_tests_after_it_tracked(env):
    """tracemalloc takes the reference tracer that refhunt sees objects made by (3.13+): from
    3.14 its stop() leaves none, and 3.13.0-3.13.2's leave theirs. Every test after one that
    used it was untracked: a leak there was missed, and msgpack's suite got a false alarm from
    the native buffers of objects made unseen. The test after it is still caught, screened or
    in full, with its type, rate and C line; the one after that is clean."""
    suite = env.script("test_tracemalloc_suite.py", textwrap.dedent(TRACEMALLOC_SUITE))
    for mode in ((), ("--refhunt-no-screen",)):
        completed = run(env, suite, *mode)
        found = dict(re.findall(r"^\S*test_tracemalloc_suite\.py::(\S+): (.*)$", completed.stdout,
                                re.M))
        assert set(found) == {"test_leaks_after"}, (mode, completed.stdout[-4000:])
        assert "400 int (leaked, 100 int per call) created at " in found["test_leaks_after"], found
        assert "zoo.c:%d" % marker_line("new_ref") in found["test_leaks_after"], found
        assert "3 tests checked" in completed.stdout and " 1 leaking" in completed.stdout, \
            completed.stdout[-2000:]
