"""The type matrix (issue 11, "no blind spots"): refhunt sees every kind of object, on every
interpreter.

- C side: `zoo_matrix` (zoo/matrix.c) leaks N new objects of one kind per run, each made on a
  line marked `zoo_matrix:KIND`. refhunt must report exactly one leaked group there, of the
  kind's type, with all N objects, and what the objects own (a container's items) as
  indirectly leaked at the line that made it.
- Python side: a script keeps N objects of each kind, made at run time, in a module-level
  dict. The counters must show them alive, the capture must count them reachable from Python
  under their type, and none may be reported as leaked.
- Indirect chains: a leaked head of nested lists, and one leaked list of new ints.

Each case runs in its own `refhunt run`, so a failure names the kind and the interpreter.
"""
import json
import os
import re
import subprocess
import textwrap
from collections import Counter

import pytest

from conftest import ROOT, zoo_build

MATRIX_SOURCE = ROOT / "zoo" / "matrix.c"
N_C = 1000
N_PY = 5000
LEAK_CLASSES = ("leaked", "indirect")


def matrix_line(name):
    """The line of zoo/matrix.c that carries `zoo_matrix:NAME`."""
    marker = "/* zoo_matrix:%s */" % name
    lines = [n for n, line in enumerate(MATRIX_SOURCE.read_text().splitlines(), 1) if marker in line]
    assert len(lines) == 1, "marker %s found on lines %s" % (marker, lines)
    return lines[0]


def matrix_marker_at(line):
    """The marker name on a line of zoo/matrix.c, or None."""
    text = MATRIX_SOURCE.read_text().splitlines()[line - 1]
    m = re.search(r"zoo_matrix:(\w+) \*/", text)
    return m.group(1) if m else None


_built = {}


def matrix_env(env):
    """PYTHONPATH with zoo_matrix built for this interpreter (built once per session)."""
    if env.venv not in _built:
        _built[env.venv] = zoo_build.build(env.python, str(env.tmp / "zoo_matrix"),
                                           source=str(MATRIX_SOURCE), name="zoo_matrix")
    return {"PYTHONPATH": _built[env.venv]}


def run(env, *command):
    """`refhunt run --json ... -o CAPTURE -- COMMAND` with zoo_matrix importable. The capture is
    where reachable objects are counted per type (the report only totals them per class)."""
    capture = env.tmp / "capture.json"
    if capture.exists():
        capture.unlink()
    r = env.run(*command, env=matrix_env(env), refhunt_args=("-o", str(capture)))
    assert r.report is not None, "no JSON report (exit code %d):\n%s" % (r.rc, r.stderr)
    r.capture = json.loads(capture.read_text())
    return r


def site_name(site):
    """A group's site, with lines of matrix.c named by their marker: `matrix.c:tuple_item`."""
    m = re.search(r"matrix\.c:(\d+)$", site or "")
    if m:
        return "matrix.c:%s" % (matrix_marker_at(int(m.group(1))) or m.group(1))
    return site or "?"


def describe(r, classes=None):
    """One line per reported group, for assertion messages."""
    groups = r.leaks + r.report.get("held", [])
    return "\n".join("  %s %s x%d at %s" % (g["class"], g["type_name"], g["count"], site_name(g["site"]))
                     for g in groups if classes is None or g["class"] in classes) or "  (no groups)"


def groups_at_marker(r, marker):
    line = matrix_line(marker)
    return [g for g in r.leaks + r.report.get("held", []) if (g["site"] or "").endswith("matrix.c:%d" % line)]


# ---------------------------------------------------------------------------------------------
# C side: zoo_matrix.leak(kind, N)

def _tuple_items(n):
    return sum(1 + i % 3 for i in range(n))


