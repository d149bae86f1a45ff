"""Native memory (issue 13): blocks that C code allocates for itself and loses, from malloc,
calloc, realloc, strdup, PyMem_Malloc, PyObject_Malloc, C++'s new and Rust's global allocator,
reported at their C line with their allocator, count and bytes, through a plain run,
`--repeat`, `refhunt.check()` and `pytest --refhunt`; the controls report nothing.

zoo/native.c (C), zoo/native_cpp.cpp (built with g++) and zoo/native_rs (pyo3, built with
maturin) mark each leaking allocation `zoo_native:NAME`.
"""
import json
import subprocess
import textwrap

import pytest

from conftest import ROOT, native_line, zoo_build

import build_native

C = ROOT / "zoo" / "native.c"
CPP = ROOT / "zoo" / "native_cpp.cpp"
RS = ROOT / "zoo" / "native_rs" / "src" / "lib.rs"


# name: (module, function, args, source, allocator, blocks, bytes per block)
LEAKS = {
    "malloc": ("zoo_native", "leak_malloc", (1000, 100), C, "malloc", 1000, 100),
    "pymem_error": ("zoo_native", "pymem_error_path", (1000,), C, "PyMem_Malloc", 1000, 128),
    "realloc": ("zoo_native", "grow_realloc", (1000,), C, "malloc", 1000, 1000),
    "strdup": ("zoo_native", "leak_strdup", (1000,), C, "malloc", 1000, 20),
    "pyobject_malloc": ("zoo_native", "pyobject_malloc", (1000,), C, "PyObject_Malloc", 1000,
                        32),
    "raw_thread": ("zoo_native", "raw_on_thread", (1000,), C, "PyMem_RawMalloc", 1000, 40),
    "cpp_new": ("zoo_native_cpp", "leak_new", (1000,), CPP, "malloc", 1000, 48),
    "rs_box": ("zoo_native_rs", "leak_box", (1000,), RS, "calloc", 1000, 64),
    "rs_arc": ("zoo_native_rs", "leak_arc_cycle", (500,), RS, "malloc", 1000, 64),
}

CONTROLS = [
    "zoo_native.table_once()",
    "zoo_native.malloc_free(1000)",
    "zoo_native.to_bytes(1000)",
    "zoo_native.threads_malloc_free(100000)",
    "zoo_native_cpp.new_delete(1000)",
    "zoo_native_rs.box_drop(1000)",
]


@pytest.fixture(scope="session")
def native(env):
    """The C, C++ and Rust native zoo, built for env's interpreter into its zoo directory."""
    if not getattr(env, "native_built", False):
        zoo_build.build(env.python, env.zoo, source=str(C), name="zoo_native")
        build_native.build_cpp(env.python, env.zoo)
        build_native.build_rust(env.python, env.zoo)
        env.native_built = True
    return env


def call_of(name):
    module, function, args = LEAKS[name][:3]
    return "import %s; %s.%s%r" % (module, module, function, args)


def one_native_at(r, source, line):
    """The one native leak group of run `r` allocated at source:line."""
    suffix = "%s:%d" % (source.name, line)
    found = [n for n in r.report["native_leaks"] if (n["site"] or "").endswith(suffix)]
    assert len(found) == 1, r.stderr
    return found[0]


@pytest.mark.parametrize("name", LEAKS)
def test_plain_run_reports_the_lost_blocks_at_their_line(native, name):
    _, _, _, source, allocator, blocks, size = LEAKS[name]
    r = native.run("python", "-c", call_of(name))
    assert r.rc == 0, r.stderr
    n = one_native_at(r, source, native_line(name, source))
    assert n["allocator"] == allocator
    # Every block of the site is counted, lost or (through a stale pointer) still reached.
    assert n["count"] + n["reachable"]["count"] == blocks, n
    assert n["bytes"] + n["reachable"]["bytes"] == blocks * size, n
    # A stale pointer (pymalloc's freed blocks keep theirs) may hide a few.
    lost = n["definite"]["count"] + n["indirect"]["count"]
    assert lost >= 0.85 * blocks, n
    assert r.leaks == [], r.stderr
    assert "leaked native memory" in r.stderr


def test_a_reference_cycle_of_arcs_is_one_definite_block_and_one_indirect(native):
    r = native.run("python", "-c", call_of("rs_arc"))
    n = one_native_at(r, RS, native_line("rs_arc", RS))
    # Each pair is one definite block and the one it points to.
    assert n["indirect"]["count"] >= 0.4 * 1000, n
    assert abs(n["definite"]["count"] - n["indirect"]["count"]) <= 50, n


@pytest.mark.parametrize("name", LEAKS)
def test_repeat_counts_every_block_per_call(native, name):
    module, function, args, source, allocator, blocks, size = LEAKS[name]
    r = native.run("python", "-m", "refhunt.call", "%s:%s" % (module, function),
                   *map(str, args), refhunt_args=("--repeat", "3", "--warmup", "2"))
    assert r.rc == 0, r.stderr
    n = one_native_at(r, source, native_line(name, source))
    assert (n["allocator"], n["per_call"], n["runs"]) == (allocator, blocks, [blocks] * 3)
    assert (n["count"], n["bytes"]) == (3 * blocks, 3 * blocks * size)
    assert n["evidence"].startswith("grew in 3 of 3 runs")


