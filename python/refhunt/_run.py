"""`refhunt run`: track the whole program and write a capture when it exits.

The CLI puts `_bootstrap/` first on PYTHONPATH; its sitecustomize calls start(). Everything
here runs inside the user's program, so it never raises into it: a failure is one line on
stderr and the program goes on untracked.
"""
import atexit
import os
import sys

from . import _agent, _window

# What the program's children need to be tracked in turn (see `start_child`) stays in the
# environment; the rest belongs to this process.
_ENV = ("REFHUNT_CAPTURE", "REFHUNT_STATUS", "REFHUNT_REPEAT", "REFHUNT_WARMUP")


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
    """The program sees PYTHONPATH exactly as the user set it (the CLI keeps it in
    REFHUNT_PYTHONPATH), empty entries and all, or unset if it was."""
    for name in _ENV:
        os.environ.pop(name, None)
    original = os.environ.pop("REFHUNT_PYTHONPATH", None)
    if original is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = original


def start():
    """`refhunt run`'s program: called by the bootstrap's sitecustomize."""
    capture = os.environ.get("REFHUNT_CAPTURE")
    if not capture:
        return
    status = os.environ.get("REFHUNT_STATUS")
    _state.update(runs=int(os.environ.get("REFHUNT_REPEAT") or _window.RUNS),
                   warmup=int(os.environ.get("REFHUNT_WARMUP") or _window.WARMUP))
    _forget_environment()
    _track(capture, status, child=False)


def start_child():
    """A Python child of a tracked program (a subprocess, a `multiprocessing` worker that
    `spawn` or `forkserver` started): called at its startup by refhunt's .pth file. Its
    capture and status go into the directory REFHUNT_CHILDREN names, by PID."""
    folder = os.environ.get("REFHUNT_CHILDREN")
    if folder and not os.environ.get("REFHUNT_CAPTURE"):
        capture, status = _child_paths(folder)
        _track(capture, status, child=True)


def _child_paths(folder):
    base = os.path.join(folder, str(os.getpid()))
    return base + ".capture", base + ".status"


def _track(capture, status, child):
    """Starts the window of the whole process; its capture goes to `capture` at exit."""
    if not _open_window(capture, status, child):
        return
    _state["first_exit_handler"] = _exit_handlers() == 0
    atexit.register(_finish)
    os.register_at_fork(after_in_child=_forked)


def _open_window(capture, status, child):
    """Opens the process's window, tracking; False, with the reason in `status`, if it
    cannot be (the program runs on untracked)."""
    _state.update(capture=capture, owner=os.getpid(), repeat=None, call=None, child=child)
    if child:
        _started(status)
    try:
        _agent.load()
        _agent.set_sampling(int(os.environ.get("REFHUNT_SAMPLE") or 1))
        # The agent reads REFHUNT_NO_WATCH and REFHUNT_NO_NATIVE when it starts, in begin().
        _state["before"] = _window.begin()
        _agent.start(sys.hexversion)
    except Exception as error:  # the program must run even if tracking cannot
        _state["capture"] = None
        _write_status(status, "error: %s" % error)
        return False
    if not child:
        _started(status)
    return True


def _started(status):
    """Tells refhunt this process is tracked: "started", and for a child its command line,
    which names it if it ends without a report. A child says so first, so that it is named
    even if it is killed while its window opens."""
    if _state["child"]:
        _write_status(status, "started\n" + _command_line())
    else:
        _write_status(status, "started")


def _command_line():
    """The process's command line as JSON, from the kernel: sys.argv may not be set yet."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            words = f.read().split(b"\0")[:-1]
    except OSError:
        words = []
    return _window.json_text([os.fsdecode(w) for w in words])


def _forked():
    """A forked child (`os.fork`, `multiprocessing`'s fork and forkserver workers): the agent
    forgot every window at the fork; the child gets a window of its own, reported by PID, if
    refhunt follows children. Such workers end by `os._exit`, which runs no exit handler:
    there the report is written first."""
    folder = os.environ.get("REFHUNT_CHILDREN")
    if folder and _open_window(*_child_paths(folder), child=True):
        os._exit = _exit_reporting


_exit_now = os._exit


def _exit_reporting(code):
    """`os._exit` in a followed forked child: the report first."""
    _finish()
    _exit_now(code)


# The tracking window of this process: where its capture goes, the counters at its start, and
# how it was repeated.
_state = {"capture": None, "owner": None, "first_exit_handler": False, "before": {},
          "repeat": None, "call": None, "runs": _window.RUNS, "warmup": _window.WARMUP,
          "child": False}


def active():
    """Whether `refhunt run` is tracking this process."""
    return _state["capture"] is not None and _state["owner"] == os.getpid()


def repeat(call, runs=None, warmup=None):
    """Makes the window `runs` measured calls of `call()` after `warmup` untracked ones; by
    default as many as `refhunt run --repeat/--warmup` said."""
    runs = _state["runs"] if runs is None else runs
    warmup = _state["warmup"] if warmup is None else warmup
    _window.end()  # the program's window gives way to the repeated call's
    _state["before"] = _window.repeat(call, runs, warmup)
    _state["repeat"] = {"runs": runs, "warmup": warmup}
    _state["call"] = call


def _exit_handlers():
    count = getattr(atexit, "_ncallbacks", None)
    return count() if count else -1


def _finish():
    if not active():
        return  # a child refhunt does not follow: the report is the parent's
    _state["owner"] = None  # once, whichever exit path comes first
    child = _state["child"]
    path = _state["capture"] + ".part" if child else _state["capture"]
    try:
        _agent.pause()
        if _state["first_exit_handler"]:
            # Registered first, so run last: every other handler has run. Releasing them now
            # frees what they held (atexit.register's arguments live in a C array that no
            # traversal can see), as finalization would a moment later.
            atexit._clear()
        _window.snapshot(_state["before"], _state["repeat"], call=_state["call"])
        _agent.write_capture(path)
        if child:
            # Whole or not at all: refhunt may read it while the child is still at it.
            os.rename(path, _state["capture"])
    except Exception as error:
        # A child that outlives refhunt finds its directory gone: it says nothing.
        if not child or os.path.isdir(os.path.dirname(path)):
            _say("could not write the report: %s" % error)
