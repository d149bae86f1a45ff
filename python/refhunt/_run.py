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

from . import _agent

_ENV = ("REFHUNT_CAPTURE", "REFHUNT_STATUS", "REFHUNT_AGENT")


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
        _forget_environment(bootstrap_dir)
        gc.collect()  # empties the freelists, so fewer objects are reused unseen
        _agent.start(sys.hexversion)
    except Exception as error:  # the program must run even if tracking cannot
        _write_status(status, "error: %s" % error)
        return
    _write_status(status, "started")
    global _capture, _owner_pid, _first_exit_handler
    _capture, _owner_pid = capture, os.getpid()
    _first_exit_handler = _exit_handlers() == 0
    atexit.register(_finish)


_capture = None
_owner_pid = None
_first_exit_handler = False


def _exit_handlers():
    count = getattr(atexit, "_ncallbacks", None)
    return count() if count else -1


def _header(gc_freed):
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
        "counters": {"live_objects": 0, "gc_freed": gc_freed},
        "notes": [],
    })


def _finish():
    if os.getpid() != _owner_pid:
        return  # a forked child: the report is the parent's
    try:
        _agent.pause()
        if _first_exit_handler:
            # Registered first, so run last: every other handler has run. Releasing them now
            # frees what they held (atexit.register's arguments live in a C array that no
            # traversal can see), as finalization would a moment later.
            atexit._clear()
        freed = gc.collect()
        objects = gc.get_objects()
        _agent.snapshot(objects, _header(freed), _capture)
    except Exception as error:
        _say("could not write the report: %s" % error)
