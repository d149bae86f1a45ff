"""psutil: the current process's information, 2,000 rounds."""
import os

import psutil

proc = psutil.Process(os.getpid())
total = 0
for i in range(2000):
    mem = proc.memory_info()
    times = proc.cpu_times()
    assert proc.pid == os.getpid() and mem.rss > 0 and times.user >= 0
    total += proc.num_threads() + len(proc.name())
print("psutil", total > 0, psutil.cpu_count() > 0)
