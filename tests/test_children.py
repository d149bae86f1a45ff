"""Children followed: forked children, `multiprocessing` workers of every start method and
Python subprocesses are tracked, each reported by PID beside the program's report and named
in it, or merged into it on request; a child that cannot be reported is named with why."""
import json
import pathlib
import textwrap

import pytest

from conftest import marker_line

NEW_REF = marker_line("new_ref")


def ints_at_seed_line(report):
    return sum(g["count"] for g in report["leaks"]
               if g["type_name"] == "int" and (g["site"] or "").endswith("zoo.c:%d" % NEW_REF))


def child_reports(env, r):
    """The children named in the program's report, each with its JSON report (or None)."""
    out = []
    for c in r.report.get("children", []):
        path = c.get("report")
        data = json.loads(pathlib.Path(path).read_text()) if path and path.endswith(".json") else None
        out.append((c, data))
    return out


def test_forked_children_are_reported_beside_the_parent(env):
    script = env.script("forks.py", textwrap.dedent("""
        import os, sys, zoo
        pid = os.fork()
        if pid == 0:
            zoo.leakNewRefs(5000, 2222)
            sys.exit(0)  # through the exit handlers
        os.waitpid(pid, 0)
        pid = os.fork()
        if pid == 0:
            zoo.leakNewRefs(5000, 50)
            os._exit(7)  # as multiprocessing's fork workers end
        _, status = os.waitpid(pid, 0)
        print("second child exit", os.waitstatus_to_exitcode(status))
        zoo.leakNewRefs(5000, 20)
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout == "second child exit 7\n"
    assert ints_at_seed_line(r.report) == 20
    children = child_reports(env, r)
    assert [(c["leaks"]["objects"], ints_at_seed_line(data)) for c, data in children] == [
        (2222, 2222), (50, 50)], r.stderr
    for c, data in children:
        assert data["pid"] == c["pid"] and c["report"].endswith(".%d.json" % c["pid"])
    assert r.stderr.count("child processes followed: 2") == 1
    assert "refhunt: 1 leak group (2,222 objects" in r.stderr


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_workers_of_every_start_method(env, method):
    script = env.script("mp_%s.py" % method, textwrap.dedent("""
        import multiprocessing as mp, sys, zoo

        def work(n):
            zoo.leakNewRefs(5000, n)

        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            p = ctx.Process(target=work, args=(333,))
            p.start(); p.join()
            print("worker exit", p.exitcode)
    """))
    r = env.run("python", script, method)
    assert r.rc == 0, r.stderr
    assert r.stdout == "worker exit 0\n"
    assert ints_at_seed_line(r.report) == 0
    children = child_reports(env, r)
    workers = [(c, data) for c, data in children if data and ints_at_seed_line(data)]
    assert [ints_at_seed_line(data) for _, data in workers] == [333], r.stderr
    # The others (forkserver's server, spawn's resource tracker) leak nothing, or are named.
    for c, data in children:
        assert data is not None or c["no_report"], c
        if data is not None and (c, data) not in workers:
            assert data["leaks"] == [], (c, data["leaks"])


def test_pool_workers_ended_by_terminate_are_named_with_the_reason(env):
    script = env.script("pool.py", textwrap.dedent("""
        import multiprocessing as mp, zoo

        def work(n):
            zoo.leakNewRefs(5000, n)
            return n

        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:  # __exit__ terminates the workers
                print(sum(pool.map(work, [10] * 8)))
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout == "80\n"
    children = r.report["children"]
    # Two workers, unless terminate() came before the second one had started.
    assert len(children) in (1, 2), children
    for c in children:
        assert "killed by a signal" in c["no_report"] or c.get("leaks"), c
    assert any("no report: it ended without reaching its exit path" in line
               for line in r.stderr.splitlines()), r.stderr


def test_a_python_subprocess_is_followed_and_its_report_merged_on_request(env):
    script = env.script("sub.py", textwrap.dedent("""
        import subprocess, sys, zoo
        code = "import zoo; zoo.leakNewRefs(5000, 77)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        print("child", done.returncode, repr(done.stderr))
        zoo.leakNewRefs(5000, 11)
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout == "child 0 ''\n"  # the child's own output is untouched
    [(c, data)] = child_reports(env, r)
    assert c["argv"][1:] == ["-c", "import zoo; zoo.leakNewRefs(5000, 77)"]
    assert (ints_at_seed_line(r.report), ints_at_seed_line(data)) == (11, 77)

    merged = env.run("python", script, refhunt_args=["--merge-children"])
    assert merged.rc == 0, merged.stderr
    assert ints_at_seed_line(merged.report) == 88
    assert [c["report"] for c in merged.report["children"]] == ["merged"]

    alone = env.run("python", script, refhunt_args=["--no-children"])
    assert ints_at_seed_line(alone.report) == 11
    assert "children" not in alone.report and "child processes" not in alone.stderr


def test_a_subinterpreter_is_no_child_and_ends_nothing(env):
    """A subinterpreter imports site, and so refhunt's bootstrap and `.pth` file: it was
    tracked as a child of the same PID with a report of its own (3.9-3.11, 3.13+), and on 3.12,
    whose ctypes an isolated subinterpreter cannot import, the bootstrap ended the program with
    exit code 125 before its first line ran. The process is one, tracked from its main
    interpreter: its own leak is found, and nothing else is reported."""
    script = env.script("subinterpreters.py", textwrap.dedent("""
        try:
            import _interpreters as interpreters
        except ImportError:
            import _xxsubinterpreters as interpreters
        import zoo
        for _ in range(2):
            interp = interpreters.create()
            interpreters.run_string(interp, "x = [str(i) * 3 for i in range(2000)]")
            interpreters.destroy(interp)
        zoo.leakNewRefs(5000, 20)
        print("done")
    """))
    r = env.run("python", script)
    assert r.rc == 0, r.stderr
    assert r.stdout == "done\n"
    assert [(g["type_name"], g["count"]) for g in r.report["leaks"]] == [("int", 20)], r.stderr
    assert ints_at_seed_line(r.report) == 20, r.stderr[-3000:]
    assert not r.report.get("children"), r.report.get("children")
    assert "child processes followed" not in r.stderr
