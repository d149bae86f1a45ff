# The Rust parts are built by setuptools-rust: the agent as a plain shared library inside the
# package (loaded with ctypes, so one build serves every CPython version), and the CLI as the
# `refhunt` executable. See docs/architecture.md, "Packaging".
from setuptools import setup
from setuptools_rust import Binding, RustBin, RustExtension

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
    package_data={"refhunt": ["py.typed", "__init__.pyi"]},
    zip_safe=False,
)
