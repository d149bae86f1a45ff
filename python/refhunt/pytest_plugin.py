"""pytest plugin: `pytest --refhunt` runs every test's body again and again, as regrtest -R
does, and fails the tests whose C extensions leak.

- `--refhunt` checks every test; `@pytest.mark.refhunt` checks one test without it.
- `--refhunt-repeat N` and `--refhunt-warmup N` (default 4 and 5), or the marker's `repeat=`
  and `warmup=`, set how many measured and warm-up calls of the test body run.
- Tests are screened in batches, in one window: each body runs once, then twice tracked, and
  the heap is passed over at the batch's ends only. Their reports are held until then. A
  test the batch cannot clear runs again alone: screened alone, then, if its calls may have
  leaked, with the full warm-up and measured calls and a report. `--refhunt-no-screen`
  runs every body in full.
- `--refhunt-suppress FILE` (or the `refhunt_suppress` ini option) drops the leaks that a
  rule of a suppression file matches (docs/ci.md).
- The marker's allowances: `max_objects=N` tolerates up to N leaked objects per call, and
  `ignore=("dict", "*/vendored.c:*")` drops groups whose type or site matches a pattern.
  `@pytest.mark.refhunt(skip=True)` leaves a test unchecked under `--refhunt`.

Fixtures are set up once and shared by every call of the body, as with pytest-leaks.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

import pytest
from _pytest.runner import runtestprotocol

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
        self.batch = _api.Batch()
        # The batch's tests, in order, each with its reports (held) and its outcome.
        self.held: List[Tuple[Any, List[Any], Dict[str, Any]]] = []
        self.in_batch: Any = None

    def _batched(self, item: Any) -> bool:
        """Whether `item` is screened in a batch. A pytest-xdist worker must log each test
        before it runs the next, so there every test is screened alone."""
        wanted, _ = self._settings(item)
        worker = hasattr(self.config, "workerinput")
        return wanted and not worker and not self.config.getoption("refhunt_no_screen")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: Any, nextitem: Any):
        """Runs a batched test with its reports held; at the batch's end, logs them all, each
        test the batch cannot clear run again alone first."""
        if not self._batched(item):
            return None
        if not self.held:
            self.batch.boundary()
        self.in_batch = item
        outcome: Dict[str, Any] = {}
        self.held.append((item, [], outcome))
        try:
            self.held[-1][1].extend(runtestprotocol(item, nextitem=nextitem, log=False))
        except BaseException:
            # Interrupted: the tests held are logged as they ran, none lost.
            self.batch.close()
            held, self.held = self.held, []
            self._log_unchecked(held)
            raise
        finally:
            self.in_batch = None
        full = self.batch.tests == self.batch.MOST
        if full or nextitem is None or not self._batched(nextitem):
            ended = self.batch.boundary()
            self.batch.close()
            self._log_held(ended, nextitem)
        return True

    def _log_held(self, ended: Tuple[int, int], nextitem: Any) -> None:
        """Logs the held reports, after running again alone the tests that the batch's
        verdict `ended` did not clear."""
        held, self.held = self.held, []
        flagged = ended[0] | ended[1]
        for i, (item, reports, outcome) in enumerate(held):
            if "slot" in outcome:
                if flagged >> outcome.pop("slot") & 1:
                    try:
                        reports = self._alone(item, nextitem)
                    except BaseException:
                        self._log_unchecked(held[i:])
                        raise
                else:
                    outcome["screened"] = True
            self._log(item, reports)

    def _log_unchecked(self, held: List[Tuple[Any, List[Any], Dict[str, Any]]]) -> None:
        """Logs held reports as they ran, when an interruption leaves no time to check them:
        as tests refhunt did not check."""
        for item, reports, _ in held:
            for report in reports:
                report.user_properties = [p for p in report.user_properties if p[0] != _PROPERTY]
            self._log(item, reports)

    @staticmethod
    def _log(item: Any, reports: List[Any]) -> None:
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    def _alone(self, item: Any, nextitem: Any) -> List[Any]:
        """Runs `item` again, screened alone: its reports."""
        # Down to what it shares with the test that ran last.
        item.session._setupstate.teardown_exact(item)
        item.user_properties[:] = [p for p in item.user_properties if p[0] != _PROPERTY]
        return runtestprotocol(item, nextitem=nextitem, log=False)

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

        batched = self.in_batch is item and self.held and self.held[-1][0] is item

        def in_batch() -> None:
            started = time.perf_counter()
            outcome = self.held[-1][2]
            outcome["slot"] = self.batch.tests
            try:
                self.batch.run(once)
            except _Recorded:
                return
            finally:
                outcome["seconds"] = time.perf_counter() - started
            outcome.update(screened=False, leaks="")
            item.user_properties.append((_PROPERTY, outcome))

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

        item.runtest = in_batch if batched else checked
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
