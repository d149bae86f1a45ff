"""refhunt: find reference leaks in Python C extensions.

From the command line, `refhunt run -- python app.py` reports what a program leaked. From
Python, `refhunt.check(fn, *args)` and `with refhunt.track(): ...` report what a call or a block
leaked; from pytest, `pytest --refhunt` checks every test.
"""
__version__ = "0.1.0"
__all__ = ["check", "track", "Report", "Group", "Holder", "Unexplained", "NativeLeak",
           "NativeFrame", "PythonFrame"]

# `refhunt run` imports this package inside every program it tracks, so the public names are
# imported on first use: their modules cost tens of milliseconds that a tracked program would
# otherwise pay at startup.
# __init__.pyi gives type checkers the names.
_HOME = {"check": "_api", "track": "_api", "Report": "report", "Group": "report",
         "Holder": "report", "Unexplained": "report", "NativeLeak": "report",
         "NativeFrame": "report",
         "PythonFrame": "report"}


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError("module 'refhunt' has no attribute %r" % name)
    import importlib

    return getattr(importlib.import_module("." + _HOME[name], __name__), name)
