"""A tracking window, shared by `refhunt run`, `refhunt.call`, the Python API and the pytest
plugin: measured calls stamped with their run number, and the capture at the end."""
import gc
import os
import sys

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # an interpreter built without the accelerator
    from json.encoder import py_encode_basestring_ascii as _quote

from . import _agent, _counters

# regrtest -R's defaults: 5 warm-up calls, then 4 measured runs.
RUNS, WARMUP = 4, 5


def begin():
    """Opens a window, tracking paused: collects (which also empties the freelists, so fewer
    objects are reused unseen), opens it inside the innermost open window (which still counts
    what this one makes) or from nothing recorded, marks what the collector tracks now for
    the self-check, and returns the counters at the start. `end()` closes it."""
    gc.collect()
    _agent.install(sys.hexversion)  # the hooks are installed, and the marks kept, from here
    _agent.open_window()
    # Read before the marks: 3.14's collector tracks the dict they come in, which is made
    # while tracking is paused, and would be "unseen" unless marked.
    counters = _counters.read()
    _agent.mark_before(gc.get_objects())
    return counters


def end():
    """Closes the window `begin()` opened: the enclosing one goes on as it was."""
    _agent.close_window()


def repeat(call, runs, warmup):
    """Calls `call()` `warmup` times, then opens a window (see `begin`) and calls it `runs`
    times tracked, each measured call stamping what it creates with its run number. The
    warm-ups are tracked only by an enclosing window. Returns the counters read at the start
    of the measured runs. Exceptions from `call` propagate, the window closed."""
    if runs < 1 or warmup < 0:
        raise ValueError("repeat must be at least 1 and warmup at least 0")
    for _ in range(warmup):
        call()
    before = begin()
    # Measured runs count objects, untouched by breakpoints; a holder run follows if needed.
    _agent.watch(0)
    # "Grew in every run" compares each run's count per site: every stack is walked, even
    # inside a program that `refhunt run` samples.
    sampling = _agent.set_sampling(1)
    _agent.set_call_code(_measured.__code__)
    try:
        for run in range(1, runs + 1):
            _agent.set_epoch(run)
            _agent.start(sys.hexversion)
            try:
                _measured(call)
            finally:
                _agent.pause()
    except BaseException:
        end()
        raise
    finally:
        _agent.set_epoch(0)
        _agent.set_sampling(sampling)
    return before


def _measured(call):
    """Makes one measured call, and the holder run's: what it creates is compared between
    them up to this frame."""
    call()


def _collect_saving_garbage():
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


def _json(value):
    """JSON text of the header's values. Not the json package: importing it costs a program
    10 ms at exit, the time of its whole report."""
    if isinstance(value, dict):
        return "{%s}" % ",".join("%s:%s" % (_json(str(k)), _json(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[%s]" % ",".join(map(_json, value))
    if isinstance(value, str):
        return _quote(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError("no JSON for %r" % (value,))


def _text(value):
    """A command-line string as valid Unicode: bytes that are not UTF-8 reach Python as lone
    surrogates, which JSON cannot carry; they become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def json_text(words):
    """A list of command-line strings as JSON."""
    return _json([_text(w) for w in words])


def _facts(gc_freed, before, after, repeated, notes):
    """What only Python knows of the window, as JSON: the agent makes the capture around it."""
    counters = {"live_objects": 0, "gc_freed": gc_freed}
    counters.update(_counters.changes(before, after))
    if repeated:
        counters["repeat"] = repeated
    return _json({
        "python": {
            "version": "%d.%d.%d" % sys.version_info[:3],
            "executable": _text(sys.executable),
            "debug": hasattr(sys, "gettotalrefcount"),
        },
        "argv": [_text(a) for a in sys.argv],
        "counters": counters,
        "notes": notes,
    })


def other_tracers():
    """Notes naming the tools that share refhunt's hooks; the agent says what it costs."""
    tracemalloc = sys.modules.get("tracemalloc")
    if tracemalloc is not None and tracemalloc.is_tracing():
        return ["tracemalloc is tracing in this process: it shares the allocator hooks, and on "
                "3.13 the reference tracer (PyRefTracer) too"]
    return []


def snapshot(before, repeated=None, in_flight=(), call=None):
    """Pauses tracking and takes the capture of the window, which the agent keeps for its
    verdict and `_agent.write_capture`. `repeated` is
    `{"runs": n, "warmup": w}` when the window was repeated; `in_flight` are objects the
    program holds where no traversal looks (the exception a block ends with). With `call`,
    the repeated call, a leak whose holder no breakpoint saw is watched in one more call."""
    _agent.pause()
    found, garbage = _collect_saving_garbage()
    facts = _facts(found, before, _counters.read(), repeated, other_tracers())
    objects = gc.get_objects()
    # The snapshot allocates, and a collection it set off would free objects while the agent,
    # busy, could not see them freed.
    enabled = gc.isenabled()
    gc.disable()
    try:
        _agent.snapshot(objects, garbage, list(in_flight), facts)
    finally:
        if enabled:
            gc.enable()
    del objects, garbage
    # Old objects are watched four at a time, so there may be a few holder runs.
    while call is not None and _agent.holders_wanted():
        _holder_run(call)


def _holder_run(call):
    """Calls `call()` once more with breakpoints on the objects made at the sites of leaks
    without a holder, and on old objects whose references grew, and adds what they saw to
    the capture. The call ran before; if it now raises, the report goes without."""
    sampling = _agent.set_sampling(1)
    _agent.watch(2)
    _agent.start(sys.hexversion)
    try:
        _measured(call)
    except Exception:
        pass
    finally:
        _agent.pause()
        _agent.set_sampling(sampling)
        _agent.add_holders()
