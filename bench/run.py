"""refhunt beside valgrind, memray and tracemalloc, on the same workloads in one session.

Run by bench/run.sh, which installs what it needs. For each interpreter given, each workload
runs under every tool, interleaved (plain, refhunt, memray, ... then again), several times;
the table gives medians. Wall time is the whole process, report included; "report" is the
time from the program's end to a readable report. Peak RSS comes from wait4().
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKLOADS = {
    "seed": "import zoo; zoo.leakNewRefs(1000, 1000000)",
    "churn": (
        "import json\n"
        "doc = {'name': 'x' * 20, 'tags': ['a', 'b', 'c'], 'items': [{'id': i, 'v': [i, i * 2.5]}"
        " for i in range(5)]}\n"
        "for _ in range(20000):\n"
        "    doc = json.loads(json.dumps(doc))\n"
    ),
    "ast": (
        "import ast, glob, os, sysconfig\n"
        "lib = sysconfig.get_paths()['stdlib']\n"
        "for name in ['argparse', 'typing', 'inspect', 'pickle', 'tarfile', 'pydoc']:\n"
        "    with open(os.path.join(lib, name + '.py')) as f:\n"
        "        ast.parse(f.read())\n"
    ),
    # libxml2 allocates every node with malloc: native tracking's own cost.
    "lxml": (
        "from lxml import etree\n"
        "doc = b'<r>' + b''.join(b'<i id=\"%d\"><n>n%d</n><v>%d.5</v></i>' % (i, i, i)"
        " for i in range(50)) + b'</r>'\n"
        "for _ in range(3000):\n"
        "    etree.tostring(etree.fromstring(doc))\n"
    ),
}

# Workloads whose peers each run once a round: they take seconds to minutes.
SLOW = {
    # Nine real C extensions in one leak-free program (tests/corpus/ext_all.py).
    "ext_all": (ROOT / "tests" / "corpus" / "ext_all.py").read_text(),
    # A leak-free program that holds 3,000,000 objects when it ends.
    "big heap": (
        "data = [(i, str(i)) for i in range(1000000)]\n"
        "total = sum(len(s) for _, s in data)\n"
    ),
}

# Ten million objects: how the snapshot scales past the big heap. Only memray runs beside
# refhunt, once: tracemalloc took a minute on the big heap alone.
HUGE = {
    "huge heap": (
        "data = [(i, str(i)) for i in range(3333334)]\n"
        "total = sum(len(s) for _, s in data)\n"
    ),
}

# Real test suites under pytest: simplejson's, shipped in its wheel, and msgpack's, from its
# sdist (its wheels leave it out).
PYTEST_SUITES = {
    "pytest simplejson": ["--pyargs", "simplejson.tests"],
    "pytest msgpack (sdist)": ["{msgpack}"],
}
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]

# pytest-memray's object-lifetime check on every test of a suite (3.13.3 and later): a plugin
# module, put on the path and loaded with `-p`.
MEMRAY_EVERY_TEST = """
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.limit_leaked_objects())
"""

# memray's object-lifetime tracking (3.13.3 and later) around the seed's call: the objects
# made inside and alive at its end, without their C line.
MEMRAY_LIFETIMES = """
import sys, time, memray
code = open(sys.argv[1]).read()
with memray.Tracker(sys.argv[2], track_object_lifetimes=True) as tracker:
    exec(compile(code, sys.argv[1], "exec"))
