"""Prints, for each corpus program and venv, the leak groups and leaked objects of a plain
`refhunt run`: python tests/corpus/count_groups.py .venv/3.11 .venv/3.12 .venv/3.13

--save DIR keeps each run's JSON report and stderr (DIR/NAME-X.Y.json, .err) for triage;
--only NAME,NAME runs some programs; -j N runs N at once (default 4).
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from programs import BY_NAME, PROGRAMS  # noqa: E402


def version_of(venv):
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import sys; print('%d.%d' % sys.version_info[:2])"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def run_one(program, venv, version, save):
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        command, _ = program.prepare(tmp)
        command = [str(venv / "bin" / "python") if c == "python" else c for c in command]
        report = pathlib.Path(tmp) / "report.json"
        done = subprocess.run([str(venv / "bin" / "refhunt"), "run", "--json", str(report), "--", *command],
                              capture_output=True, text=True, cwd=tmp, timeout=600,
                              env=dict(os.environ))
        text = report.read_text() if report.exists() else ""
        if save:
            (save / ("%s-%s.json" % (program.name, version))).write_text(text)
            (save / ("%s-%s.err" % (program.name, version))).write_text(done.stderr)
    if not text:
        return "no report (exit %d)" % done.returncode
    leaks = json.loads(text)["leaks"]
    cell = "%d / %d" % (len(leaks), sum(g["count"] for g in leaks))
    return cell if done.returncode == 0 else cell + " (exit %d)" % done.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venvs", nargs="+", type=pathlib.Path)
    parser.add_argument("--save", type=pathlib.Path)
    parser.add_argument("--only")
    parser.add_argument("-j", type=int, default=4)
    args = parser.parse_args()
    programs = [BY_NAME[n] for n in args.only.split(",")] if args.only else PROGRAMS
    venvs = [v.resolve() for v in args.venvs]
    versions = [version_of(v) for v in venvs]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.j) as pool:
        cells = {(p.name, ver): pool.submit(run_one, p, venv, ver, args.save)
                 for p in programs for venv, ver in zip(venvs, versions)}
    width = max(len(p.name) for p in programs) + 2
    print("leak groups / leaked objects in a plain `refhunt run`")
    print("program".ljust(width) + "".join(("Python " + v).ljust(22) for v in versions))
    totals = {v: [0, 0] for v in versions}
    for p in programs:
        row = p.name.ljust(width)
        for v in versions:
            cell = cells[(p.name, v)].result()
            row += cell.ljust(22)
            parts = cell.split()
            if len(parts) >= 3 and parts[1] == "/":
                totals[v][0] += int(parts[0])
                totals[v][1] += int(parts[2])
        print(row)
    print("total".ljust(width) + "".join(("%d / %d" % tuple(totals[v])).ljust(22) for v in versions))


if __name__ == "__main__":
    main()
