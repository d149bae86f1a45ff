"""refhunt: find reference leaks in Python C extensions.

From the command line, `refhunt run -- python app.py` reports what a program leaked. From
Python, `refhunt.check(fn, *args)` and `with refhunt.track(): ...` report what a call or a block
leaked; from pytest, `pytest --refhunt` checks every test.
"""
from ._api import check, track
from .report import Group, NativeFrame, PythonFrame, Report

__version__ = "0.1.0"
__all__ = ["check", "track", "Report", "Group", "NativeFrame", "PythonFrame"]
