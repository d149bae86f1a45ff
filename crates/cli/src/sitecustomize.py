# Written by `refhunt run` into a private directory put first on PYTHONPATH, so that Python
# loads it at startup: start tracking, then hand over to the program's own sitecustomize, if
# it has one. What happened is reported to refhunt through REFHUNT_STATUS. An interpreter
# that cannot import refhunt stops here, before the program runs: refhunt was asked to watch
# it and cannot. A Python without refhunt of its own borrows the CLI's (REFHUNT_LENT).
import os
import sys


def _refhunt_bootstrap():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    _refhunt_start()
    ours = sys.modules.pop("sitecustomize")
    try:
        import sitecustomize  # noqa: F401  (the program's own)
    except ImportError as error:
        if error.name != "sitecustomize":
            raise
    finally:
        sys.modules["sitecustomize"] = ours


def _refhunt_start():
    # Once tracking starts, the process's environment no longer names the capture: a
    # subinterpreter (`_interpreters.create()`, mod_wsgi's), which imports site and so this
    # file, is tracked from the main interpreter (see refhunt/_subinterpreter.py).
    if "REFHUNT_CAPTURE" not in os.environ:
        return
    lent = os.environ.pop("REFHUNT_LENT", None)
    try:
        try:
            from refhunt import _run
        except ImportError:
            # No refhunt of its own: the one installed with the CLI, if it lent one.
            if not lent:
                raise
            sys.path.append(lent)
            from refhunt import _run
    except ImportError as error:
        status = os.environ.get("REFHUNT_STATUS")
        if status:
            with open(status, "w") as f:
                f.write("noagent: %d.%d: %s" % (sys.version_info[0], sys.version_info[1], error))
        os._exit(125)
    try:
        _run.start()
    except Exception as error:
        status = os.environ.pop("REFHUNT_STATUS", None)
        if status:
            with open(status, "w") as f:
                f.write("error: %s: %s" % (type(error).__name__, error))


_refhunt_bootstrap()
del _refhunt_bootstrap, _refhunt_start
