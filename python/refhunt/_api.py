"""`refhunt.check()` and `refhunt.track()`: windows inside the running process."""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any, Callable, Optional, Sequence, Tuple

from . import _agent, _counters, _window
from .report import Report

# The screen's measured runs: two tell what every call leaves from what one call keeps
# until the next.
SCREEN_RUNS = 2
# One stack walked in about this many objects of a kind, as `refhunt run` does by default.
SCREEN_SAMPLING = 64


def _cli() -> str:
    """The `refhunt` executable installed with this package."""
    here = os.path.join(sysconfig.get_path("scripts"), "refhunt")
    found = here if os.access(here, os.X_OK) else shutil.which("refhunt")
    if not found:
        raise RuntimeError("the refhunt executable is missing beside this Python; reinstall refhunt")
    return found


def _report(before: dict, repeated: Optional[dict], symbolize_clean: bool = True,
            in_flight: tuple = (), call: Optional[Callable[[], Any]] = None,
            suppress: Sequence[str] = ()) -> Report:
    """The window's report. The agent judges the capture in the process; the CLI, which
    symbolizes, starts only for a window that may leak, or for a clean one when
    `symbolize_clean` asks for its full report (what is held, and where it was made). The
    CLI drops the leaks that a rule of a `suppress` file matches."""
    _window.snapshot(before, repeated, in_flight, call)
    verdict = json.loads(_agent.verdict())
    if not verdict["might_leak"] and not symbolize_clean:
        return Report(leaks=[], held=[], counters=verdict["counters"], notes=verdict["notes"],
                      text="refhunt: no leaks\n")
    with tempfile.TemporaryDirectory(prefix="refhunt-") as tmp:
        path = os.path.join(tmp, "capture.json")
        _agent.write_capture(path)
        command = [_cli(), "report", path, "--format", "json-text"]
        for rules in suppress:
            command += ["--suppress", os.fspath(rules)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr.strip() or "refhunt report failed")
        data = json.loads(done.stdout)
    return Report.from_json(data, data["text"])


def check(fn: Callable[..., Any], *args: Any, repeat: int = _window.RUNS,
          warmup: int = _window.WARMUP, suppress: Sequence[str] = (), **kwargs: Any) -> Report:
    """Calls `fn(*args, **kwargs)` `warmup` times untracked, then `repeat` times tracked, and
    reports what survived. A group is a leak only if it grew in every tracked call. Leaks
    that a rule of a `suppress` file matches are dropped (see docs/ci.md).

    >>> report = refhunt.check(zoo.leakNewRefs, 1000, 1000)
    >>> report.leaks[0].per_call
    1000.0
    """
    return measure(lambda: fn(*args, **kwargs), repeat, warmup, suppress=suppress)


def measure(call: Callable[[], Any], repeat: int, warmup: int,
            symbolize_clean: bool = True, suppress: Sequence[str] = ()) -> Report:
    """`check()` of `call()`; `symbolize_clean=False` (the pytest plugin) returns a bare
    report without symbolizing when nothing can be a leak."""
    _agent.install(sys.hexversion)
    before = _window.repeat(call, repeat, warmup)
    try:
        return _report(before, {"runs": repeat, "warmup": warmup}, symbolize_clean, call=call,
                       suppress=suppress)
    finally:
        _window.end()


def screen(call: Callable[[], Any]) -> bool:
    """The pytest plugin's cheap first pass for one test: a batch (see `Batch`) of one. Whether
    the agent finds that its calls may have left a leak that `measure()` would find (see
    docs/architecture.md, "The screen"): survivors it cannot account for quickly go to the
    snapshot and its verdict."""
    batch = Batch()
    batch.boundary()
    try:
        counters = _counters.read()
        batch.run(call)
        survivors, old = batch.boundary()
        if old:
            return True
        if survivors:
            _window.snapshot(counters, {"runs": SCREEN_RUNS, "warmup": 1})
            return json.loads(_agent.verdict())["might_leak"]
        return False
    finally:
        batch.close()


class Batch:
    """Screened calls of several tests in one window: the passes over the heap, the costly
    part, are shared. Each test's call is made once as a warm-up and twice as measured runs
    of its own; the window's end tells which tests may have left a leak that `measure()`
    would find."""

    # Two runs a test, in a mask of 64 runs.
    MOST = 64 // SCREEN_RUNS

    def __init__(self) -> None:
        self.tests = 0
        self.open = False

    def boundary(self) -> Optional[Tuple[int, int]]:
        """Opens the window and notes what the heap leads to; or, called again, says what
        the tests' calls left (see `_agent.screen`), the window still open for a snapshot
        until `close()`. Both ends are this one call, which the caller makes from
        one function, so that the frames running the passes are alike."""
        if not self.open:
            _agent.install(sys.hexversion)
            _agent.open_window()
            _agent.watch(0)
            self.open, self.tests = True, 0
        try:
            return _screen_pass(SCREEN_RUNS, self.MOST)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.open:
            self.open = False
            _agent.close_window()

    def run(self, call: Callable[[], Any]) -> None:
        """One test's calls: a warm-up, then its two measured runs. At most `MOST` tests."""
        if not self.open or self.tests == self.MOST:
            raise ValueError("no batch open, or %d tests in it already" % self.MOST)
        first = self.tests * SCREEN_RUNS
        self.tests += 1
        call()
        sampling = _agent.set_sampling(SCREEN_SAMPLING)
        _agent.screen_test(self.tests - 1, SCREEN_RUNS, False)
        try:
            for run in range(first + 1, first + SCREEN_RUNS + 1):
                _agent.set_epoch(run)
                _agent.start(sys.hexversion)
                try:
                    call()
                finally:
                    _agent.pause()
        finally:
            _agent.set_epoch(0)
            _agent.set_sampling(sampling)
            _agent.screen_test(self.tests - 1, SCREEN_RUNS, True)


def _screen_pass(runs: int, tests: int) -> Any:
    """`_agent.screen(gc.get_objects(), runs, tests)`, with no collection while the agent is
    at it: the pass allocates, and a collection it set off would free objects unseen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _agent.screen(gc.get_objects(), runs, tests)
    finally:
        if enabled:
            gc.enable()


class track:
    """A window around a block: `with refhunt.track() as t: ...`, then `t.report`.

    Without repetition every survivor of the block is reported; prefer `check()` when the
    code can run more than once.
    """

    report: Optional[Report] = None

    def __init__(self, suppress: Sequence[str] = ()) -> None:
        self._suppress = tuple(suppress)

    def __enter__(self) -> "track":
        _agent.install(sys.hexversion)
        self._before = _window.begin()
        self._sampling = _agent.set_sampling(1)  # the API walks every stack
        _agent.start(sys.hexversion)
        return self

    def __exit__(self, *exc: Any) -> None:
        _agent.pause()
        _agent.set_sampling(self._sampling)
        # An exception in flight is the program's, not a leak, and neither is its traceback.
        try:
            self.report = _report(self._before, None,
                                  in_flight=tuple(e for e in exc if e is not None),
                                  suppress=self._suppress)
        finally:
            _window.end()

    def assert_no_leaks(self, max_objects: float = 0, ignore: tuple = ()) -> None:
        if self.report is None:
            raise RuntimeError("the block has not finished")
        self.report.assert_no_leaks(max_objects, ignore)
