"""Whether Python code runs in a subinterpreter (`_interpreters.create()`, mod_wsgi's): one
imports site, and so refhunt's `.pth` file and bootstrap, too. The agent serves the whole
process from the main interpreter's start; tracking a subinterpreter again as a child of the
process made a second report of the same PID (the bootstrap knows one otherwise: see
refhunt's sitecustomize, which on 3.12, whose ctypes an isolated subinterpreter cannot
import, ended the program with exit code 125)."""
import sys


def running_in_one():
    for name in ("_interpreters", "_xxsubinterpreters"):
        imported = name in sys.modules
        try:
            interpreters = __import__(name)
        except ImportError:
            continue
        try:
            return interpreters.get_current() != interpreters.get_main()
        finally:
            if not imported:
                del sys.modules[name]  # left as the program would find it
    return False
