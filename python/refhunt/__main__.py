"""`python -m refhunt ...` runs the `refhunt` CLI installed with this package."""
import os
import sys

from ._api import _cli

if __name__ == "__main__":
    cli = _cli()
    os.execv(cli, [cli] + sys.argv[1:])
