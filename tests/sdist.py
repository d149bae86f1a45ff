"""A release's sdist from PyPI, unpacked once: the test suites its wheels leave out. Shared by
the end-to-end tests and bench/run.py."""
import subprocess
import sys
import tarfile


def unpacked(package, version, into, python=sys.executable):
    """The folder of `package`'s sdist of `version`, downloaded by `python`'s pip and unpacked
    under `into` (a pathlib.Path) unless it is there already."""
    folder = into / ("%s-%s" % (package, version))
    if not folder.is_dir():
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                        ":all:", "-d", str(into), "%s==%s" % (package, version)],
                       check=True, timeout=600)
        with tarfile.open(into / ("%s-%s.tar.gz" % (package, version))) as tar:
            tar.extractall(into, filter="data")
    return folder
