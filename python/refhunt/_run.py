"""`refhunt run`: track the whole program and write a capture when it exits.

The CLI puts `_bootstrap/` first on PYTHONPATH; its sitecustomize calls start(). Everything
here runs inside the user's program, so it never raises into it: a failure is one line on
stderr and the program goes on untracked.
"""
import atexit
import os
import sys

from . import _agent, _window

_ENV = ("REFHUNT_CAPTURE", "REFHUNT_STATUS", "REFHUNT_AGENT", "REFHUNT_REPEAT", "REFHUNT_WARMUP",
        "REFHUNT_SAMPLE", "REFHUNT_NO_WATCH", "REFHUNT_NO_NATIVE")


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


def _forget_environment():
    """Child processes run untracked: the capture belongs to this process alone. The program
    sees PYTHONPATH exactly as the user set it (the CLI keeps it in REFHUNT_PYTHONPATH), empty
    entries and all, or unset if it was."""
    for name in _ENV:
        os.environ.pop(name, None)
    original = os.environ.pop("REFHUNT_PYTHONPATH", None)
    if original is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = original


def start():
    capture = os.environ.get("REFHUNT_CAPTURE")
    status = os.environ.get("REFHUNT_STATUS")
    if not capture:
        return
    try:
        _agent.load()
        _agent.set_sampling(int(os.environ.get("REFHUNT_SAMPLE") or 1))
        _state.update(runs=int(os.environ.get("REFHUNT_REPEAT") or _window.RUNS),
                       warmup=int(os.environ.get("REFHUNT_WARMUP") or _window.WARMUP))
        # The agent reads REFHUNT_NO_WATCH and REFHUNT_NO_NATIVE when it starts, in begin().
        _state.update(capture=capture, owner=os.getpid(), before=_window.begin())
        _forget_environment()
        _agent.start(sys.hexversion)
    except Exception as error:  # the program must run even if tracking cannot
        _state["capture"] = None
        _write_status(status, "error: %s" % error)
        return
    _write_status(status, "started")
    _state["first_exit_handler"] = _exit_handlers() == 0
    atexit.register(_finish)


# The tracking window of this process: where its capture goes, the counters at its start, and
# how it was repeated.
_state = {"capture": None, "owner": None, "first_exit_handler": False, "before": {},
          "repeat": None, "call": None, "runs": _window.RUNS, "warmup": _window.WARMUP}


def active():
    """Whether `refhunt run` is tracking this process."""
    return _state["capture"] is not None and _state["owner"] == os.getpid()


def repeat(call, runs=None, warmup=None):
    """Makes the window `runs` measured calls of `call()` after `warmup` untracked ones; by
    default as many as `refhunt run --repeat/--warmup` said."""
    runs = _state["runs"] if runs is None else runs
    warmup = _state["warmup"] if warmup is None else warmup
    _state["before"] = _window.repeat(call, runs, warmup)
    _state["repeat"] = {"runs": runs, "warmup": warmup}
    _state["call"] = call


def _exit_handlers():
    count = getattr(atexit, "_ncallbacks", None)
    return count() if count else -1


def _finish():
    if not active():
        return  # a forked child: the report is the parent's
    try:
        _agent.pause()
        if _state["first_exit_handler"]:
            # Registered first, so run last: every other handler has run. Releasing them now
            # frees what they held (atexit.register's arguments live in a C array that no
            # traversal can see), as finalization would a moment later.
            atexit._clear()
        _window.capture(_state["capture"], _state["before"], _state["repeat"],
                        call=_state["call"])
    except Exception as error:
        _say("could not write the report: %s" % error)
