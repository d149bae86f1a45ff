"""`refhunt run`: track the whole program and write a capture when it exits.

The CLI puts `_bootstrap/` first on PYTHONPATH; its sitecustomize calls start(). Everything
here runs inside the user's program, so it never raises into it: a failure is one line on
stderr and the program goes on untracked.
"""
import atexit
import gc
import json
import os
import sys

from . import _agent, _counters

_ENV = ("REFHUNT_CAPTURE", "REFHUNT_STATUS", "REFHUNT_AGENT", "REFHUNT_REPEAT", "REFHUNT_WARMUP")

# regrtest -R's defaults: 5 warm-up calls, then 4 measured runs.
RUNS, WARMUP = 4, 5


def _say(message):
    try:
        sys.stderr.write("refhunt: %s\n" % message)
        sys.stderr.flush()
    except Exception:
        pass


def _write_status(path, text):
    if path:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError:
            pass


def _forget_environment(bootstrap_dir):
    """Child processes run untracked: the capture belongs to this process alone."""
    for name in _ENV:
        os.environ.pop(name, None)
    parts = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    kept = [p for p in parts if p and os.path.abspath(p) != bootstrap_dir]
    if kept:
        os.environ["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        os.environ.pop("PYTHONPATH", None)


def start(bootstrap_dir):
    capture = os.environ.get("REFHUNT_CAPTURE")
    status = os.environ.get("REFHUNT_STATUS")
    if not capture:
        return
    try:
        _agent.load()
        _window.update(runs=int(os.environ.get("REFHUNT_REPEAT") or RUNS),
                       warmup=int(os.environ.get("REFHUNT_WARMUP") or WARMUP))
        _forget_environment(bootstrap_dir)
        gc.collect()  # empties the freelists, so fewer objects are reused unseen
        _window.update(capture=capture, owner=os.getpid(), before=_counters.read())
        _agent.start(sys.hexversion)
    except Exception as error:  # the program must run even if tracking cannot
        _window["capture"] = None
        _write_status(status, "error: %s" % error)
        return
    _write_status(status, "started")
    _window["first_exit_handler"] = _exit_handlers() == 0
    atexit.register(_finish)


# The tracking window of this process: where its capture goes, the counters at its start, and
# how it was repeated.
_window = {"capture": None, "owner": None, "first_exit_handler": False, "before": {},
           "repeat": None, "runs": RUNS, "warmup": WARMUP}


def active():
    """Whether `refhunt run` is tracking this process."""
    return _window["capture"] is not None and _window["owner"] == os.getpid()


def repeat(call, runs=None, warmup=None):
    """Makes the window `runs` measured calls of `call()`, after `warmup` untracked ones; by
    default as many as `refhunt run --repeat/--warmup` said.

    Objects recorded before are forgotten; each measured call stamps what it creates with its
    run number, so the report can tell a leak (it grows in every run) from a cache filled once.
    """
    runs = _window["runs"] if runs is None else runs
    warmup = _window["warmup"] if warmup is None else warmup
    _agent.pause()
    for _ in range(warmup):
        call()
    gc.collect()
    _agent.clear()
    _window["before"] = _counters.read()
    _window["repeat"] = {"runs": runs, "warmup": warmup}
    try:
        for run in range(1, runs + 1):
            _agent.set_epoch(run)
            _agent.start(sys.hexversion)
            try:
                call()
            finally:
                _agent.pause()
    finally:
        _agent.set_epoch(0)


def _exit_handlers():
    count = getattr(atexit, "_ncallbacks", None)
    return count() if count else -1


def _header(gc_freed, after):
    counters = {"live_objects": 0, "gc_freed": gc_freed}
    counters.update(_counters.changes(_window["before"], after))
    if _window["repeat"]:
        counters["repeat"] = _window["repeat"]
    return json.dumps({
        "format": "refhunt-capture",
        "version": 1,
        "python": {
            "version": "%d.%d.%d" % sys.version_info[:3],
            "executable": sys.executable,
            "debug": hasattr(sys, "gettotalrefcount"),
        },
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "modules": [],
        "stacks": [],
        "groups": [],
        "counters": counters,
        "notes": [],
    })


def collect_saving_garbage():
    """gc.collect(), keeping what it finds unreachable: (objects found, the garbage)."""
    saved = len(gc.garbage)
    flags = gc.get_debug()
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
    finally:
        gc.set_debug(flags)
    garbage = gc.garbage[saved:]
    del gc.garbage[saved:]
    return found, garbage


def _finish():
    if not active():
        return  # a forked child: the report is the parent's
    try:
        _agent.pause()
        if _window["first_exit_handler"]:
            # Registered first, so run last: every other handler has run. Releasing them now
            # frees what they held (atexit.register's arguments live in a C array that no
            # traversal can see), as finalization would a moment later.
            atexit._clear()
        found, garbage = collect_saving_garbage()
        header = _header(found, _counters.read())
        objects = gc.get_objects()
        _agent.snapshot(objects, garbage, header, _window["capture"])
    except Exception as error:
        _say("could not write the report: %s" % error)
