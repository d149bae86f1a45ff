"""The holder (issue 12): the C line that took a reference and never gave it back, even when
someone else made the object, named from hardware breakpoints on refcounts.

`zoo_holders` (zoo/holders.c) marks each leaking increment `zoo_holders:NAME`. Every pattern
must report that file:line as the holder, with the count or the rate, through a plain
`refhunt run`, `refhunt run --repeat`, `refhunt.check()` and `pytest --refhunt`; the
controls must report nothing. With perf_event_open refused (tests/noperf.c, a seccomp
wrapper), the report says why the holder is missing and is otherwise the same.
"""
import json
import subprocess
import textwrap

import pytest

from conftest import ROOT

SOURCE = ROOT / "zoo" / "holders.c"
N = 2000


def holder_line(name):
    marker = "/* zoo_holders:%s */" % name
    lines = [n for n, line in enumerate(SOURCE.read_text().splitlines(), 1) if marker in line]
    assert len(lines) == 1, "marker %s on lines %s" % (marker, lines)
    return lines[0]


# pattern: (statement run N times in a loop over i, type leaked, function that holds)
PATTERNS = {
    "incref_arg": ("z.keep_arg([i])", "list", "keep_arg"),
    "borrowed_item": ("z.keep_item([[i]])", "list", "keep_item"),
    "kwargs": ("store.set(a=i)", "dict", "store_set"),
    "init_args": ("z.Keeper([i], 2)", "tuple", "keeper_init"),
    "getter": ("box.value", "tuple", "box_get_value"),
}
SETUP = "import zoo_holders as z\nstore = z.Store()\nbox = z.Box()\n"
CONTROLS = "c = z.Cache()\nfor i in range(N):\n    c.put([i]); z.borrow_ok([(i,)]); z.Pair([i])\n"


def program(env, name, body, n=N):
    return env.script(name + ".py", SETUP + "N = %d\n" % n + body)


def assert_holder(holder, name, function):
    assert holder is not None, "no holder"
    assert holder["site"].endswith("holders.c:%d" % holder_line(name)), holder
    assert holder["function"] == function
    assert holder["objects"] >= 1 and holder["kept"] == 1


@pytest.mark.parametrize("name", PATTERNS)
def test_plain_run_names_the_holder(env, name):
    statement, type_name, function = PATTERNS[name]
    r = env.run("python", program(env, name, "for i in range(N):\n    %s\n" % statement))
    assert r.rc == 0, r.stderr
    groups = [g for g in r.leaks if g["class"] == "leaked" and g["type_name"] == type_name]
    assert len(groups) == 1, r.stderr
    # The kwargs store still holds its last dict; the getter's box its last tuple.
    assert groups[0]["count"] in (N, N - 1)
    assert_holder(groups[0].get("holder"), name, function)
    assert "reference taken at" in r.stderr and "holders.c:%d" % holder_line(name) in r.stderr


def test_plain_run_counts_a_singletons_unexplained_references(env):
    r = env.run("python", program(env, "singleton", "for i in range(N):\n    z.singleton()\n"))
    assert r.rc == 0, r.stderr
    [u] = [u for u in r.report["unexplained"] if u["type_name"] == "tuple"]
    assert u["repr"] == "('zoo-singleton', 42)"
    assert u["gained"] == N and u["unexplained"] == N
    assert not r.leaks
    assert "unexplained references: tuple ('zoo-singleton', 42)" in r.stderr


def test_plain_run_of_the_controls_reports_nothing(env):
    r = env.run("python", program(env, "controls", CONTROLS))
    assert r.rc == 0, r.stderr
    assert not r.leaks and not r.report["unexplained"], r.stderr


