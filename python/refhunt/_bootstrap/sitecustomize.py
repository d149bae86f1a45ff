# Loaded first by `refhunt run` (through PYTHONPATH): start tracking, then hand over to the
# program's own sitecustomize, if it has one.
import os
import sys


def _refhunt_bootstrap():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        from refhunt import _run
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(here)))
        from refhunt import _run

        del sys.path[0]
    _run.start(here)
    ours = sys.modules.pop("sitecustomize")
    try:
        import sitecustomize  # noqa: F401  (the program's own)
    except ImportError as error:
        if error.name != "sitecustomize":
            raise
    finally:
        sys.modules["sitecustomize"] = ours


_refhunt_bootstrap()
del _refhunt_bootstrap
