"""Whole-process counters read at both ends of a window: total refcount (debug builds),
allocated blocks and RSS. Reading them allocates nothing that survives."""
import os
import sys


def _rss():
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def read():
    """{name: value} for every counter this interpreter has."""
    values = {"allocated_blocks": sys.getallocatedblocks(), "rss": _rss()}
    total = getattr(sys, "gettotalrefcount", None)
    if total is not None:
        values["total_refcount"] = total()
    return {k: v for k, v in values.items() if v is not None}


def changes(before, after):
    """The capture's form: {name: {"before": b, "after": a}}."""
    return {k: {"before": before[k], "after": after[k]} for k in before if k in after}
