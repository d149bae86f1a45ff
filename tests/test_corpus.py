"""The corpus of real programs (issue 11): leak-free programs that use real C extensions from
PyPI (installed by scripts/setup.sh) and the standard library's asyncio, threading.local,
lru_cache, multiprocessing, enum and dataclasses, and pytest running a trivial test file. A
plain `refhunt run` of each reports no leak; with one zoo leak appended it reports exactly
that leak. No native block is reported lost either (issue 13). The programs are in
tests/corpus/ (programs.py lists them)."""
import pathlib
import sys

import pytest

from conftest import marker_line

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "corpus"))
from programs import BY_NAME, LEAK_VARIANTS, PROGRAMS  # noqa: E402

SEED_LINE = marker_line("new_ref")


def summary(r):
    """One line per leak group, so that a failure says what was reported without the stacks."""
    lines = []
    for g in r.leaks:
        top = (g.get("python") or [{}])[0]
        lines.append("  %s: %d %s, %d B at %s (python %s:%s)" % (
            g["class"], g["count"], g["type_name"], g["bytes"], g["site"],
            top.get("file"), top.get("line")))
    return "%d leak groups:\n%s" % (len(r.leaks), "\n".join(lines))


@pytest.mark.parametrize("program", PROGRAMS, ids=str)
def test_plain_run_of_a_leak_free_program_reports_no_leak(env, program):
    command, _ = program.prepare(env.tmp)
    r = env.run(*command)
    assert r.rc == 0, r.stderr[-3000:]
    assert r.report is not None, r.stderr[-3000:]
    assert r.leaks == [], summary(r)
    assert r.report["native_leaks"] == [], r.stderr[-3000:]


@pytest.mark.parametrize("program", [BY_NAME[n] for n in LEAK_VARIANTS], ids=str)
def test_one_zoo_leak_added_is_the_only_leak_reported(env, program):
    command, leak_line = program.prepare(env.tmp, leak=True)
    r = env.run(*command)
    assert r.rc == 0, r.stderr[-3000:]
    g = r.group_at("zoo.c", SEED_LINE)
    assert (g["type_name"], g["count"], g["bytes"]) == ("int", 1000, 32000)
    top = g["python"][0]
    assert (pathlib.Path(top["file"]).name, top["line"]) == (program.leak_file, leak_line)
    assert r.leaks == [g], summary(r)
