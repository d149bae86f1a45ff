# The Rust parts are built by setuptools-rust: the agent as a plain shared library inside the
# package (loaded with ctypes, so one build serves every CPython version), and the CLI as the
# `refhunt` executable. See docs/architecture.md, "Packaging".
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustBin, RustExtension

PTH = "refhunt_children.pth"


class build_py_with_pth(build_py):
    """Puts refhunt's .pth file at the top of the wheel, so that it lands in site-packages: it
    tracks the Python children of a program under `refhunt run` (python/refhunt/_child.py)."""

    def run(self):
        super().run()
        self.copy_file(os.path.join("python", PTH), os.path.join(self.build_lib, PTH))


setup(
    package_dir={"": "python"},
    packages=["refhunt"],
    rust_extensions=[
        RustExtension(
            "refhunt._refhunt_agent",
            path="crates/agent/Cargo.toml",
            binding=Binding.NoBinding,
            py_limited_api=False,
        ),
        RustBin("refhunt", path="crates/cli/Cargo.toml"),
    ],
    # `refhunt demo`'s leak, for the limited API of 3.9: its source ships beside it.
    ext_modules=[
        Extension("refhunt._demo", ["python/refhunt/_demo.c"], py_limited_api=True,
                  extra_compile_args=["-O2", "-g"]),
    ],
    package_data={"refhunt": ["py.typed", "__init__.pyi", "_demo.c"]},
    cmdclass={"build_py": build_py_with_pth},
    zip_safe=False,
)
