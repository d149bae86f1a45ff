"""Loads the Rust agent (a plain shared library) and wraps its C entry points.

The agent is loaded with ctypes.PyDLL so that every call keeps the GIL, which the agent relies
on. It does not link against libpython: it finds the interpreter's symbols at run time.
"""
import ctypes
import os

_lib = None


class AgentError(RuntimeError):
    """The agent could not do what was asked; the message says why in one line."""


def library_path():
    """The agent's shared library: $REFHUNT_AGENT, or the one installed beside this file."""
    explicit = os.environ.get("REFHUNT_AGENT")
    if explicit:
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    # Not glob: its imports would cost every tracked program 10 ms at startup.
    found = sorted(n for n in os.listdir(here) if n.startswith("_refhunt_agent") and n.endswith(".so"))
    if not found:
        raise AgentError("the refhunt agent library is missing from %s; reinstall refhunt" % here)
    return os.path.join(here, found[0])


def load():
    global _lib
    if _lib is None:
        lib = ctypes.PyDLL(library_path())
        lib.refhunt_error.restype = ctypes.c_char_p
        lib.refhunt_start.argtypes = [ctypes.c_uint32]
        lib.refhunt_set_epoch.argtypes = [ctypes.c_uint16]
        lib.refhunt_set_sampling.argtypes = [ctypes.c_uint32]
        lib.refhunt_watch.argtypes = [ctypes.c_uint32]
        lib.refhunt_write_capture.argtypes = [ctypes.c_char_p]
        lib.refhunt_verdict.restype = ctypes.c_char_p
        lib.refhunt_set_call_code.argtypes = [ctypes.py_object]
        lib.refhunt_mark_before.argtypes = [ctypes.py_object]
        lib.refhunt_screen.argtypes = [ctypes.py_object, ctypes.c_uint16, ctypes.c_uint16,
                                       ctypes.POINTER(ctypes.c_uint64)]
        lib.refhunt_screen_test.argtypes = [ctypes.c_uint16, ctypes.c_uint16, ctypes.c_int]
        lib.refhunt_snapshot.argtypes = [ctypes.py_object, ctypes.py_object, ctypes.py_object,
                                         ctypes.c_char_p]
        # ctypes makes each function object on first use: make them all now, before any
        # window, so that none is counted in one.
        lib.refhunt_pause, lib.refhunt_open_window, lib.refhunt_close_window  # noqa: B018
        lib.refhunt_mark_before  # noqa: B018
        lib.refhunt_watch, lib.refhunt_holders_wanted, lib.refhunt_add_holders  # noqa: B018
        lib.refhunt_set_call_code  # noqa: B018
        _lib = lib
    return _lib


def _check(status):
    if status != 0:
        message = load().refhunt_error()
        raise AgentError(message.decode("utf-8", "replace") if message else "unknown agent error")


_installed = False


def start(hexversion):
    """Installs the hooks the first time; resumes tracking."""
    global _installed
    _check(load().refhunt_start(hexversion))
    _installed = True


def install(hexversion):
    """Installs the hooks, paused, unless they are in already (tracking as it was)."""
    if not _installed:
        start(hexversion)
        pause()


_sampling = 1


def set_sampling(every):
    """Walks the stack of one object in about `every` of each kind; 1 walks them all.
    Returns the previous setting."""
    global _sampling
    _check(load().refhunt_set_sampling(every))
    previous, _sampling = _sampling, every
    return previous


def pause():
    _check(load().refhunt_pause())


def set_epoch(epoch):
    """Stamps new objects with measured run `epoch` (1, 2, ...); 0 ends repetition."""
    _check(load().refhunt_set_epoch(epoch))


def open_window():
    """Opens a window, paused, inside the innermost open one, which goes on counting what
    this one makes; an outermost window starts with nothing recorded."""
    _check(load().refhunt_open_window())


def close_window():
    """Closes the innermost window: the enclosing one goes on as it was when this one
    opened, tracking or not."""
    _check(load().refhunt_close_window())


def mark_before(gc_objects):
    """Marks the objects of `gc.get_objects()` as there before the window (the self-check)."""
    _check(load().refhunt_mark_before(gc_objects))


def screen(gc_objects, runs, tests):
    """A pass of the screen (see the agent's `screen` module) in the innermost window. The
    window's first notes the refcounts of what the objects of `gc.get_objects()` lead to and
    the references found to them, and returns None. The next ends the screened calls made
    since, of `tests` tests each made as `runs` measured runs (test i's are runs i * runs + 1
    to (i + 1) * runs), with what may have left a leak: (a bit for each test whose survivors
    or native blocks the snapshot may classify, a bit for each test whose old objects only
    the full method can tell). Both passes run the same code, so that their frames are
    alike."""
    flagged = (ctypes.c_uint64 * 2)()
    status = load().refhunt_screen(gc_objects, runs, tests, flagged)
    if status < 0:
        _check(1)
    return (flagged[0], flagged[1]) if status else None


def screen_test(test, runs, ended):
    """Test `test`'s `runs` screened runs begin (`ended` false) or end: the screen notes what
    old objects gain over them."""
    _check(load().refhunt_screen_test(test, runs, int(ended)))


def snapshot(gc_objects, garbage, in_flight, facts_json):
    """Classifies the window's survivors into a capture, which the agent keeps."""
    _check(load().refhunt_snapshot(gc_objects, garbage, in_flight, facts_json.encode()))


def verdict():
    """The agent's verdict on the last capture, as JSON text: whether it may hold a leak, with
    the window's counters and notes."""
    text = load().refhunt_verdict()
    if text is None:
        _check(1)
    return text.decode()


def write_capture(path):
    """Writes the last capture to `path`, private to the user."""
    _check(load().refhunt_write_capture(os.fsencode(path)))


def watch(mode):
    """What breakpoints watch: 0 nothing, 1 objects as they are made (a plain window), 2 what
    the last snapshot wants a holder for (a holder run)."""
    _check(load().refhunt_watch(mode))


def holders_wanted():
    """Whether the last snapshot left a leak whose holder a holder run could name."""
    return load().refhunt_holders_wanted() == 1


def add_holders():
    """Ends a holder run and adds what it saw to the last capture."""
    _check(load().refhunt_add_holders())


def set_call_code(code):
    """The code of the function that makes each measured call, and the holder run's: creation
    sites are compared up to it."""
    _check(load().refhunt_set_call_code(code))
