"""Real PyPI releases with known native leaks (issue 13), built from their sdists, beside the
release that fixed each. Neither leak is a Python object:

- ujson 5.3.0: `JSON_EncodeObject` returns NULL on an encoding error without freeing its output
  buffer once it has grown past the 65 kB on the stack (`Buffer_Realloc`, 256 kB from
  `PyObject_Realloc`); 5.4.0 frees it.
- regex 2020.2.18: every BESTMATCH fuzzy search loses its array of fuzzy changes
  (`save_fuzzy_changes`, 1 kB from `PyMem_Realloc`), "Git issue 365: Memory leak occurs in
  fuzzy match at some substitution use cases"; 2020.2.20 frees it.

Each is installed once per interpreter into .venv/pypi (CPython 3.11, which both build on).
"""
import json
import pathlib
import subprocess
import textwrap

import pytest

from conftest import ROOT

UJSON = """
import ujson
payload = ["x" * 100] * 2000 + [object()]  # 200 kB of output, then what it cannot encode
for _ in range(%d):
    try:
        ujson.dumps(payload)
    except TypeError:
        pass
"""

REGEX = """
import regex
text = "the quick brown fox jumps over the lazy dog " * 5
pattern = regex.compile(r"(?b)(?:jxmps){s<=2}")
for _ in range(%d):
    assert pattern.search(text).group() == "jumps"
"""


@pytest.fixture(scope="module")
def py311(env):
    version = env.python_output("import sys; print('%d.%d' % sys.version_info[:2])").strip()
    if version != "3.11" or (env.venv / "chroot").is_file():
        pytest.skip("the known-leak releases are built for this machine's CPython 3.11")
    return env


def installed(env, requirement):
    """A directory holding `requirement` built from its sdist for env's interpreter."""
    target = ROOT / ".venv" / "pypi" / env.venv.name / requirement.replace("==", "-")
    if not (target / ".complete").is_file():
        name = requirement.split("==")[0]
        subprocess.run([env.python, "-m", "pip", "install", "-q", "--no-deps", "--no-binary",
                        name, "--target", str(target), "--upgrade", requirement],
                       check=True, capture_output=True, text=True, timeout=900)
        (target / ".complete").write_text("")
    return str(target)


def run_with(env, requirement, code):
    script = env.script("pypi_%s.py" % requirement.split("==")[0], textwrap.dedent(code))
    return env.run("python", script,
                   env={"PYTHONPATH": installed(env, requirement) + ":" + env.zoo})


def functions(r, leak):
    return [f.get("function") for f in leak["native"]]


def test_ujson_5_3_0_loses_its_output_buffer_on_an_encoding_error(py311):
    r = run_with(py311, "ujson==5.3.0", UJSON % 50)
    assert r.rc == 0, r.stderr
    [leak] = r.report["native_leaks"]
    assert leak["allocator"] == "PyObject_Malloc", leak
    assert leak["count"] + leak["reachable"]["count"] == 50, leak
    assert leak["bytes"] + leak["reachable"]["bytes"] == 50 * 262144, leak
    assert leak["definite"]["count"] >= 45, leak
    assert any(f["module"].startswith("ujson.") for f in leak["native"]), leak["native"]
    assert leak["python"][0]["line"] == 6, leak["python"]
    assert r.leaks == [], r.stderr


def test_ujson_5_4_0_loses_nothing(py311):
    r = run_with(py311, "ujson==5.4.0", UJSON % 50)
    assert r.rc == 0, r.stderr
    assert r.report["native_leaks"] == [] and r.leaks == [], r.stderr


def test_regex_2020_2_18_loses_each_fuzzy_search_s_changes(py311):
    r = run_with(py311, "regex==2020.2.18", REGEX % 1000)
    assert r.rc == 0, r.stderr
    [leak] = r.report["native_leaks"]
    assert leak["allocator"] == "PyMem_Realloc", leak
    # The lost arrays, 1 kB each; a block of another caller of the same line may be held.
    assert 990 <= leak["count"] <= 1000 and leak["bytes"] == 1024 * leak["count"], leak
    # The site is the allocation wrapper's line; its caller is the function that loses it.
    assert leak["site"].endswith("_regex.c:2140"), leak["site"]
    assert "save_fuzzy_changes" in functions(r, leak), functions(r, leak)
    assert r.leaks == [], r.stderr


def test_regex_2020_2_20_loses_nothing(py311):
    r = run_with(py311, "regex==2020.2.20", REGEX % 1000)
    assert r.rc == 0, r.stderr
    assert r.report["native_leaks"] == [] and r.leaks == [], r.stderr


CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
import regex, refhunt
text = "the quick brown fox jumps over the lazy dog " * 5
pattern = regex.compile(r"(?b)(?:jxmps){s<=2}")
def search():
    for _ in range(100):
        pattern.search(text)
report = refhunt.check(search)
print(json.dumps([(n.allocator, n.per_call) for n in report.native]))
"""


@pytest.mark.parametrize("version, expected", [("2020.2.18", [["PyMem_Realloc", 100]]),
                                               ("2020.2.20", [])])
def test_check_gives_the_regex_leak_per_call(py311, version, expected):
    script = py311.script("check_regex.py", CHECK)
    completed = subprocess.run([py311.python, script, installed(py311, "regex==" + version)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == expected, completed.stdout
