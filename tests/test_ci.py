"""What refhunt gives a CI job: `--fail-on-leak` and its exit code, suppression files and
baselines (CLI, API, pytest plugin), SARIF 2.1.0 and the report JSON validated against
their schemas, GitHub annotations, `--quiet`, completions, `python -m refhunt`, and a CLI
that needs nothing installed in the Python it runs."""
import json
import re
import subprocess
import textwrap

import jsonschema
import pytest
from conftest import ROOT, marker_line, native_line, one_line_error, zoo_build

NATIVE = ROOT / "zoo" / "native.c"
HOLDERS = ROOT / "zoo" / "holders.c"
SARIF_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "sarif-schema-2.1.0.json").read_text())
REPORT_SCHEMA = json.loads((ROOT / "schema" / "report.schema.json").read_text())

# Every kind of finding in one program: leaked ints (the seed), native blocks, and a
# singleton's unexplained references.
EVERY_KIND = """
import zoo, zoo_holders, zoo_native
zoo.leakNewRefs(5000, 1000)
zoo_native.leak_malloc(1000, 100)
for i in range(200):
    zoo_holders.singleton()
"""
# An extra reference that C code kept to a list it did not make. (Alone: after a native
# leak, the holder goes unnamed in about half the runs; see the issue 17 note.)
HOLDER = """
import zoo_holders
for i in range(2000):
    zoo_holders.keep_arg([i])
"""
CLEAN = "import json, zoo; json.dumps({'a': [1, 2.5]}); zoo.make_cycle(20)"


@pytest.fixture(scope="module")
def native_zoo(env):
    zoo_build.build(env.python, env.zoo, source=str(NATIVE), name="zoo_native")
    return env


def holder_line(name):
    """The line that carries `/* zoo_holders:NAME */` in zoo/holders.c."""
    for number, line in enumerate(HOLDERS.read_text().splitlines(), 1):
        if "/* zoo_holders:%s */" % name in line:
            return number
    raise LookupError(name)


def refhunt(env, *args, extra_env=None):
    import os
    full_env = dict(os.environ, PYTHONPATH=env.zoo, **(extra_env or {}))
    return subprocess.run([env.refhunt, *args], capture_output=True, text=True,
                          cwd=str(env.tmp), env=full_env, timeout=300)


def seed(n=1000):
    return "import zoo; zoo.leakNewRefs(5000, %d)" % n


def test_fail_on_leak_exits_3_on_the_seed_and_0_on_a_clean_program(env):
    leaking = refhunt(env, "run", "--fail-on-leak", "--", env.python, "-c", seed())
    assert leaking.returncode == 3, leaking.stderr
    assert "refhunt: 1 leak of at least 1 found: exit 3" in leaking.stderr
    assert "zoo.c:%d" % marker_line("new_ref") in leaking.stderr
    clean = refhunt(env, "run", "--fail-on-leak", "--", env.python, "-c", CLEAN)
    assert clean.returncode == 0, clean.stderr
    # Without the flag a leak is reported, and the program's code stands.
    plain = refhunt(env, "run", "--", env.python, "-c", seed())
    assert plain.returncode == 0 and "1 leak group (1,000 objects" in plain.stderr, plain.stderr


def test_the_threshold_and_the_programs_own_failure_come_first(env):
    small = refhunt(env, "run", "--fail-on-leak=1001", "--", env.python, "-c", seed())
    assert small.returncode == 0, small.stderr
    big = refhunt(env, "run", "--fail-on-leak=1000", "--", env.python, "-c", seed())
    assert big.returncode == 3, big.stderr
    failed = refhunt(env, "run", "--fail-on-leak", "--", env.python, "-c",
                     seed() + "; raise SystemExit(5)")
    assert failed.returncode == 5, failed.stderr
    killed = refhunt(env, "run", "--fail-on-leak", "--", env.python, "-c",
                     seed() + "; import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert killed.returncode in (-15, 143), killed.stderr


def test_sarif_and_json_validate_and_point_at_each_line(native_zoo):
    env = native_zoo
    program = env.script("every_kind.py", EVERY_KIND)
    sarif = env.tmp / "every.sarif"
    r = env.run("python", program, refhunt_args=("--sarif", str(sarif), "--fail-on-leak"))
    assert r.rc == 3, r.stderr
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(r.report)
    assert (r.report["format"], r.report["version"]) == ("refhunt-report", 1)
    log = json.loads(sarif.read_text())
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    results = log["runs"][0]["results"]
    findings = len(r.leaks) + len(r.report["unexplained"]) + len(r.report["native_leaks"])
    assert len(results) == findings, r.stderr

    def places(rule):
        return {(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].rsplit("/", 1)[-1],
                 res["locations"][0]["physicalLocation"]["region"]["startLine"])
                for res in results if res["ruleId"] == rule}

    assert places("refhunt/leaked-objects") == {("zoo.c", marker_line("new_ref"))}, results
    assert places("refhunt/native-leak") == {("native.c", native_line("malloc", NATIVE))}
    # Where the singleton was made: no holder is named in a plain run.
    assert {f for f, _ in places("refhunt/unexplained-references")} == {"holders.c"}, results


