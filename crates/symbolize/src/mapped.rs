//! ELF files read through a private read-only mapping rather than copied: libpython with its
//! DWARF is 20-30 MB, and finding its debug file and its symbols touches a small part of it.

use std::path::Path;

/// The bytes of the file at `path`, mapped, or `None` if it cannot be opened or mapped.
pub fn map(path: &Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the mapping is private and read-only; the files mapped are installed binaries
    // and debug files, which are replaced (a new inode) rather than truncated in place when a
    // package is upgraded, so the mapped pages stay valid while they are read.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}
