//! The refhunt package installed with this CLI, which `refhunt run` lends to a target Python
//! that has none of its own (refhunt installed with pipx, or in a tools venv): the agent is
//! loaded with ctypes and the package is plain Python, so one copy serves every version.

use std::path::{Path, PathBuf};

/// `PREFIX/lib*/python*/site-packages/refhunt` of the environment whose `bin` holds this
/// executable, if it has one.
pub fn own() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let prefix = exe.parent()?.parent()?;
    ["lib", "lib64"]
        .iter()
        .filter_map(|lib| std::fs::read_dir(prefix.join(lib)).ok())
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python"))
        .map(|entry| entry.path().join("site-packages").join("refhunt"))
        .find(|package| is_refhunt(package))
}

fn is_refhunt(package: &Path) -> bool {
    package.join("_run.py").is_file() && package.join("__init__.py").is_file()
}
