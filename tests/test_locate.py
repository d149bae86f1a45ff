"""`refhunt run` names the C line of leaked references: the seed scenario and every zoo
pattern, on real interpreters with the real zoo."""
import pathlib
import re
import textwrap

import pytest

from conftest import ROOT, marker_line, zoo_build

SEED_DIR = ROOT.parent / "shared" / "seed"


def test_seed_case_one_group_of_a_million_ints_at_the_c_line(env):
    r = env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 1000000)")
    assert r.rc == 0, r.stderr
    g = r.group_at("zoo.c", marker_line("new_ref"))
    assert g["type_name"] == "int"
    assert g["count"] == 1_000_000
    assert g["bytes"] == 32_000_000
    assert g["python"][0]["file"] == "<string>" and g["python"][0]["line"] == 1
    site_frame = next(f for f in g["native"] if not f["interpreter"])
    assert site_frame["function"] == "leak_new_refs" and site_frame["source"] == "dwarf"
    others = [x for x in r.leaks if x is not g and x["count"] > 1000]
    assert others == []
    assert "1,000,000 int objects" in r.stderr and "zoo.c:%d" % marker_line("new_ref") in r.stderr


@pytest.mark.parametrize("mode", [(), ("--exact",), ("--sample", "8")])
def test_every_mode_counts_exactly_and_names_the_line(env, mode):
    """Sampled stacks (the default) leave counts exact; the report says when it sampled."""
    r = env.run("python", "-c", "import zoo\nfor _ in range(3): zoo.leakNewRefs(5000, 30000)",
                refhunt_args=mode)
    g = r.group_at("zoo.c", marker_line("new_ref"))
    assert (g["type_name"], g["count"], g["bytes"]) == ("int", 90_000, 2_880_000)
    assert g["python"][0]["file"] == "<string>" and g["python"][0]["line"] == 2
    assert ("sampled stacks" in r.stderr) == (mode != ("--exact",)), r.stderr


def _seed_chapter_module(tmp):
    """The seed chapter's own leak_new_reference, wrapped in a minimal module cPyRefs."""
    texts = [p.read_text() for p in sorted(SEED_DIR.glob("*.txt"))] if SEED_DIR.is_dir() else []
    blocks = [m.group(1) for text in texts
              for m in re.finditer(r"code-block:: c\n(?:\s+:[\w-]+:.*\n)*\n((?:    .*\n|\n)+)", text)]
    functions = [textwrap.dedent(b) for b in blocks if "PyObject *leak_new_reference(" in b]
    if not functions:
        pytest.skip("the seed chapter is not beside the checkout")
    function = functions[0]
    source = tmp / "cPyRefs.c"
    source.write_text(
        "#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n\n" + function
        + "\nstatic PyMethodDef methods[] = {\n"
        "    {\"leakNewRefs\", (PyCFunction)(void (*)(void))leak_new_reference,\n"
        "     METH_VARARGS | METH_KEYWORDS, \"Leaks new references to longs.\"},\n"
        "    {NULL, NULL, 0, NULL}};\n"
        "static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, \"cPyRefs\", NULL, -1, methods};\n"
        "PyMODINIT_FUNC PyInit_cPyRefs(void) { return PyModule_Create(&module); }\n")
    line = next(n for n, l in enumerate(source.read_text().splitlines(), 1) if "PyLong_FromLong(value)" in l)
    return source, line


def test_seed_chapter_code_compiled_as_is(env, tmp_path):
    source, line = _seed_chapter_module(tmp_path)
    out = zoo_build.build(env.python, str(tmp_path), source=str(source), name="cPyRefs")
    r = env.run("python", "-c", "import cPyRefs; cPyRefs.leakNewRefs(5000, 1000000)",
                env={"PYTHONPATH": out})
    assert r.rc == 0, r.stderr
    assert "loose_new_reference: DONE" in r.stdout
    g = r.group_at("cPyRefs.c", line)
    assert (g["type_name"], g["count"], g["bytes"]) == ("int", 1_000_000, 32_000_000)
    assert [x for x in r.leaks if x is not g and x["count"] > 1000] == []