def test_a_holder_is_reported_at_its_line_and_suppressed_by_its_name(env):
    program = env.script("holder.py", HOLDER)
    sarif = env.tmp / "holder.sarif"
    r = env.run("python", program, refhunt_args=("--sarif", str(sarif)))
    # The lists, and the ints they hold (indirect), a result each.
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    [result] = [res for res in results if "list objects" in res["message"]["text"]]
    place = result["locations"][0]["physicalLocation"]
    # The holder's line, not the Python line that made the lists.
    assert place["artifactLocation"]["uri"].endswith("holders.c"), r.stderr
    assert place["region"]["startLine"] == holder_line("incref_arg"), r.stderr
    baseline = env.tmp / "holder.supp"
    env.run("python", program, refhunt_args=("--baseline", str(baseline)))
    assert "kind=objects type=list holder=keep_arg\n" in baseline.read_text()
    rules = env.tmp / "by_holder.supp"
    rules.write_text("holder=keep_*\nkind=objects type=int\n")
    kept = env.run("python", program, refhunt_args=("--suppress", str(rules), "--fail-on-leak"))
    assert kept.rc == 0 and not kept.leaks, kept.stderr


def test_a_baseline_gates_on_new_leaks_only(native_zoo):
    env = native_zoo
    program = env.script("known.py", EVERY_KIND)
    baseline = env.tmp / "known.supp"
    first = env.run("python", program, refhunt_args=("--baseline", str(baseline)))
    assert first.rc == 0 and first.leaks, first.stderr
    rules = [l for l in baseline.read_text().splitlines() if not l.startswith("#")]
    # A rule per finding, and a second by site for those whose holder is named.
    findings = len(first.leaks) + len(first.report["unexplained"]) + len(
        first.report["native_leaks"])
    assert findings <= len(rules) <= 2 * findings, rules
    known = env.run("python", program,
                    refhunt_args=("--suppress", str(baseline), "--fail-on-leak"))
    assert known.rc == 0, known.stderr
    assert not known.leaks and not known.report["native_leaks"], known.stderr
    assert {s["type_name"] for s in known.report["suppressed"]} == {"int", "malloc", "tuple"}
    assert "suppressed: 1,000 int objects at" in known.stderr
    # The same program with one leak more.
    env.script("known.py", EVERY_KIND + "zoo.leak_float(1.5, 30)\n")
    gated = env.run("python", program, refhunt_args=("--suppress", str(baseline), "--fail-on-leak"))
    assert gated.rc == 3, gated.stderr
    assert [g["type_name"] for g in gated.leaks] == ["float"], gated.stderr


def test_rules_match_by_type_site_holder_and_module(native_zoo):
    env = native_zoo
    program = env.script("rules.py", EVERY_KIND)
    rules = env.tmp / "rules.supp"
    rules.write_text(textwrap.dedent("""\
        # each kind by another key
        type=int site=*zoo.c:%d
        kind=native module=zoo_native*
        kind=references type=tuple
        """ % marker_line("new_ref")))
    r = env.run("python", program, refhunt_args=("--suppress", str(rules), "--fail-on-leak"))
    assert r.rc == 0, r.stderr
    assert {(s["kind"], s["type_name"]) for s in r.report["suppressed"]} == {
        ("objects", "int"), ("native", "malloc"), ("references", "tuple")}