# kind: (type of the leaked objects, [(marker of what they own, its type, how many)])
C_KINDS = {
    "str_ascii": ("str", []),
    "str_ascii_long": ("str", []),
    "str_utf8": ("str", []),
    "str_latin1": ("str", []),
    "str_ucs2": ("str", []),
    "str_ucs4": ("str", []),
    "bytes_short": ("bytes", []),
    "bytes_long": ("bytes", []),
    "bytearray": ("bytearray", []),
    "int_medium": ("int", []),
    "int_big": ("int", []),
    "float": ("float", []),
    "complex": ("complex", []),
    "tuple": ("tuple", [("tuple_item", "int", _tuple_items(N_C))]),
    "list_empty": ("list", []),
    "list": ("list", [("list_item", "int", 2 * N_C)]),
    "dict_small": ("dict", [("dict_small_key", "str", N_C)]),
    "dict_10": ("dict", [("dict_10_value", "int", 10 * N_C)]),
    "set": ("set", [("set_item", "int", N_C)]),
    "frozenset": ("frozenset", [("set_item", "int", N_C)]),
    "slice": ("slice", [("slice_start", "int", N_C)]),
    # A range's stop and length: two ints made by the same line.
    "range": ("range", [("range", "int", 2 * N_C)]),
    "memoryview": ("memoryview", [("memoryview", "managedbuffer", N_C), ("memoryview_base", "bytes", N_C)]),
    # The exception's args: a tuple and an int made by the same line.
    "exception": ("ValueError", [("exception", "tuple", N_C), ("exception", "int", N_C)]),
    "bound_method": ("builtin_function_or_method", [("bound_method_self", "list", N_C)]),
    "heap_plain": ("zoo_matrix.Plain", []),
    "heap_gc": ("zoo_matrix.Tracked", [("heap_gc_item", "int", N_C)]),
}


# How a test reaches, from Python, what each made object owns (zoo_matrix.make keeps them).
C_ITEMS = {
    "tuple": "list(o)", "list": "list(o)", "set": "list(o)", "frozenset": "list(o)",
    "dict_small": "list(o)", "dict_10": "list(o.values())", "slice": "[o.start]",
    "range": "[o.stop]", "memoryview": "[o.obj]", "exception": "[o.args, o.args[0]]",
    "bound_method": "[o.__self__]", "heap_gc": "[x for x in gc.get_referents(o) if type(x) is int]",
}

C_SANITY = """
import gc, json, sys, zoo_matrix
N = int(sys.argv[1])
ITEMS = json.loads(sys.argv[2])
out = {"kinds": zoo_matrix.kinds()}
for kind in out["kinds"]:
    objs = zoo_matrix.make(kind, N)
    items = []
    for k in range(N):
        o = objs[k]
        items.extend(eval(ITEMS.get(kind, "[]")))
    del o
    # Each object and item is new: its only owner is the list (objects) or its container (items),
    # plus, here, the local name and getrefcount's argument.
    out[kind] = {
        "types": sorted({type(o).__module__ + "." + type(o).__qualname__ for o in objs}),
        "distinct": len({id(o) for o in objs}),
        "owned": all(sys.getrefcount(objs[k]) == 2 for k in range(N)),
        "items": len(items),
        "distinct_items": len({id(x) for x in items}),
        "items_owned": all(sys.getrefcount(items[k]) == 3 for k in range(len(items))) if items else True,
    }
print(json.dumps(out))
"""


