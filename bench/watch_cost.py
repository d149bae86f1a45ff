"""CPU cost of one memory sample: `refhunt watch` beside the seed's pidmon.py way (psutil).

Run by bench/watch.sh. The watched process is a Python process holding about 50 MB. Each
sampler runs as its own process, samples every millisecond and prints one line a sample, as
pidmon.py does. It runs twice, for 1 s and for 3 s. The cost per sample is the extra CPU time
(user + system) of the longer run divided by its extra samples. This takes out start-up, and it
keeps the cost of waking up for each sample, which every sampler pays.
"""
import os
import resource
import subprocess
import sys
import time

INTERVAL = 0.001
SHORT, LONG = 1.0, 3.0
TARGET = "import time; keep = [bytearray(b'x' * 1_000_000) for _ in range(50)]; time.sleep(600)"

# pidmon.py's loop: psutil, one line a sample, a sleep between samples.
PIDMON = """
import sys, time, psutil
process = psutil.Process(int(sys.argv[1]))
read = getattr(process, sys.argv[2])
interval, end = float(sys.argv[3]), time.monotonic() + float(sys.argv[4])
previous = None
while time.monotonic() < end:
    rss = read().rss
    if previous is None:
        print("%10.3f [MB]" % (rss / 1e6))
    else:
        print("%10.3f [MB] %+10.3f [MB]" % (rss / 1e6, (rss - previous) / 1e6))
    previous = rss
    time.sleep(interval)
"""


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(command):
    before = children_cpu()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    samples = sum(line.endswith("[MB]") for line in out.splitlines())
    return children_cpu() - before, samples


def per_sample(make_command):
    """µs of CPU per sample, and the samples of the long run."""
    cpu_short, n_short = one_run(make_command(SHORT))
    cpu_long, n_long = one_run(make_command(LONG))
    return (cpu_long - cpu_short) / (n_long - n_short) * 1e6, n_long


def main():
    binary = sys.argv[1]
    target = subprocess.Popen([sys.executable, "-c", TARGET])
    time.sleep(1)
    pid = str(target.pid)

    def refhunt(*extra):
        return lambda seconds: [binary, "watch", pid, "--interval", "%gms" % (INTERVAL * 1000),
                                "--duration", str(seconds), *extra]

    def pidmon(method):
        return lambda seconds: [sys.executable, "-c", PIDMON, pid, method, str(INTERVAL), str(seconds)]

    try:
        rows = [
            ("refhunt watch (rss, vms, shared, text, data)", *per_sample(refhunt())),
            ("refhunt watch --json (adds faults, swap, uss, pss)", *per_sample(refhunt("--json", os.devnull))),
            ("pidmon.py loop, psutil memory_info() (rss, vms, ...)", *per_sample(pidmon("memory_info"))),
            ("pidmon.py loop, psutil memory_full_info() (adds uss, pss, swap)",
             *per_sample(pidmon("memory_full_info"))),
        ]
    finally:
        target.kill()
        target.wait()
    base = rows[2][1]
    print("Sampling every %g ms a Python process that holds 50 MB; target: under 50 µs a sample." % (INTERVAL * 1000))
    print()
    print("| sampler | CPU per sample | vs pidmon.py's way | samples in %g s |" % LONG)
    print("|---|---:|---:|---:|")
    for name, cost, samples in rows:
        print("| %s | %.1f µs | %.2fx | %d |" % (name, cost, cost / base, samples))


if __name__ == "__main__":
    main()