def test_a_bad_suppression_file_is_one_line(env):
    bad = env.tmp / "bad.supp"
    bad.write_text("type=int\nsite zoo.c:19\n")
    line = one_line_error(refhunt(env, "run", "--suppress", str(bad), "--", env.python, "-c", "pass"))
    assert "bad.supp is not a suppression file: line 2: `site` is not key=pattern" in line
    line = one_line_error(refhunt(env, "run", "--suppress", str(env.tmp / "none.supp"), "--",
                                  env.python, "-c", "pass"))
    assert "cannot read" in line


def test_github_annotations_and_quiet(env):
    r = refhunt(env, "run", "-q", "--fail-on-leak", "--", env.python, "-c", seed(),
                extra_env={"GITHUB_ACTIONS": "true"})
    assert r.returncode == 3, r.stderr
    assert re.search(r"^::error file=\S*zoo\.c,line=%d,title=refhunt leak \(objects\)::"
                     r"leaked reference: 1,000 int objects" % marker_line("new_ref"),
                     r.stderr, re.M), r.stderr
    assert "native stack:" not in r.stderr  # --quiet: no report


SUITE = '''
import zoo

def test_leaks():
    zoo.leakNewRefs(5000, 100)
'''


def test_the_api_and_the_plugin_honour_suppressions(env):
    rules = env.tmp / "plugin.supp"
    rules.write_text("type=int site=*zoo.c:%d\n" % marker_line("new_ref"))
    suite = env.script("test_suppressed.py", SUITE)

    def pytest_run(*args):
        return subprocess.run([env.python, "-m", "pytest", "--refhunt", "-q", "-p",
                               "no:cacheprovider", suite, *args], capture_output=True,
                              text=True, cwd=str(env.tmp), env={"PYTHONPATH": env.zoo,
                                                                "PATH": "/usr/bin:/bin"})
    assert pytest_run().returncode == 1
    passed = pytest_run("--refhunt-suppress", str(rules))
    assert passed.returncode == 0, passed.stdout[-3000:]
    ini = env.tmp / "pytest.ini"
    ini.write_text("[pytest]\nrefhunt_suppress = %s\n" % rules)
    try:
        assert pytest_run("-c", str(ini)).returncode == 0
    finally:
        ini.unlink()
    code = ("import refhunt, zoo\n"
            "r = refhunt.check(zoo.leakNewRefs, 5000, 100, suppress=[%r])\n"
            "print(len(r.leaks), len(refhunt.check(zoo.leakNewRefs, 5000, 100).leaks))\n"
            % str(rules))
    out = subprocess.run([env.python, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": env.zoo, "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["0", "1"], out.stderr


def test_completions_and_python_dash_m(env):
    for shell in ("bash", "zsh", "fish"):
        script = refhunt(env, "completions", shell)
        assert script.returncode == 0 and "fail-on-leak" in script.stdout, script.stderr
    checked = subprocess.run(["bash", "-n"], input=refhunt(env, "completions", "bash").stdout,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    version = subprocess.run([env.python, "-m", "refhunt", "--version"], capture_output=True,
                             text=True)
    assert version.stdout.startswith("refhunt "), version.stderr


def test_a_python_without_refhunt_borrows_the_clis(env, tmp_path):
    """refhunt installed in one environment (pipx, a tools venv) runs a Python that has no
    refhunt of its own: the seed leak is found at its line, with its count."""
    bare = tmp_path / "bare"
    subprocess.run([env.python, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    r = env.run(python, "-c", seed(), refhunt_args=("--fail-on-leak",))
    assert r.rc == 3, r.stderr
    [group] = r.leaks
    assert (group["type_name"], group["count"]) == ("int", 1000), r.stderr
    assert group["site"].endswith("zoo.c:%d" % marker_line("new_ref")), r.stderr
    # The refhunt it ran is the lent one, and only refhunt is lent: the CLI's environment has
    # pytest, the program does not see it.
    shown = env.run(python, "-c", "import refhunt, importlib.util as u; "
                    "print(refhunt.__file__.split('/')[-3], u.find_spec('pytest'))")
    assert shown.stdout.split() == ["lent", "None"] and shown.rc == 0, shown.stderr


def test_refhunt_demo_notices_measures_and_locates(env):
    from test_wheel import assert_demo
    assert_demo(refhunt(env, "demo", "--python", env.python, "--count", "100000"))
