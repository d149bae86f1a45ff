"""Distribution Pythons (issue 14): interpreters that link libpython into their executable, as
Debian's and Ubuntu's `python3.X` do (the machine's own python3.11, the sid folder's 3.13, 3.14
and 3.15). The executable is then the interpreter's module: the seed case must still name the C
line, and the interpreter's stripped frames get their names and lines from the separate debug
file when one is installed (`python3.X-dbg`), found by build-id.

scripts/test.sh passes the machine's own interpreters in REFHUNT_TEST_STATIC_VENV: up to 3.12
they give no creation events, so the whole suite does not hold there (README, known limits).
"""
import os
import pathlib
import struct

import pytest

from conftest import Env, _venvs, marker_line

STATIC_VENVS = os.environ.get("REFHUNT_TEST_STATIC_VENV", "").split()


@pytest.fixture(scope="module", params=_venvs() + STATIC_VENVS,
                ids=lambda v: pathlib.Path(v).name)
def static_env(request, tmp_path_factory):
    env = Env(request.param, tmp_path_factory.mktemp("static-" + pathlib.Path(request.param).name))
    maps = env.python_output("print(any('libpython' in l for l in open('/proc/self/maps')))")
    if maps.strip() != "False":
        pytest.skip("%s loads libpython" % env)
    return env


def build_id_debug_file(env):
    """The debug file of the interpreter's executable under /usr/lib/debug, by its build-id, as
    seen by the interpreter (inside its folder, for sid's)."""
    code = ("import struct, sys, os\n"
            "data = open(os.path.realpath(sys.executable), 'rb').read()\n"
            "at = data.find(struct.pack('<III', 4, 20, 3) + b'GNU\\0')\n"
            "bid = data[at + 16:at + 36].hex() if at >= 0 else ''\n"
            "path = '/usr/lib/debug/.build-id/%s/%s.debug' % (bid[:2], bid[2:])\n"
            "print(path if bid and os.path.isfile(path) else '')\n")
    return env.python_output(code).strip() or None


def test_seed_case_names_the_c_line(static_env):
    r = static_env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 100000)")
    assert r.rc == 0, r.stderr
    g = r.group_at("zoo.c", marker_line("new_ref"))
    assert (g["type_name"], g["count"], g["bytes"]) == ("int", 100_000, 3_200_000)
    site = next(f for f in g["native"] if not f["interpreter"])
    assert (site["function"], site["source"]) == ("leak_new_refs", "dwarf"), g["native"]
    # The interpreter's frames are the executable's: no libpython among them.
    modules = {f["module"] for f in g["native"] if f["interpreter"]}
    assert not any("libpython" in m for m in modules), modules
    assert any(m.startswith("python3.") for m in modules), modules
    assert [x for x in r.leaks if x is not g and x["count"] > 1000] == []


def test_interpreter_frames_are_named_from_the_debug_file(static_env):
    if build_id_debug_file(static_env) is None:
        pytest.skip("no debug file of %s is installed" % static_env)
    r = static_env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 1000)")
    g = r.group_at("zoo.c", marker_line("new_ref"))
    named = [f for f in g["native"] if f["function"] == "PyLong_FromLong"]
    assert named and named[0]["source"] == "dwarf", g["native"]
    assert named[0]["file"].endswith("Objects/longobject.c") and named[0]["line"], named
