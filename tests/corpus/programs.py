"""The corpus of real programs: leak-free uses of C extensions from PyPI and of the standard
library's trickier corners. tests/test_corpus.py runs each under `refhunt run` and expects 0
leak groups; count_groups.py prints the table of groups per program and version.

A program is a command run in a scratch directory (`python` stands for the venv's
interpreter); `files` are written there first. `leak_file` is the file a zoo leak is appended
to for the variant that must report exactly that leak.
"""
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

ZOO_LEAK = "import zoo; zoo.leakNewRefs(5000, 1000)\n"
TEST_MIN = "def test_one(): assert 1\n"


class Program:
    def __init__(self, name, script=None, command=None, files=None):
        self.name = name
        self.files = dict(files or {})
        if script is not None:
            self.files[script] = (HERE / script).read_text()
            command = ["python", script]
            self.leak_file = script
        else:
            self.leak_file = next(iter(self.files))
        self.command = command

    def __repr__(self):
        return self.name

    def prepare(self, directory, leak=False):
        """Writes the program's files into directory; with leak, the zoo leak is appended to
        leak_file. Returns the command and the line number of the leak (or None)."""
        directory = pathlib.Path(directory)
        leak_line = None
        for name, text in self.files.items():
            if leak and name == self.leak_file:
                if not text.endswith("\n"):
                    text += "\n"
                leak_line = text.count("\n") + 1
                text += ZOO_LEAK
            (directory / name).write_text(text)
        return list(self.command), leak_line


EXTENSIONS = ["orjson", "yaml", "lxml", "pillow", "regex", "msgpack", "markupsafe", "psutil",
              "zstandard"]
STDLIB = ["asyncio", "threading_local", "lru_cache", "multiprocessing", "enum", "dataclasses"]

PROGRAMS = (
    [Program(name, "ext_%s.py" % name) for name in EXTENSIONS]
    + [Program("all", "ext_all.py")]
    + [Program(name, "py_%s.py" % name) for name in STDLIB]
    + [Program("pytest", command=["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_min.py"],
               files={"test_min.py": TEST_MIN})]
)
BY_NAME = {p.name: p for p in PROGRAMS}
# The programs whose leak variant the tests run: the combined one, pytest, and one of each kind.
LEAK_VARIANTS = ["all", "pytest", "lxml", "asyncio", "multiprocessing"]