CHECK = """
import json, sys, refhunt, zoo_holders as z
store, box, cache = z.Store(), z.Box(), z.Cache()
calls = {
    "incref_arg": lambda: [z.keep_arg([i]) for i in range(100)],
    "borrowed_item": lambda: [z.keep_item([[i]]) for i in range(100)],
    "kwargs": lambda: [store.set(a=i) for i in range(100)],
    "init_args": lambda: [z.Keeper([i], 2) for i in range(100)],
    "getter": lambda: [box.value and None for i in range(100)],
    "singleton": lambda: [z.singleton() for i in range(100)],
    "controls": lambda: [(cache.put([i]), z.borrow_ok([(i,)]), z.Pair([i])) for i in range(100)],
}
out = {}
for name, call in calls.items():
    r = refhunt.check(call)
    out[name] = {
        "leaks": [(g.class_, g.type_name, g.per_call, g.holder and g.holder.site,
                   g.holder and g.holder.function) for g in r.leaks],
        "unexplained": [(u.repr, u.per_call, u.grew, u.holder and u.holder.site,
                         u.holder and u.holder.per_call) for u in r.unexplained],
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def checked(env):
    """refhunt.check() of every pattern and the controls, in one process."""
    completed = subprocess.run([env.python, env.script("check_holders.py", CHECK)],
                               capture_output=True, text=True, timeout=600,
                               env={"PYTHONPATH": env.zoo, "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.mark.parametrize("name", PATTERNS)
def test_check_names_the_holder(checked, name):
    _, type_name, function = PATTERNS[name]
    leaked = [g for g in checked[name]["leaks"] if g[0] == "leaked"]
    assert len(leaked) == 1, checked[name]
    class_, found_type, per_call, site, holder_function = leaked[0]
    assert (found_type, per_call) == (type_name, 100)
    assert site.endswith("holders.c:%d" % holder_line(name)) and holder_function == function
    assert not checked[name]["unexplained"]


def test_check_gives_a_singletons_holder_and_rate(checked):
    assert not checked["singleton"]["leaks"]
    [(text, per_call, grew, site, holder_per_call)] = checked["singleton"]["unexplained"]
    assert (text, per_call, grew) == ("('zoo-singleton', 42)", 100, 4)
    assert site.endswith("holders.c:%d" % holder_line("singleton"))
    assert holder_per_call == 100


def test_check_of_the_controls_reports_nothing(checked):
    assert checked["controls"] == {"leaks": [], "unexplained": []}


def test_repeat_run_names_the_holder(env):
    # Each call builds a new args tuple, which Keeper's tp_init keeps.
    r = env.run("python", "-m", "refhunt.call", "zoo_holders:Keeper", "1", "2",
                refhunt_args=("--repeat", "4"))
    assert r.rc == 0, r.stderr
    [g] = [g for g in r.leaks if g["class"] == "leaked"]
    assert (g["type_name"], g["per_call"]) == ("tuple", 1)
    assert_holder(g.get("holder"), "init_args", "keeper_init")


def test_repeat_run_names_the_holder_of_an_argument(env):
    # The same list, made once by refhunt.call, is passed to every call: no new object.
    r = env.run("python", "-m", "refhunt.call", "zoo_holders:keep_arg", "[1]",
                refhunt_args=("--repeat", "4"))
    assert r.rc == 0, r.stderr
    assert not r.leaks
    [u] = r.report["unexplained"]
    assert (u["type_name"], u["per_call"], u["grew"]) == ("list", 1, 4)
    assert u["holder"]["site"].endswith("holders.c:%d" % holder_line("incref_arg"))


def test_repeat_run_names_a_singletons_holder(env):
    r = env.run("python", "-m", "refhunt.call", "zoo_holders:singleton",
                refhunt_args=("--repeat", "4"))
    assert r.rc == 0, r.stderr
    [u] = r.report["unexplained"]
    assert (u["repr"], u["per_call"], u["grew"]) == ("('zoo-singleton', 42)", 1, 4)
    assert u["holder"]["site"].endswith("holders.c:%d" % holder_line("singleton"))
    assert "+1 reference per call" in r.stderr


def test_pytest_failure_shows_the_holder(env):
    test_file = env.script("test_kept.py", textwrap.dedent("""
        import zoo_holders

        def test_keeps():
            for i in range(10):
                zoo_holders.keep_arg([i])

        def test_clean():
            zoo_holders.borrow_ok([(1,)])
    """))
    completed = subprocess.run([env.python, "-m", "pytest", "--refhunt", "-q", "-p",
                                "no:cacheprovider", test_file], capture_output=True, text=True,
                               timeout=600, cwd=str(env.tmp), env={"PYTHONPATH": env.zoo,
                                                                   "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 1, completed.stdout
    assert "1 failed, 1 passed" in completed.stdout
    line = "holders.c:%d in keep_arg" % holder_line("incref_arg")
    assert "reference taken at" in completed.stdout and line in completed.stdout


@pytest.fixture(scope="module")
def noperf(env):
    binary = env.tmp / "noperf"
    subprocess.run(["gcc", "-O2", "-Wall", str(ROOT / "tests" / "noperf.c"), "-o", str(binary)],
                   check=True)
    return str(binary)


def test_refused_breakpoints_say_why_and_keep_the_rest(env, noperf):
    script = program(env, "refused", "for i in range(N):\n    z.keep_arg([i])\n")
    report = env.tmp / "refused.json"
    completed = subprocess.run([noperf, env.refhunt, "run", "--json", str(report), "--",
                                env.python, script], capture_output=True, text=True,
                               timeout=300, cwd=str(env.tmp), env={"PYTHONPATH": env.zoo,
                                                                   "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    r = json.loads(report.read_text())
    [g] = [g for g in r["leaks"] if g["class"] == "leaked"]
    assert (g["type_name"], g["count"]) == ("list", N)
    assert "holder" not in g
    [note] = [n for n in r["notes"] if n.startswith("no holder line")]
    assert "perf_event_open was refused" in note and "seccomp" in note
    assert "no holder line" in completed.stderr


def test_a_program_that_takes_sigtrap_gets_no_trap_of_ours(env):
    script = program(env, "owntrap", textwrap.dedent("""
        import signal
        seen = []
        signal.signal(signal.SIGTRAP, lambda *a: seen.append(1))
        for i in range(N):
            z.keep_arg([i])
        print("traps seen:", len(seen))
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == "traps seen: 0"
    assert [g for g in r.leaks if g["class"] == "leaked" and g["count"] == N]
    assert any("installed its own SIGTRAP handler" in n for n in r.report["notes"])


def test_a_forked_child_inherits_no_breakpoint(env):
    # Watched lists are made and kept; the child then writes every one of their refcounts.
    script = program(env, "forked", textwrap.dedent("""
        import os
        keep = []
        for i in range(N):
            item = [i]
            z.keep_arg(item)
            keep.append(item)
        pid = os.fork()
        if pid == 0:
            copies = [list(item) for item in keep]
            os._exit(7 if len(copies) == N else 1)
        print("child:", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == "child: 7"
