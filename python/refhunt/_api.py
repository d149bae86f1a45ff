"""`refhunt.check()` and `refhunt.track()`: windows inside the running process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any, Callable, Optional

from . import _agent, _window
from .report import Report


def _cli() -> str:
    """The `refhunt` executable installed with this package."""
    here = os.path.join(sysconfig.get_path("scripts"), "refhunt")
    found = here if os.access(here, os.X_OK) else shutil.which("refhunt")
    if not found:
        raise RuntimeError("the refhunt executable is missing beside this Python; reinstall refhunt")
    return found


def _might_leak(capture: dict) -> bool:
    """Whether any leak group can survive the report's repetition rule, judged before
    symbolizing. Each `refhunt report` call costs 20-40 ms, a third of a clean check in a
    pytest session. Groups of one type are summed, since the report may merge them."""
    runs = capture["counters"].get("repeat", {}).get("runs")
    if capture.get("unexplained"):
        return True
    for n in capture.get("native", []):
        lost = n["definite"]["count"] + n["indirect"]["count"]
        grew = runs and len(n.get("runs", [])) == runs and all(n["runs"])
        if grew or (not runs and lost):
            return True
    per_type: dict = {}
    for g in capture["groups"]:
        if g["class"] not in ("leaked", "indirect"):
            continue
        if not runs:
            return True
        counts = per_type.setdefault(g["type_name"], [0] * runs)
        for i, n in enumerate(g.get("runs", [])[:runs]):
            counts[i] += n
    return any(all(counts) for counts in per_type.values())


def _report(before: dict, repeated: Optional[dict], symbolize_clean: bool = True,
            in_flight: tuple = (), call: Optional[Callable[[], Any]] = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="refhunt-") as tmp:
        path = os.path.join(tmp, "capture.json")
        _window.capture(path, before, repeated, in_flight, call)
        with open(path) as f:
            capture = json.load(f)
        if not _might_leak(capture) and not symbolize_clean:
            return Report(leaks=[], held=[], counters=capture["counters"],
                          notes=capture["notes"], text="refhunt: no leaks\n")
        cli = _cli()
        data = json.loads(subprocess.run([cli, "report", path, "--format", "json"],
                                         check=True, capture_output=True, text=True).stdout)
        text = subprocess.run([cli, "report", path], check=True, capture_output=True,
                              text=True).stdout
    return Report.from_json(data, text)


def check(fn: Callable[..., Any], *args: Any, repeat: int = _window.RUNS,
          warmup: int = _window.WARMUP, **kwargs: Any) -> Report:
    """Calls `fn(*args, **kwargs)` `warmup` times untracked, then `repeat` times tracked, and
    reports what survived. A group is a leak only if it grew in every tracked call.

    >>> report = refhunt.check(zoo.leakNewRefs, 1000, 1000)
    >>> report.leaks[0].per_call
    1000.0
    """
    return measure(lambda: fn(*args, **kwargs), repeat, warmup)


def measure(call: Callable[[], Any], repeat: int, warmup: int,
            symbolize_clean: bool = True) -> Report:
    """`check()` of `call()`; `symbolize_clean=False` (the pytest plugin) returns a bare
    report without symbolizing when nothing can be a leak."""
    _agent.install(sys.hexversion)
    before = _window.repeat(call, repeat, warmup)
    try:
        return _report(before, {"runs": repeat, "warmup": warmup}, symbolize_clean, call=call)
    finally:
        _window.end()


class track:
    """A window around a block: `with refhunt.track() as t: ...`, then `t.report`.

    Without repetition every survivor of the block is reported; prefer `check()` when the
    code can run more than once.
    """

    report: Optional[Report] = None

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
                                  in_flight=tuple(e for e in exc if e is not None))
        finally:
            _window.end()

    def assert_no_leaks(self, max_objects: float = 0, ignore: tuple = ()) -> None:
        if self.report is None:
            raise RuntimeError("the block has not finished")
        self.report.assert_no_leaks(max_objects, ignore)
