"""What watching refcounts costs: each case under `refhunt run` with breakpoints and with
`--no-watch`, and `refhunt.check()` with its holder run and without (REFHUNT_NO_WATCH), as
medians of interleaved runs, and their ratio.

Run by bench/holders.sh, which builds the zoo for each interpreter. Constraint (issue 12): a
plain run stays within 1.2x of its cost without breakpoints.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ZOO = "import zoo_holders as z\nstore, box = z.Store(), z.Box()\n"
PLAIN = {
    "seed (1,000,000 int)": "import zoo\nzoo.leakNewRefs(1000, 1000000)\n",
    "incref_arg": ZOO + "for i in range(20000): z.keep_arg([i])\n",
    "kwargs": ZOO + "for i in range(20000): store.set(a=i)\n",
    "init_args": ZOO + "for i in range(20000): z.Keeper([i], 2)\n",
    "getter": ZOO + "for i in range(20000): box.value\n",
    "singleton": ZOO + "for i in range(20000): z.singleton()\n",
    "controls": ZOO + "c = z.Cache()\nfor i in range(20000): c.put([i]); z.borrow_ok([(i,)])\n",
}
CHECK = ZOO + """import refhunt
calls = {"incref_arg": lambda: [z.keep_arg([i]) for i in range(1000)],
         "singleton": lambda: [z.singleton() for i in range(1000)],
         "kwargs": lambda: [store.set(a=i) for i in range(1000)]}
refhunt.check(calls[%r])
"""


def timed(command, env):
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", action="append", required=True)
    parser.add_argument("--zoo", action="append", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| Python | case | watched (s) | not watched (s) | ratio |")
    print("|---|---|---|---|---|")
    for venv, zoo in zip(args.venv, args.zoo):
        python = os.path.join(venv, "bin", "python")
        refhunt = os.path.join(venv, "bin", "refhunt")
        version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        env = dict(os.environ, PYTHONPATH=zoo)
        cases = [("plain run: " + name, [refhunt, "run", "--", python, "-c", code],
                  [refhunt, "run", "--no-watch", "--", python, "-c", code], env, env)
                 for name, code in PLAIN.items()]
        cases += [("check(): " + name, [python, "-c", CHECK % name], [python, "-c", CHECK % name],
                   env, dict(env, REFHUNT_NO_WATCH="1"))
                  for name in ("incref_arg", "singleton", "kwargs")]
        for name, watched, unwatched, env_on, env_off in cases:
            on, off = [], []
            for _ in range(args.runs):
                on.append(timed(watched, env_on))
                off.append(timed(unwatched, env_off))
            a, b = statistics.median(on), statistics.median(off)
            print("| %s | %s | %.3f | %.3f | %.2fx |" % (version, name, a, b, a / b))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
