"""pytest plugin: `pytest --refhunt` runs every test's body again and again, as regrtest -R
does, and fails the tests whose C extensions leak.

- `--refhunt` checks every test; `@pytest.mark.refhunt` checks one test without it.
- `--refhunt-repeat N` and `--refhunt-warmup N` (default 4 and 5), or the marker's `repeat=`
  and `warmup=`, set how many measured and warm-up calls of the test body run.
- Each body first runs twice, the second call tracked (the screen); only a body whose second
  call may have leaked runs the full warm-up and measured calls and gets a report.
  `--refhunt-no-screen` runs every body in full.
- `--refhunt-suppress FILE` (or the `refhunt_suppress` ini option) drops the leaks that a
  rule of a suppression file matches (docs/ci.md).
- The marker's allowances: `max_objects=N` tolerates up to N leaked objects per call, and
  `ignore=("dict", "*/vendored.c:*")` drops groups whose type or site matches a pattern.
  `@pytest.mark.refhunt(skip=True)` leaves a test unchecked under `--refhunt`.

Fixtures are set up once and shared by every call of the body, as with pytest-leaks.
"""
from __future__ import annotations

import time
from typing import Any, List, Tuple

import pytest

from . import _api, _window
from .report import Report


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("refhunt", "reference leaks in C extensions (refhunt)")
    group.addoption("--refhunt", action="store_true",
                    help="check every test for leaked references")
    group.addoption("--refhunt-repeat", type=int, default=_window.RUNS, metavar="N",
                    help="measured calls of each test body (default %(default)s)")
    group.addoption("--refhunt-warmup", type=int, default=_window.WARMUP, metavar="N",
                    help="untracked calls before them (default %(default)s)")
    group.addoption("--refhunt-no-screen", action="store_true",
                    help="run every test body in full, not only those whose screening call "
                         "may have leaked")
    group.addoption("--refhunt-suppress", action="append", default=[], metavar="FILE",
                    help="drop the leaks that a rule of FILE matches (refhunt's suppression "
                         "file; also the refhunt_suppress ini option)")
    parser.addini("refhunt_suppress", type="paths", default=[],
                  help="refhunt suppression files, as --refhunt-suppress")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "refhunt(max_objects=0, ignore=(), repeat=None, warmup=None, skip=False): check this "
        "test for leaked references, with allowances")
    config._refhunt = _Session(config)
    config.pluginmanager.register(config._refhunt, "refhunt-session")


# The name of the user property that carries a checked test's outcome.
_PROPERTY = "refhunt"


class _Recorded(Exception):
    """A unittest-style item recorded its outcome: run it no more."""


class LeakError(AssertionError):
    """The test leaked references; the message names each leak and the full report."""


def _message(leaks: List[Any], report: Report) -> str:
    lines = ["refhunt: this test leaks:"]
    lines += ["  " + g.describe() for g in leaks]
    return "\n".join(lines) + "\n\n" + report.text


class _Session:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.leaking: List[Tuple[str, str]] = []
        self.checked = 0
        self.screened = 0
        self.seconds = 0.0
        self.suppress = [str(p) for p in config.getini("refhunt_suppress")]
        self.suppress += config.getoption("refhunt_suppress")

    def _settings(self, item: Any):
        marker = item.get_closest_marker("refhunt")
        options = dict(marker.kwargs) if marker else {}
        wanted = (self.config.getoption("refhunt") or marker is not None) and not options.get("skip")
        return wanted, options

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: Any):
        wanted, options = self._settings(item)
        if not wanted:
            yield
            return
        runs = options.get("repeat") or self.config.getoption("refhunt_repeat")
        warmup = options.get("warmup")
        if warmup is None:
            warmup = self.config.getoption("refhunt_warmup")
        body = item.runtest

        def once() -> None:
            body()
            # unittest-style items record a failure or a skip instead of raising it; one
            # recorded outcome ends the checking, as a raised one does.
            if getattr(item, "_excinfo", None):
                raise _Recorded()

        def checked() -> None:
            started = time.perf_counter()
            try:
                if not self.config.getoption("refhunt_no_screen") and not _api.screen(once):
                    report = None
                else:
                    report = _api.measure(once, runs, warmup, symbolize_clean=False,
                                          suppress=self.suppress)
            except _Recorded:
                return
            finally:
                seconds = time.perf_counter() - started
            ignore = options.get("ignore", ())
            leaks = []
            if report is not None:
                leaks = report.leaks_beyond(options.get("max_objects", 0), ignore)
                leaks += report.unexplained_beyond(ignore)
                leaks += report.native_beyond(ignore)
            # Carried by the test's report, so that pytest-xdist brings it to the controller.
            item.user_properties.append((_PROPERTY, {
                "seconds": seconds, "screened": report is None,
                "leaks": "; ".join(g.describe() for g in leaks)}))
            if leaks:
                raise LeakError(_message(leaks, report))

        item.runtest = checked
        try:
            yield
        finally:
            item.runtest = body

    def pytest_runtest_logreport(self, report: Any) -> None:
        for name, value in report.user_properties:
            if name == _PROPERTY and report.when == "call":
                self.checked += 1
                self.screened += value["screened"]
                self.seconds += value["seconds"]
                if value["leaks"]:
                    self.leaking.append((report.nodeid, value["leaks"]))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.checked:
            return
        tr = terminalreporter
        if self.leaking:
            tr.write_sep("=", "refhunt: %d leaking tests" % len(self.leaking), red=True)
            for nodeid, what in self.leaking:
                tr.write_line("%s: %s" % (nodeid, what))
        tr.write_sep("=", "refhunt: %d tests checked (%d passed the screen), %d leaking; "
                          "%.2f s spent repeating and reporting"
                     % (self.checked, self.screened, len(self.leaking), self.seconds))
