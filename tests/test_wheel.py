"""The one wheel for every CPython (scripts/build-wheel.sh, which scripts/test.sh runs and
names in REFHUNT_TEST_WHEEL): installed into fresh venvs of 3.9, 3.12 and 3.13 with no Rust
toolchain on PATH, it finds the seed leak at its C line, and `refhunt demo` runs there. (The sid folder's 3.13-3.15 run the
whole suite from the same wheel.)"""
import glob
import os
import pathlib
import shutil
import subprocess
import zipfile

import pytest
from conftest import ROOT, marker_line, zoo_build

WHEEL = os.environ.get("REFHUNT_TEST_WHEEL", "")
VERSIONS = ("3.9", "3.12", "3.13")
NO_RUST = "/usr/bin:/bin"  # no ~/.cargo/bin


def interpreter(version):
    """pyenv's newest X.Y, else pythonX.Y on PATH."""
    found = None
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates = sorted(glob.glob(os.path.join(root, "versions", version + ".*", "bin",
                                                   "python" + version)))
        found = candidates[-1] if candidates else None
    return found or shutil.which("python" + version)


@pytest.fixture(scope="module")
def wheel():
    if not WHEEL:
        pytest.skip("REFHUNT_TEST_WHEEL is not set (scripts/test.sh builds the wheel)")
    return pathlib.Path(WHEEL)


def test_the_wheel_is_one_stripped_manylinux_wheel_for_every_python(wheel):
    assert wheel.name.endswith("-py3-none-manylinux_2_28_x86_64.whl"), wheel.name
    assert wheel.stat().st_size < 4_000_000, wheel.stat().st_size
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("refhunt/_refhunt_agent.so", "refhunt/_run.py", "refhunt_children.pth",
                   "refhunt-0.1.0.data/scripts/refhunt", "refhunt-0.1.0.dist-info/RECORD",
                   "refhunt-0.1.0.dist-info/licenses/LICENSE",
                   "refhunt-0.1.0.dist-info/entry_points.txt"):
        assert needed in names, names


@pytest.mark.parametrize("version", VERSIONS)
def test_the_wheel_finds_the_seed_leak_without_rust(wheel, version, tmp_path):
    python = interpreter(version)
    if python is None:
        pytest.skip("no Python %s here" % version)
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    env = {"PATH": "%s:%s" % (venv / "bin", NO_RUST), "HOME": str(tmp_path)}
    assert shutil.which("cargo", path=env["PATH"]) is None
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                    str(wheel)], check=True, env=env)
    zoo = zoo_build.build(str(venv / "bin" / "python"), str(tmp_path / "zoo"))
    report = tmp_path / "r.json"
    done = subprocess.run([str(venv / "bin" / "refhunt"), "run", "--json", str(report),
                           "--fail-on-leak", "--", str(venv / "bin" / "python"), "-c",
                           "import zoo; zoo.leakNewRefs(5000, 100000)"],
                          capture_output=True, text=True, env=dict(env, PYTHONPATH=zoo),
                          timeout=300)
    assert done.returncode == 3, done.stderr
    assert "zoo.c:%d" % marker_line("new_ref") in done.stderr
    assert "1 leak group (100,000 objects" in done.stderr, done.stderr
    # The demo needs no compiler: its extension ships in the wheel.
    assert_demo(subprocess.run([str(venv / "bin" / "refhunt"), "demo", "--count", "100000"],
                               capture_output=True, text=True, env=env, timeout=300))


def assert_demo(done):
    """`refhunt demo`'s three steps, as the seed's user goes through them."""
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "verdict       step growth" in out, out[-4000:]  # notice
    assert "live objects +100k" in out and "gc.collect() freed 0" in out  # measure
    assert "_demo.c:%d" % demo_line() in out, out[-4000:]  # locate
    assert "1,000 int per call, grew in 4 of 4 runs" in out  # confirm


def demo_line():
    source = ROOT / "python" / "refhunt" / "_demo.c"
    return next(n for n, line in enumerate(source.read_text().splitlines(), 1)
                if "refhunt_demo:leak" in line)
