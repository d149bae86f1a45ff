"""Each feature's share of `refhunt run`'s cost, at this commit and at a base one, in one run.

Run by bench/budget.sh. For each venv (the base commit's first), each workload runs plain and
under `refhunt run` in its default mode, without native tracking (`--no-native`), without
holder breakpoints (`--no-watch`) and without both, interleaved; medians of the rounds. A
feature's share is what turning it off saves from the default mode's wall time; the rest
(objects recorded with their sampled stacks, the snapshot at the end, the report) is what
remains over the plain run without both.
"""
import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as bench  # noqa: E402

WORKLOADS = {
    "seed": bench.WORKLOADS["seed"],
    "churn": bench.WORKLOADS["churn"],
    "ast": bench.WORKLOADS["ast"],
    "ext_all": bench.SLOW["ext_all"],
}
MODES = {
    "default": [],
    "--no-native": ["--no-native"],
    "--no-watch": ["--no-watch"],
    "neither": ["--no-native", "--no-watch"],
}


def measure(python, refhunt, script, env, mode, tmp):
    if mode is None:
        return bench.run([python, script], env)[0]
    capture = str(tmp / "b.capture")
    return bench.run([refhunt, "run", *mode, "-o", capture, "--", python, script], env)[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", action="append", required=True,
                        help="NAME=VENV, the base commit's first")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(bench.ROOT / "zoo"))
    import build as zoo_build

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="refhunt-budget-"))
    venvs = [v.split("=", 1) for v in args.venv]
    python = str(pathlib.Path(venvs[0][1]) / "bin" / "python")
    env = dict(bench.os.environ, PYTHONPATH=zoo_build.build(python, str(tmp / "zoo")))
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    rows = ["Python %s, medians of %d interleaved rounds; wall time over the plain run's, and "
            "each feature's share of it (what turning it off saves)." % (version, args.runs), "",
            "| workload | commit | plain | default | native tracking | holder breakpoints "
            "| objects, stacks, snapshot, report |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for workload, code in WORKLOADS.items():
        script = tmp / ("budget_%s.py" % workload)
        script.write_text(code)
        times = {}
        for _ in range(args.runs):
            for name, venv in venvs:
                bin_ = pathlib.Path(venv) / "bin"
                times.setdefault((name, None), []).append(
                    measure(str(bin_ / "python"), None, str(script), env, None, tmp))
                for mode, flags in MODES.items():
                    times.setdefault((name, mode), []).append(
                        measure(str(bin_ / "python"), str(bin_ / "refhunt"), str(script), env,
                                flags, tmp))
        for name, _ in venvs:
            t = {mode: statistics.median(times[(name, mode)]) for mode in [None, *MODES]}
            plain = t[None]

            def share(seconds):
                return "%.2f s (%+.0f%%)" % (seconds, 100 * seconds / plain)

            rows.append("| %s | %s | %.2f s | %.2f s (%.1fx) | %s | %s | %s |" % (
                workload, name, plain, t["default"], t["default"] / plain,
                share(t["default"] - t["--no-native"]), share(t["default"] - t["--no-watch"]),
                share(t["neither"] - plain)))
            print("%s %s done" % (workload, name), file=sys.stderr)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