def test_c_makers_make_new_distinct_objects(env):
    """Without refhunt: every kind makes N distinct objects of its type that nothing else
    holds, and their items are new as well (what the matrix below relies on)."""
    script = env.script("matrix_sanity.py", C_SANITY)
    full_env = dict(os.environ, **matrix_env(env))
    out = subprocess.run([env.python, script, str(N_C), json.dumps(C_ITEMS)], env=full_env,
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert sorted(result["kinds"]) == sorted(C_KINDS)
    for kind, (type_name, items) in C_KINDS.items():
        got = result[kind]
        short = got["types"][0].replace("builtins.", "")
        assert len(got["types"]) == 1 and short.split(".")[-1] == type_name.split(".")[-1], (kind, got)
        assert got["distinct"] == N_C and got["owned"], (kind, got)
        if kind in C_ITEMS:
            # Items Python can reach: all but a range's length and a memoryview's managed buffer.
            reachable = sum(c for m, t, c in items if t not in ("managedbuffer",)) - (N_C if kind == "range" else 0)
            assert got["items"] == got["distinct_items"] == reachable and got["items_owned"], (kind, got)


_c_runs = {}


def c_run(env, kind):
    key = (env.venv, kind)
    if key not in _c_runs:
        _c_runs[key] = run(env, "python", "-c", "import zoo_matrix; zoo_matrix.leak(%r, %d)" % (kind, N_C))
    return _c_runs[key]


@pytest.mark.parametrize("kind", list(C_KINDS))
def test_c_leak_found_at_its_line(env, kind):
    type_name, items = C_KINDS[kind]
    r = c_run(env, kind)
    assert r.rc == 0, r.stderr
    why = "\n%s %s, groups reported:\n%s" % (env, kind, describe(r))
    leaked = [g for g in groups_at_marker(r, kind) if g["class"] == "leaked"]
    assert len(leaked) == 1, "expected one leaked group at matrix.c:%s" % kind + why
    g = leaked[0]
    assert (g["type_name"], g["count"]) == (type_name, N_C), why
    assert r.report["counters"]["live_objects"] >= N_C + sum(c for _, _, c in items), why
    assert r.report["counters"]["unseen"] == 0, r.report["notes"]
    for marker, item_type, count in items:
        here = [g for g in groups_at_marker(r, marker) if g["type_name"] == item_type]
        assert [(g["class"], g["count"]) for g in here] == [("indirect", count)], (
            "expected %d indirect %s at matrix.c:%s" % (count, item_type, marker) + why)


@pytest.mark.parametrize("kind", list(C_KINDS))
def test_c_leak_reported_nowhere_else(env, kind):
    """Nothing but the kind's objects and their items is a leak: not the heap type they point
    to, not the module, not an object of the interpreter's."""
    type_name, items = C_KINDS[kind]
    r = c_run(env, kind)
    allowed = {matrix_line(kind)} | {matrix_line(m) for m, _, _ in items}
    others = [g for g in r.leaks if g["class"] in LEAK_CLASSES
              and not any((g["site"] or "").endswith("matrix.c:%d" % line) for line in allowed)]
    assert others == [], "%s %s, groups reported:\n%s" % (env, kind, describe(r))


# ---------------------------------------------------------------------------------------------
# Indirect chains

def test_leaked_head_of_a_list_chain_makes_the_rest_indirect(env):
    """Python builds head = [[[...[None]...]]] (N lists on one line); C takes one reference too
    many on the head. The head is the leak; the N-1 lists below it go when it goes."""
    script = env.script("chain.py", textwrap.dedent("""\
        import zoo_matrix
        head = None
        for _ in range(%d): head = [head]
        zoo_matrix.leak_chain(head)
        del head
    """ % N_C))
    r = run(env, "python", script)
    assert r.rc == 0, r.stderr
    why = "\n%s, groups reported:\n%s" % (env, describe(r))
    at = [(g["class"], g["type_name"], g["count"]) for g in r.at("chain.py", 3)]
    assert sorted(at) == [("indirect", "list", N_C - 1), ("leaked", "list", 1)], why
    assert [g for g in r.leaks if g["count"] >= 10 and not (g["site"] or "").endswith("chain.py:3")] == [], why


def test_one_leaked_list_owns_its_ints(env):
    r = run(env, "python", "-c", "import zoo_matrix; zoo_matrix.leak_list_of_ints(%d)" % N_C)
    assert r.rc == 0, r.stderr
    why = "\n%s, groups reported:\n%s" % (env, describe(r))
    lists = [(g["class"], g["type_name"], g["count"]) for g in groups_at_marker(r, "list_of_ints")]
    items = [(g["class"], g["type_name"], g["count"]) for g in groups_at_marker(r, "list_of_ints_item")]
    assert lists == [("leaked", "list", 1)], why
    assert items == [("indirect", "int", N_C)], why


def test_importing_the_matrix_leaks_nothing(env):
    r = run(env, "python", "-c", "import zoo_matrix")
    assert r.rc == 0, r.stderr
    assert r.leaks == [], "%s, groups reported:\n%s" % (env, describe(r))


# ---------------------------------------------------------------------------------------------
# Python side: objects kept by Python are reachable, counted, and never leaks

STR_CHARS = {"ascii": "a", "latin1": "\\xe9", "ucs2": "\\u20ac", "ucs4": "\\U0001f600"}
# How each str is made from c (one char of the kind, as a literal in the script), i and
# L = 2 + i % 39 (lengths 2..40).
STR_METHODS = {
    "format": "'%s%0*d' % (c, L - 1, i)",
    "join": "''.join([c, str(i).zfill(L - 1)])",
    "upper": "('%s%d' % (c, i)).upper()",
    "decode": "('%s%d' % (c, i)).encode('utf-8').decode('utf-8')",
    "repeat": "('%s%d' % (c, i)) * 2",
    "slice": "SLICED[c][i % 50:i % 50 + L]",
}

# kind: (expression that makes the list of N kept objects, [(type, objects of it per item)])
PY_KINDS = {
    "str_%s_%s" % (width, method): (
        "[" + expr + " for i in range(N) for c, L in [('" + char + "', 2 + i % 39)]]", [("str", 1)])
    for width, char in STR_CHARS.items() for method, expr in STR_METHODS.items()
}
PY_KINDS.update({
    "bytes": ("[b'b%d' % i for i in range(N)]", [("bytes", 1)]),
    "bytearray": ("[bytearray(b'ba%d' % i) for i in range(N)]", [("bytearray", 1)]),
    "int_medium": ("[100000 + i for i in range(N)]", [("int", 1)]),
    "int_big": ("[2 ** 70 + i for i in range(N)]", [("int", 1)]),
    "float": ("[i + 0.5 for i in range(N)]", [("float", 1)]),
    "complex": ("[complex(i, 0.5) for i in range(N)]", [("complex", 1)]),
    "tuple": ("[(i, None) for i in range(N)]", [("tuple", 1)]),
    "list": ("[[i] for i in range(N)]", [("list", 1)]),
    "dict_combined": ("[{'key': i, 'value': -i} for i in range(N)]", [("dict", 1)]),
    "dict_split": ("[materialized(SplitHolder(i)) for i in range(N)]", [("SplitHolder", 1), ("dict", 1)]),
    "instance_dict": ("[KeptPlain(i) for i in range(N)]", [("KeptPlain", 1)]),
    "instance_slots": ("[KeptSlots(i) for i in range(N)]", [("KeptSlots", 1)]),
    "set": ("[{i, -i - 1} for i in range(N)]", [("set", 1)]),
    "frozenset": ("[frozenset((i, -i - 1)) for i in range(N)]", [("frozenset", 1)]),
    "slice": ("[slice(i, None, 2) for i in range(N)]", [("slice", 1)]),
    "range": ("[range(i + 1000) for i in range(N)]", [("range", 1)]),
    "range_iterator": ("[iter(range(i + 1000)) for i in range(N)]", [("range_iterator", 1)]),
    "memoryview": ("[memoryview(b'm%d' % i) for i in range(N)]",
                   [("memoryview", 1), ("managedbuffer", 1), ("bytes", 1)]),
    "exception_traceback": ("[caught(i) for i in range(N)]", [("ValueError", 1), ("traceback", 2), ("frame", 2)]),
    "closure": ("[make_closure(i) for i in range(N)]", [("function", 1), ("cell", 1)]),
    "bound_method": ("[KeptPlain(i).method for i in range(N)]", [("method", 1), ("KeptPlain", 1)]),
    "generator": ("[gen(i) for i in range(N)]", [("generator", 1)]),
    "coroutine": ("[coro(i) for i in range(N)]", [("coroutine", 1)]),
    "heap_type": ("[type('Kept%d' % i, (), {}) for i in range(N)]", [("type", 1)]),
    "metaclass": ("[KeptMeta('M%d' % i, (), {}) for i in range(N)]", [("KeptMeta", 1)]),
    "enum": ("list(enum.Enum('KeptEnum', ['m%d' % i for i in range(N)]))", [("KeptEnum", 1)]),
    "namedtuple": ("[KeptPoint(i, -i) for i in range(N)]", [("KeptPoint", 1)]),
    "dataclass": ("[KeptData(i, -i) for i in range(N)]", [("KeptData", 1)]),
    "array": ("[array.array('i', [i]) for i in range(N)]", [("array.array", 1)]),
    "datetime": ("[EPOCH + datetime.timedelta(seconds=i) for i in range(N)]", [("datetime.datetime", 1)]),
    "decimal": ("[decimal.Decimal(i) / 7 for i in range(N)]", [("decimal.Decimal", 1)]),
})

# What a kind needs first, run only when it is kept: the stdlib modules cost a quarter of a
# second each run under refhunt, so the script keeping nothing imports none of them.
PY_SETUP = {
    "enum": "import enum",
    "namedtuple": "import collections\nKeptPoint = collections.namedtuple('KeptPoint', 'x y')",
    "dataclass": "import dataclasses\n@dataclasses.dataclass\nclass KeptData:\n    x: int\n    y: int",
    "array": "import array",
    "datetime": "import datetime\nEPOCH = datetime.datetime(2000, 1, 1)",
    "decimal": "import decimal",
}

PY_SCRIPT = """\
import sys
import warnings

N = int(sys.argv[1])
warnings.simplefilter("ignore", RuntimeWarning)  # the kept coroutines are never awaited
SLICED = {c: c * 100 for c in %(chars)s}


class KeptPlain:
    def __init__(self, i):
        self.a = i

    def method(self):
        return self.a


class KeptSlots:
    __slots__ = ("a",)

    def __init__(self, i):
        self.a = i


class SplitHolder:
    def __init__(self, i):
        self.a = i
        self.b = -i


def materialized(obj):
    obj.__dict__  # the instance's dict, made from its inline values (a split dict)
    return obj


class KeptMeta(type):
    pass


def raiser(i):
    raise ValueError(i)


def caught(i):
    try:
        raiser(i)
    except ValueError as e:
        return e  # with its traceback: two tracebacks, two frames


def make_closure(i):
    def inner():
        return i
    return inner


def gen(i):
    yield i


async def coro(i):
    return i


SETUP = %(setup)r
BUILD = {
%(build)s
}
KEEP = {}  # module level: everything kept is reachable from __main__
for name in sys.argv[2:]:
    exec(SETUP.get(name, ""), globals())
    KEEP[name] = BUILD[name]()
    assert len(KEEP[name]) == N, name
print(sum(len(v) for v in KEEP.values()))
"""


def py_script(env):
    build = "\n".join("    %r: lambda: %s," % (kind, expr) for kind, (expr, _) in PY_KINDS.items())
    chars = "[%s]" % ", ".join("'%s'" % c for c in STR_CHARS.values())
    return env.script("matrix_keep.py", PY_SCRIPT % {"chars": chars, "build": build, "setup": PY_SETUP})


def reachable_by_type(r):
    counts = Counter()
    for g in r.capture["groups"]:
        if g["class"] == "reachable":
            counts[g["type_name"]] += g["count"]
    return counts


# The program's own objects (imports, caches) move between "reachable" and "held outside" from
# run to run, and caches keep a varying few: a type that the script keeping nothing already has
# gets this much slack; a type that only the kept objects have gets none.
BASELINE_SLACK = 10


def reachable_gain(env, r, kinds):
    """Per type: reachable objects beyond the script keeping nothing, and the slack allowed.
    Kinds with a setup are compared with the same kinds at N = 0 (same imports, same classes)."""
    base = py_run(env, *kinds, n=0) if any(kind in PY_SETUP for kind in kinds) else py_run(env)
    base_reachable = reachable_by_type(base)
    base_alive = Counter()
    for g in base.capture["groups"]:
        if g["class"] not in LEAK_CLASSES:
            base_alive[g["type_name"]] += g["count"]
    reachable = reachable_by_type(r)
    gain = Counter({t: reachable[t] - base_reachable[t] for t in set(reachable) | set(base_reachable)})
    slack = Counter({t: min(BASELINE_SLACK, n) for t, n in base_alive.items()})
    return gain, slack


_py_runs = {}


def py_run(env, *kinds, n=N_PY):
    key = (env.venv, kinds, n)
    if key not in _py_runs:
        r = run(env, "python", py_script(env), str(n), *kinds)
        assert r.rc == 0, r.stderr
        assert r.stdout == "%d\n" % (n * len(kinds)), r.stdout
        _py_runs[key] = r
    return _py_runs[key]


def kept_types():
    return {t for _, types in PY_KINDS.values() for t, _ in types}


PY_SANITY = """
import collections, runpy, sys
script, n, kinds = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [script, n] + kinds
kept = runpy.run_path(script, run_name="__main__")["KEEP"]
out = {}
for kind, objs in kept.items():
    strs = [o for o in objs if isinstance(o, str)]
    out[kind] = {
        "count": len(objs),
        "distinct": len({id(o) for o in objs}),
        "types": sorted({type(o).__qualname__ for o in objs}),
        "max_char": [min(max(map(ord, o)) for o in strs), max(max(map(ord, o)) for o in strs)] if strs else None,
        "lengths": [min(map(len, strs)), max(map(len, strs))] if strs else None,
    }
print(repr(out))
"""

# The str kinds, by the range of their widest character (PEP 393's 1, 2 and 4 byte kinds).
STR_WIDTHS = {"ascii": (0, 0x7F), "latin1": (0x80, 0xFF), "ucs2": (0x100, 0xFFFF), "ucs4": (0x10000, 0x10FFFF)}


def test_python_script_keeps_what_it_says(env):
    """Without refhunt: the script keeps N distinct objects per kind, of the expected type, and
    each str kind is of its width and 2..40 characters long."""
    checker = env.script("matrix_keep_check.py", PY_SANITY)
    out = subprocess.run([env.python, checker, py_script(env), str(N_PY), *PY_KINDS],
                         capture_output=True, text=True, check=True).stdout
    got = eval(out.splitlines()[-1])
    for kind, (expr, types) in PY_KINDS.items():
        k = got[kind]
        assert k["count"] == k["distinct"] == N_PY, (kind, k)
        assert k["types"] == [types[0][0].split(".")[-1]], (kind, k)
        if kind.startswith("str_"):
            lo, hi = STR_WIDTHS[kind.split("_")[1]]
            assert lo <= k["max_char"][0] and k["max_char"][1] <= hi, (kind, k)
            assert k["lengths"][0] >= 2 and k["lengths"][1] <= 40, (kind, k)


@pytest.mark.parametrize("kind", list(PY_KINDS))
def test_python_kept_objects_are_counted_reachable(env, kind):
    """One kind kept alone: live objects grew by at least what is kept, the capture counts every
    kept object reachable under its type (beyond the same script keeping nothing), and none of
    them is reported as a leak."""
    _, types = PY_KINDS[kind]
    r = py_run(env, kind)
    gain, slack = reachable_gain(env, r, (kind,))
    live = r.report["counters"]["live_objects"]
    why = "\n%s %s: live objects %+d; reachable %s; leak groups:\n%s" % (
        env, kind, live, ", ".join("%s %d of %d" % (t, gain[t], N_PY * per) for t, per in types),
        describe(r, LEAK_CLASSES))
    assert live >= N_PY * sum(per for _, per in types), why
    for type_name, per in types:
        assert gain[type_name] + slack[type_name] >= N_PY * per, "%s reachable" % type_name + why
    kept = {t for t, _ in types}
    assert [g for g in r.leaks if g["type_name"] in kept] == [], why


def test_python_matrix_all_kinds_at_once(env):
    """Every kind in one program: every kept object alive, reachable under its type, no leak."""
    kinds = tuple(PY_KINDS)
    r = py_run(env, *kinds)
    gain, slack = reachable_gain(env, r, kinds)
    expected = Counter()
    for kind in kinds:
        for type_name, per in PY_KINDS[kind][1]:
            expected[type_name] += N_PY * per
    short = {t: "%d of %d" % (gain[t], n) for t, n in sorted(expected.items()) if gain[t] + slack[t] < n}
    leaked = [g for g in r.leaks if g["type_name"] in kept_types()]
    live = r.report["counters"]["live_objects"]
    # The self-check: every object the collector tracks was seen made, or was there before.
    # On 3.11/3.12 two class dicts of the ast module are not (docs/architecture.md).
    print("self-check %s: unseen %d of %d live" % (env, r.report["counters"]["unseen"], live))
    assert r.report["counters"]["unseen"] <= 2, r.report["notes"]
    assert (live >= sum(expected.values()), short, leaked) == (True, {}, []), (
        "%s: live objects %d of %d kept; reachable short: %s; leaks:\n%s"
        % (env, live, sum(expected.values()), short, describe(r, LEAK_CLASSES)))
