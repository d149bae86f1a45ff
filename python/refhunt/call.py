"""`python -m refhunt.call module:function [arg ...]`: the window that `refhunt run --repeat`
measures, one function called again and again.

    refhunt run --repeat 4 --warmup 5 -- python -m refhunt.call zoo:leakNewRefs 1000 1000

Each argument is a Python literal (`1000`, `'text'`, `[1, 2]`), or else taken as a string.
The function is called `--warmup` times untracked, then `--repeat` times tracked; a group of
survivors is a leak only if it grew in every tracked run.
"""
import ast
import importlib
import sys

from . import _run


def _argument(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve(target):
    """`package.module:function.attr` → the callable it names."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError("expected module:function, got %r" % target)
    value = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError("%s is not callable" % target)
    return value


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if not _run.active():
        sys.stderr.write("refhunt.call: run it under refhunt, e.g. "
                         "`refhunt run --repeat 4 -- python -m refhunt.call %s ...`\n" % argv[0])
        return 2
    try:
        function = resolve(argv[0])
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        sys.stderr.write("refhunt.call: %s\n" % error)
        return 2
    args = [_argument(a) for a in argv[1:]]
    _run.repeat(lambda: function(*args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
