"""Measure and classify: counters at both ends of the window, the class of every survivor,
and leaks confirmed by repetition (`refhunt run --repeat -- python -m refhunt.call ...`)."""
import os
import pathlib
import re
import subprocess

import pytest

from conftest import Env, _debug_venvs, marker_line

SEED_LINE = marker_line("new_ref")


def _call(env, target, *args, runs=4, warmup=5):
    return env.run("python", "-m", "refhunt.call", target, *args,
                   refhunt_args=("--repeat", str(runs), "--warmup", str(warmup)))


def test_seed_case_counters_on_a_release_build(env):
    r = env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 1000000)")
    counters = r.report["counters"]
    # The window is the whole program: the import of zoo adds a few dozen objects, and the
    # interpreter's own startup a few hundred (233 on 3.14).
    assert 1_000_000 <= counters["live_objects"] <= 1_000_400, counters
    assert counters["gc_freed"] == 0
    assert "total_refcount" not in counters  # a release build has no total refcount
    blocks = counters["allocated_blocks"]["after"] - counters["allocated_blocks"]["before"]
    assert blocks >= 990_000, counters
    assert counters["rss"]["after"] - counters["rss"]["before"] > 30_000_000
    # The program's peak holds the million ints (32 MB) and what refhunt keeps on them.
    assert 32_000_000 < counters["peak_rss"] < 200_000_000, counters
    assert re.search(r"peak RSS \d+\.\d MB", r.stderr)
    assert "live objects +1.00M" in r.stderr and "gc.collect() freed 0" in r.stderr
    assert "not collectable" in r.stderr


def test_rate_per_call_under_repetition(env):
    r = _call(env, "zoo:leakNewRefs", "5000", "1000")
    assert r.rc == 0, r.stderr
    group = r.group_at("zoo.c", SEED_LINE)
    assert group["type_name"] == "int"
    assert group["count"] == 4000 and group["runs"] == [1000] * 4
    assert group["per_call"] == 1000
    assert "1,000 int per call, grew in 4 of 4 runs" in r.stderr
    assert len(r.leaks) == 1, r.stderr
    assert r.report["counters"]["live_objects"] == 4000
    assert r.report["counters"]["repeat"] == {"runs": 4, "warmup": 5}


def test_a_cache_filled_once_is_held_outside_not_leaked(env):
    # No warm-up: the cache is filled in the first measured run and never grows again.
    r = _call(env, "zoo:cached", warmup=0)
    assert r.rc == 0, r.stderr
    assert r.leaks == [], r.stderr
    held = r.group_at("zoo.c", marker_line("static_cache"), class_="held_outside")
    assert held["type_name"] == "dict" and held["count"] == 1
    assert held["runs"] == [1, 0, 0, 0]
    assert held["evidence"] == "grew in 1 of 4 runs"


def test_growing_module_list_is_reachable_with_its_path(env):
    r = _call(env, "zoo:remember", "700000")
    assert r.leaks == [], r.stderr
    group = [g for g in r.at("zoo.c", marker_line("registry")) if g["class"] == "reachable"]
    assert len(group) == 1, r.stderr
    assert group[0]["type_name"] == "int" and group[0]["per_call"] == 1
    assert group[0]["path"] == "module zoo . _registry [list] -> int"
    assert "path: module zoo . _registry [list] -> int" in r.stderr


def test_cycles_are_cyclic_garbage(env):
    r = env.run("python", "-c", "import zoo; zoo.make_cycle(100)")
    assert r.leaks == [], r.stderr
    garbage = [g for g in r.at("zoo.c", marker_line("cycle")) if g["class"] == "garbage"]
    assert len(garbage) == 1, r.stderr
    assert garbage[0]["type_name"] == "list"
    assert garbage[0]["count"] == 100
    assert garbage[0]["evidence"] == "unreachable, in a reference cycle"
    assert r.report["counters"]["gc_freed"] >= 100


def test_call_outside_refhunt_run_says_how(env):
    completed = subprocess.run([env.python, "-m", "refhunt.call", "zoo:cached"], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=env.zoo))
    assert completed.returncode == 2
    assert "run it under refhunt" in completed.stderr


@pytest.fixture(scope="module", params=_debug_venvs() or [None],
                ids=lambda v: pathlib.Path(v).name if v else "none")
def debug_env(request, tmp_path_factory):
    venv = request.param
    if not venv:
        pytest.skip("REFHUNT_TEST_DEBUG_VENV is not set (scripts/test.sh sets it)")
    env = Env(venv, tmp_path_factory.mktemp("debug-" + pathlib.Path(venv).name))
    assert pathlib.Path(env.zoo).is_dir()
    return env


def test_seed_case_total_refcount_on_the_debug_build(debug_env):
    # The window is the call alone, as in the seed: no warm-up, one run.
    r = _call(debug_env, "zoo:leakNewRefs", "5000", "1000000", runs=1, warmup=0)
    assert r.report["python"]["debug"] is True
    total = r.report["counters"]["total_refcount"]
    assert abs(total["after"] - total["before"] - 1_000_000) <= 100, total
    assert "total refcount +1.00M (debug build)" in r.stderr
    group = r.group_at("zoo.c", SEED_LINE)
    assert group["type_name"] == "int" and group["count"] == 1_000_000


def test_seed_program_on_the_debug_build(debug_env):
    r = debug_env.run("python", "-c", "import zoo; zoo.leakNewRefs(5000, 1000000)")
    total = r.report["counters"]["total_refcount"]
    # The whole program: importing zoo adds a few hundred references.
    assert 1_000_000 <= total["after"] - total["before"] <= 1_001_000, total
    assert r.group_at("zoo.c", SEED_LINE)["count"] == 1_000_000