# (zoo marker, Python code, leaked type, count per run)
PATTERNS = [
    ("error_path", "for i in range(100):\n    try:\n        zoo.leak_on_error(5000)\n    except AttributeError:\n        pass", "int", 100),
    ("append", "keep = []\nzoo.leak_append(keep, 100)", "int", 100),
    ("setitem", "keep = {}\nzoo.leak_setitem(keep, 100)", "int", 100),
    ("build_value", "for i in range(100):\n    zoo.leak_build_value(5000 + i)", "int", 100),
    ("thread", "zoo.leak_from_thread(5000, 100)", "int", 100),
    ("dealloc_member", "for i in range(100):\n    zoo.Holder(5000 + i)", "int", 100),
]


@pytest.mark.parametrize("marker,code,type_name,count", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_zoo_leak_pattern_reported_at_its_line(env, marker, code, type_name, count):
    r = env.run("python", env.script("pattern.py", "import zoo\n" + code + "\n"))
    assert r.rc == 0, r.stderr
    g = r.group_at("zoo.c", marker_line(marker))
    assert (g["type_name"], g["count"]) == (type_name, count), r.stderr
    assert [x for x in r.leaks if x["count"] >= 10 and x is not g and x["class"] == "leaked"] == [], r.stderr


def test_leaked_container_is_direct_and_its_items_indirect(env):
    """Lists come from a freelist, with memory from before the window; every creation is seen
    all the same (3.13's reference tracer, and _Py_NewReference up to 3.12)."""
    r = env.run("python", "-c", "import zoo\nfor _ in range(100): zoo.leak_container(10)")
    lists = r.group_at("zoo.c", marker_line("container"))
    items = r.group_at("zoo.c", marker_line("container_item"), class_="indirect")
    assert lists["type_name"] == "list" and items["type_name"] == "int"
    assert (lists["count"], items["count"]) == (100, 1000)
    assert lists["evidence"] == "100 from one C line, referenced by nothing"
    assert items["evidence"] == "1,000 from one C line, held only by leaked objects"


def test_extra_incref_names_where_python_created_the_object(env):
    script = env.script("incref.py", "import zoo\nobjs = [object() for _ in range(50)]\nfor o in objs:\n    zoo.leak_incref(o)\ndel objs, o\n")
    r = env.run("python", script)
    g = r.group_at("incref.py", 2)
    assert (g["type_name"], g["count"]) == ("object", 50)


def test_fetched_error_leaks_the_exception(env):
    r = env.run("python", "-c", "import zoo\nfor _ in range(20): zoo.leak_fetched_error()")
    g = r.group_at("zoo.c", marker_line("fetch"))
    # 3.12+ creates the exception at once; 3.11 keeps the message string until normalized.
    expected = "RuntimeError" if env.version >= (3, 12) else "str"
    assert (g["type_name"], g["count"]) == (expected, 20)


@pytest.mark.parametrize("marker,code,type_name", [
    ("float", "zoo.leak_float(2.5, 1000)", "float"),
    ("tuple", "zoo.leak_tuple(1000)", "tuple"),
])
def test_freelist_types(env, marker, code, type_name):
    """Objects handed out again by a freelist are seen, and the interpreter's freelist arrays,
    which keep stale pointers to them, do not pass for holders."""
    r = env.run("python", "-c", "import zoo; " + code)
    assert r.group_at("zoo.c", marker_line(marker))["count"] == 1000, r.stderr
    assert not any("freelist" in n for n in r.report["notes"]), r.report["notes"]


@pytest.mark.parametrize("code", [
    "zoo.cached(); zoo.cached()",
    "for i in range(100): zoo.remember(600000 + i)",
    "zoo.make_cycle(100)",
    "zoo.touch_shared(100)",
], ids=["static_cache", "module_list", "cycle", "small_ints_interned"])
def test_controls_are_never_leaks(env, code):
    r = env.run("python", "-c", "import zoo\n" + code)
    assert r.rc == 0, r.stderr
    assert r.leaks == [], r.stderr


def test_static_cache_is_held_outside_python(env):
    r = env.run("python", "-c", "import zoo; zoo.cached()")
    held = [t for t in r.report["not_leaks"] if t["class"] == "held_outside"]
    assert held and held[0]["count"] >= 1
