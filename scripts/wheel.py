"""Assembles refhunt's one wheel for every CPython from binaries built already (see
scripts/build-wheel.sh): the Python package, the agent (loaded with ctypes, so no CPython
ABI is involved), `refhunt demo`'s limited-API extension and its source, the CLI as a
script, and the metadata of the sdist.

    python scripts/wheel.py --cli CLI --agent AGENT.so --demo DEMO.so --sdist SDIST \
        --platform TAG --out DIR
"""
import argparse
import base64
import hashlib
import os
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "python", "refhunt")
ENTRY_POINTS = "[pytest11]\nrefhunt = refhunt.pytest_plugin\n"


def metadata(sdist):
    """The sdist's PKG-INFO: the project's core metadata, as setuptools wrote it."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1
                      and m.name.endswith("/PKG-INFO"))
        return tar.extractfile(member).read()


def field(meta, name):
    for line in meta.decode().splitlines():
        if line.startswith(name + ": "):
            return line[len(name) + 2:]
    raise LookupError(name)


def contents(args, meta):
    """(path in the wheel, bytes, executable) for every file but RECORD."""
    name, version = field(meta, "Name"), field(meta, "Version")
    info = "%s-%s.dist-info" % (name, version)
    for entry in sorted(os.listdir(PACKAGE)):
        if entry.endswith((".py", ".pyi", ".c")) or entry == "py.typed":
            with open(os.path.join(PACKAGE, entry), "rb") as f:
                yield "refhunt/" + entry, f.read(), False
    with open(args.agent, "rb") as f:
        yield "refhunt/_refhunt_agent.so", f.read(), True
    with open(args.demo, "rb") as f:
        yield "refhunt/_demo.abi3.so", f.read(), True
    with open(os.path.join(ROOT, "python", "refhunt_children.pth"), "rb") as f:
        yield "refhunt_children.pth", f.read(), False
    with open(args.cli, "rb") as f:
        yield "%s-%s.data/scripts/refhunt" % (name, version), f.read(), True
    with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
        yield info + "/licenses/LICENSE", f.read(), False
    yield info + "/METADATA", meta, False
    wheel = ("Wheel-Version: 1.0\nGenerator: refhunt scripts/wheel.py\nRoot-Is-Purelib: false\n"
             "Tag: py3-none-%s\n" % args.platform)
    yield info + "/WHEEL", wheel.encode(), False
    yield info + "/entry_points.txt", ENTRY_POINTS.encode(), False


def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--demo", required=True, help="refhunt._demo, a limited-API build")
    parser.add_argument("--sdist", required=True)
    parser.add_argument("--platform", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    meta = metadata(args.sdist)
    name, version = field(meta, "Name"), field(meta, "Version")
    path = os.path.join(args.out, "%s-%s-py3-none-%s.whl" % (name, version, args.platform))
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for arcname, data, executable in contents(args, meta):
            entry = zipfile.ZipInfo(arcname, date_time=(2026, 1, 1, 0, 0, 0))
            entry.external_attr = (0o100755 if executable else 0o100644) << 16  # regular files
            entry.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(entry, data)
            record.append("%s,%s,%d" % (arcname, digest(data), len(data)))
        info = "%s-%s.dist-info" % (name, version)
        record.append(info + "/RECORD,,")
        whl.writestr(zipfile.ZipInfo(info + "/RECORD", date_time=(2026, 1, 1, 0, 0, 0)),
                     "\n".join(record) + "\n")
    print(path)


if __name__ == "__main__":
    main()