end = time.perf_counter()
alive = tracker.get_surviving_objects()
sys.stderr.write("REPORT %.3f\\nSURVIVING %d\\n" % (time.perf_counter() - end, len(alive)))
"""

READING = "## Reading the table"
FAST_SAMPLES = 3

TRACEMALLOC = """
import sys, time, tracemalloc
tracemalloc.start(25)
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"))
end = time.perf_counter()
stats = tracemalloc.take_snapshot().statistics("traceback")
top = stats[0].traceback.format() if stats else []
sys.stderr.write("REPORT %.3f\\n" % (time.perf_counter() - end))
sys.stderr.write("\\n".join(top) + "\\n")
"""


def run(command, env=None):
    """(wall seconds, peak RSS bytes, stdout + stderr) of one process; GNU time reads the
    peak RSS."""
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name] + command, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        wall = time.perf_counter() - started
        kb = int(peak.read().strip().splitlines()[-1])
    return wall, kb * 1024, out


class Tools:
    def __init__(self, venv, zoo, tmp):
        self.python = str(venv / "bin" / "python")
        self.refhunt = str(venv / "bin" / "refhunt")
        self.memray = str(venv / "bin" / "memray")
        self.env = dict(os.environ, PYTHONPATH=zoo)
        self.tmp = tmp
        self.suite = []

    def version(self, code):
        return subprocess.run([self.python, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()

    def msgpack_tests(self):
        """The test folder of the installed msgpack's sdist, unpacked under tmp."""
        import sdist
        version = self.version("import importlib.metadata as m; print(m.version('msgpack'))")
        return str(sdist.unpacked("msgpack", version, self.tmp, self.python) / "test")

    def script(self, name, code):
        # Not NAME.py: a script named ast.py would import itself instead of the stdlib's ast.
        path = self.tmp / ("workload_%s.py" % name)
        path.write_text(code)
        return str(path)

    def plain(self, script):
        wall, rss, out = run([self.python, script], self.env)
        if "Traceback" in out:
            raise SystemExit("the workload %s fails on its own:\n%s" % (script, out))
        return wall, rss, None, None

    def refhunt_mode(self, script, *mode):
        capture = str(self.tmp / "r.capture")
        wall, rss, out = run([self.refhunt, "run", *mode, "-o", capture, "--", self.python, script],
                             self.env)
        # The snapshot runs inside the program and is in its wall time; symbolizing and
        # rendering come after it ends, and `refhunt report` times them alone.
        started = time.perf_counter()
        subprocess.run([self.refhunt, "report", capture], capture_output=True)
        took = time.perf_counter() - started
        # The program's own peak, as `refhunt run` measured it: GNU time's figure is the
        # larger of the program and refhunt's symbolizing process.
        with open(capture) as f:
            program_rss = json.load(f)["counters"].get("peak_rss", rss)
        return wall, program_rss, took, "zoo.c:19" in out

    def refhunt_default(self, script):
        return self.refhunt_mode(script)

    def refhunt_exact(self, script):
        return self.refhunt_mode(script, "--exact")

    def refhunt_no_native(self, script):
        return self.refhunt_mode(script, "--no-native")

    def memray_native(self, script):
        capture = self.tmp / "m.bin"
        html = self.tmp / "m.html"
        for p in (capture, html, self.tmp / "m.csv"):
            if p.exists():
                p.unlink()
        wall, rss, _ = run([self.memray, "run", "--native", "--trace-python-allocators", "-q",
                            "-o", str(capture), script], self.env)
        started = time.perf_counter()
        subprocess.run([self.memray, "flamegraph", "--leaks", "-o", str(html), str(capture)],
                       capture_output=True, env=self.env)
        report = time.perf_counter() - started
        # The flamegraph keeps lines as numbers beside interned names; the CSV spells them out.
        table = subprocess.run([self.memray, "transform", "csv", "--leaks", "-o", str(self.tmp / "m.csv"),
                                str(capture)], capture_output=True, env=self.env)
        named = table.returncode == 0 and "zoo.c;19|" in (self.tmp / "m.csv").read_text(errors="replace")
        return wall + report, rss, report, named

    def pytest_run(self, *options, env=None):
        return run([self.python, *PYTEST, *self.suite, *options], env or self.env)

    def pytest_plain(self, _script):
        wall, rss, out = self.pytest_run()
        if " passed" not in out or " failed" in out:
            raise SystemExit("the test suite fails on its own:\n%s" % out[-2000:])
        return wall, rss, None, None

    def pytest_refhunt(self, _script, *options):
        wall, rss, out = self.pytest_run("--refhunt", *options)
        leaking = re.search(r"refhunt: \d+ tests checked.*?, (\d+) leaking", out)
        if not leaking:
            raise SystemExit("pytest --refhunt gave no summary:\n%s" % out[-4000:])
        return wall, rss, None, "%s leaking" % leaking.group(1)

    def pytest_refhunt_full(self, script):
        return self.pytest_refhunt(script, "--refhunt-no-screen")

    def pytest_memray(self, _script):
        wall, rss, _ = self.pytest_run("--memray")
        return wall, rss, None, None

    def pytest_memray_objects(self, _script):
        plugins = self.tmp / "plugins"
        plugins.mkdir(exist_ok=True)
        (plugins / "memray_every_test.py").write_text(MEMRAY_EVERY_TEST)
        env = dict(self.env, PYTHONPATH="%s:%s" % (plugins, self.env["PYTHONPATH"]))
        wall, rss, out = self.pytest_run("--memray", "-p", "memray_every_test", env=env)
        failed = re.search(r"(\d+) failed", out)
        return wall, rss, None, "%s leaking" % (failed.group(1) if failed else 0)

    def memray_lifetimes(self, script):
        wrapper = self.script("memray_lifetimes", MEMRAY_LIFETIMES)
        capture = self.tmp / "l.bin"
        if capture.exists():
            capture.unlink()
        wall, rss, out = run([self.python, wrapper, script, str(capture)], self.env)
        took = re.search(r"REPORT ([\d.]+)", out)
        alive = re.search(r"SURVIVING (\d+)", out)
        return (wall, rss, float(took.group(1)) if took else None,
                "no: %s objects" % alive.group(1) if alive else "no")

    def tracemalloc(self, script):
        wrapper = self.script("tracemalloc_wrapper", TRACEMALLOC)
        wall, rss, out = run([self.python, wrapper, script], self.env)
        took = re.search(r"REPORT ([\d.]+)", out)
        return wall, rss, float(took.group(1)) if took else None, "zoo.c:19" in out

    def valgrind(self, script):
        env = dict(self.env, PYTHONMALLOC="malloc")
        wall, rss, out = run(["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                              "--num-callers=12", self.python, script], env)
        return wall, rss, None, "zoo.c:19" in out


def found(said, seed):
    """The "found" cell of a tool's runs: on the seed case, whether each named its line (yes,
    no); or what the last said (tests leaking, objects alive)."""
    if not said or said[0] is None or isinstance(said[0], bool) and not seed:
        return "-"
    if isinstance(said[0], bool):
        return "yes" if all(said) else "no"
    return said[-1]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", action="append", required=True)
    parser.add_argument("--sid-venv", action="append", default=[],
                        help="a venv of Debian sid's 3.13.3+ (scripts/sid.sh), run beside memray's "
                        "object-lifetime tracking")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "zoo"), str(ROOT / "tests")]
    import build as zoo_build

    lines = ["# Benchmarks: refhunt beside valgrind, memray and tracemalloc", "",
             "Written by `bench/run.sh` on %s, %d cores. Medians of %d interleaved rounds (plain "
             "and refhunt run three times a round; on the slow workloads, the big and huge heaps, "
             "the nine extensions and the pytest suites, plain and refhunt's default once a round "
             "and the others once in all). Wall "
             "time is the whole process with its report; ratios are to the plain run. "
             "\"Report\" is the time from the program's end to a readable report. \"Found\" says "
             "whether the tool named zoo.c:19, the line that leaks, on the seed case, and how "
             "many tests it reported leaking under pytest."
             % (" ".join(os.uname()[0:3:2]), os.cpu_count(), args.runs), ""]
    venvs = [(v, False) for v in args.venv] + [(v, True) for v in args.sid_venv]
    for index, (venv, sid) in enumerate(venvs):
        venv = pathlib.Path(venv)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="refhunt-bench-"))
        python = str(venv / "bin" / "python")
        if sid:
            # Built inside the folder, with its compiler and headers (the paths are the same
            # there).
            subprocess.run([python, str(ROOT / "zoo" / "build.py"), "--out", str(tmp / "zoo")],
                           check=True, stdout=subprocess.DEVNULL)
            zoo = str(tmp / "zoo")
        else:
            zoo = zoo_build.build(python, str(tmp / "zoo"))
        tools = Tools(venv.resolve(), zoo, tmp)
        version = tools.version("import sys; print(sys.version.split()[0])")
        title = "## Python %s" % version
        if sid:
            title += (" (Debian sid; 3.13.3 and later: memray's object-lifetime tracking and "
                      "pytest-memray's `limit_leaked_objects`)")
        lines += [title, "",
                  "| workload | tool | wall | ratio | peak RSS ratio | report | found |",
                  "|---|---|---:|---:|---:|---:|---|"]
        if sid:
            workloads = [("seed", WORKLOADS["seed"], "fast"), ("pytest simplejson", "", "pytest")]
        else:
            workloads = [(w, code, "fast") for w, code in WORKLOADS.items()]
            workloads += [(w, code, "slow") for w, code in SLOW.items()]
            workloads += [(w, code, "huge") for w, code in HUGE.items()]
            workloads += [(w, "", "pytest") for w in PYTEST_SUITES]
        for workload, code, kind in workloads:
            script = tools.script(workload.replace(" ", "_"), code)
            configs = [("plain", tools.plain),
                       ("refhunt (default: sampled stacks)", tools.refhunt_default),
                       ("refhunt --exact", tools.refhunt_exact),
                       ("refhunt --no-native", tools.refhunt_no_native),
                       ("memray --native --trace-python-allocators", tools.memray_native),
                       ("tracemalloc, 25 frames", tools.tracemalloc)]
            if kind == "slow":
                configs = configs[:2] + configs[4:]
            if kind == "huge":
                configs = configs[:2] + configs[4:5]
            if sid and kind == "fast":
                configs = configs[:2] + [("memray object lifetimes (Tracker)", tools.memray_lifetimes)]
            if kind == "pytest":
                suite = PYTEST_SUITES[workload]
                tools.suite = [tools.msgpack_tests() if a == "{msgpack}" else a for a in suite]
                configs = [("plain", tools.pytest_plain),
                           ("pytest --refhunt (screened)", tools.pytest_refhunt)]
                if sid:
                    configs.append(("pytest --memray, limit_leaked_objects on every test",
                                    tools.pytest_memray_objects))
                else:
                    # The full method runs once, on simplejson under the first interpreter:
                    # it takes over a minute.
                    if index == 0 and workload == "pytest simplejson":
                        configs.append(("pytest --refhunt --refhunt-no-screen",
                                        tools.pytest_refhunt_full))
                    configs.append(("pytest --memray", tools.pytest_memray))
            if workload == "seed" and not sid and shutil.which("valgrind"):
                configs.append(("valgrind memcheck", tools.valgrind))
            results = {name: [] for name, _ in configs}
            for round_ in range(args.runs):
                for name, measure in configs:
                    # Peers of a slow workload, and the full method under pytest, run once.
                    if kind != "fast" and round_ > 0 and name not in ("plain", configs[1][0]):
                        continue
                    # plain and refhunt take well under a second and vary by ±20% on a
                    # small VM: three samples of each per round steady their medians.
                    fast = kind == "fast" and name.startswith(("plain", "refhunt"))
                    for _ in range(FAST_SAMPLES if fast else 1):
                        results[name].append(measure(script))
                        print("%s %s %s: %.2f s" % (version, workload, name,
                                                    results[name][-1][0]), file=sys.stderr)
            base_wall = median([r[0] for r in results["plain"]])
            base_rss = median([r[1] for r in results["plain"]])
            for name, _ in configs:
                wall = median([r[0] for r in results[name]])
                rss = median([r[1] for r in results[name]])
                report = median([r[2] for r in results[name]])
                lines.append("| %s | %s | %.2f s | %.1fx | %.2fx | %s | %s |" % (
                    workload, name, wall, wall / base_wall, rss / base_rss,
                    "-" if report is None else "%.2f s" % report,
                    found([r[3] for r in results[name]], workload == "seed")))
        lines.append("")
        shutil.rmtree(tmp, ignore_errors=True)
    # The hand-written reading of the table, below its tables, is kept.
    out = pathlib.Path(args.out)
    kept = out.read_text().partition(READING)[2] if out.exists() else ""
    out.write_text("\n".join(lines) + "\n" + (READING + kept if kept else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