def test_repeat_of_a_control_reports_nothing(native):
    r = native.run("python", "-m", "refhunt.call", "zoo_native:table_once",
                   refhunt_args=("--repeat", "3"))
    assert r.rc == 0, r.stderr
    assert r.report["native_leaks"] == [] and r.leaks == [], r.stderr


@pytest.mark.parametrize("code", CONTROLS)
def test_controls_report_no_native_leak(native, code):
    r = native.run("python", "-c", "import zoo_native, zoo_native_cpp, zoo_native_rs; " + code)
    assert r.rc == 0, r.stderr
    assert r.report["native_leaks"] == [] and r.leaks == [], r.stderr


def test_no_native_turns_native_tracking_off(native):
    r = native.run("python", "-c", call_of("malloc"), refhunt_args=("--no-native",))
    assert r.rc == 0, r.stderr
    assert r.report["native_leaks"] == [], r.stderr


def test_lost_array_of_new_references_links_the_ints_to_their_block(native):
    r = native.run("python", "-c", "import zoo_native; zoo_native.lose_array(1000)")
    g = r.group_at("native.c", native_line("array_item", C))
    assert (g["type_name"], g["count"]) == ("int", 1000)
    assert g["held_by"].startswith("1 malloc block allocated at "), g
    assert g["held_by"].split(" at ")[1].split(" ")[0].endswith(
        "native.c:%d" % native_line("array", C)), g


CHECK = """
import importlib, json, sys, refhunt
out = {}
calls = json.loads(sys.argv[1]) + [["control", "zoo_native", "malloc_free", [100]],
                                   ["buffered", "zoo_native", "leak_buffered", [100]]]
for name, module, function, args in calls:
    r = refhunt.check(getattr(importlib.import_module(module), function), *args)
    out[name] = [(n.allocator, n.per_call, n.site, n.runs) for n in r.native]
    out[name + ":objects"] = [(g.type_name, g.per_call) for g in r.leaks]
    try:
        r.assert_no_leaks()
        out[name + ":asserted"] = False
    except AssertionError:
        out[name + ":asserted"] = True
print(json.dumps(out))
"""


def test_check_carries_the_native_groups(native):
    calls = [[name, m, f, a] for name, (m, f, a, *_) in LEAKS.items()]
    completed = subprocess.run([native.python, native.script("check_native.py", CHECK),
                                json.dumps(calls)],
                               capture_output=True, text=True, timeout=600,
                               env={"PYTHONPATH": native.zoo, "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    out = json.loads(completed.stdout)
    for name, (_, _, _, source, allocator, blocks, _) in LEAKS.items():
        [(found, per_call, site, runs)] = out[name]
        assert (found, per_call) == (allocator, blocks), out[name]
        assert site.endswith("%s:%d" % (source.name, native_line(name, source))), site
        assert runs == [blocks] * len(runs) and len(runs) >= 2
        assert out[name + ":asserted"]
    assert out["control"] == [] and not out["control:asserted"]
    # A leaked object's own buffer is part of its leak, not a native leak of its own.
    assert out["buffered"] == [], out["buffered"]
    assert out["buffered:objects"] == [["zoo_native.Buffered", 100]]


def test_a_leaked_objects_buffer_is_no_native_leak_of_its_own(native):
    r = native.run("python", "-c", "import zoo_native; zoo_native.leak_buffered(1000)")
    g = r.group_at("native.c", native_line("buffered", C))
    # Each object's 32 bytes and its 256-byte buffer.
    assert (g["type_name"], g["count"], g["bytes"]) == ("zoo_native.Buffered", 1000, 288_000)
    assert r.report["native_leaks"] == [], r.stderr


def test_pytest_fails_a_test_that_loses_native_memory(native):
    test_file = native.script("test_native_leak.py", textwrap.dedent("""
        import zoo_native

        def test_loses():
            zoo_native.leak_malloc(10, 64)

        def test_frees():
            zoo_native.malloc_free(10)
    """))
    completed = subprocess.run([native.python, "-m", "pytest", "--refhunt", "-q", "-p",
                                "no:cacheprovider", test_file], capture_output=True, text=True,
                               timeout=600, cwd=str(native.tmp),
                               env={"PYTHONPATH": native.zoo, "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 1, completed.stdout
    assert "1 failed, 1 passed" in completed.stdout
    assert "from malloc, 10 blocks per call allocated at" in completed.stdout
    assert "native.c:%d: grew in" % native_line("malloc", C) in completed.stdout


LATE = """
import json, refhunt
refhunt.check(lambda: None)  # the agent starts here, before the extensions are loaded
import zoo_native, zoo_native_rs
out = [(n.allocator, n.per_call, n.site) for f, a in [(zoo_native.leak_strdup, (50,)),
                                                     (zoo_native_rs.leak_box, (50,))]
       for n in refhunt.check(f, *a).native]
print(json.dumps(out))
"""


def test_libraries_loaded_after_tracking_started_are_seen(native):
    completed = subprocess.run([native.python, native.script("late_native.py", LATE)],
                               capture_output=True, text=True, timeout=600,
                               env={"PYTHONPATH": native.zoo, "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    out = json.loads(completed.stdout)
    assert [(a, n) for a, n, _ in out] == [("malloc", 50), ("calloc", 50)], out
    assert out[0][2].endswith("native.c:%d" % native_line("strdup", C))
    assert out[1][2].endswith("lib.rs:%d" % native_line("rs_box", RS))
