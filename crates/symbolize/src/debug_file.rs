//! Separate debug files. Distribution Pythons and libraries ship stripped, their DWARF and
//! full symbol table in a package of their own (Debian's `python3.X-dbg` and `-dbgsym`
//! packages), found as gdb finds them: by build-id under the debug root
//! (`/usr/lib/debug/.build-id/ab/cdef….debug`), else by the `.gnu_debuglink` name beside the
//! file, in its `.debug` directory, or under the debug root; a file found by name must carry
//! the same build-id, when the stripped file has one.

use object::Object;
use std::path::{Path, PathBuf};

const DEBUG_ROOT: &str = "/usr/lib/debug";

/// The debug file of the ELF file at `path`, if one is installed.
pub fn find(path: &Path) -> Option<PathBuf> {
    let data = crate::mapped::map(path)?;
    let file = object::File::parse(&*data).ok()?;
    // A file with its own DWARF needs no other.
    if file.section_by_name(".debug_info").is_some() {
        return None;
    }
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    if let Some(id) = build_id.as_deref().filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let candidate = Path::new(DEBUG_ROOT)
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let (name, _crc) = file.gnu_debuglink().ok().flatten()?;
    let name = std::str::from_utf8(name).ok()?;
    let dir = path.canonicalize().ok()?.parent()?.to_path_buf();
    let under_root = Path::new(DEBUG_ROOT).join(dir.strip_prefix("/").unwrap_or(&dir));
    [
        dir.join(name),
        dir.join(".debug").join(name),
        under_root.join(name),
    ]
    .into_iter()
    .find(|c| c.is_file() && same_build(c, build_id.as_deref()))
}

/// Whether the debug file at `candidate` was split from a file with build-id `id`.
fn same_build(candidate: &Path, id: Option<&[u8]>) -> bool {
    let Some(id) = id else {
        return true;
    };
    let Some(data) = crate::mapped::map(candidate) else {
        return false;
    };
    object::File::parse(&*data)
        .ok()
        .and_then(|f| f.build_id().ok().flatten().map(|b| b == id))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A program built with DWARF, stripped into a file and its debug file by objcopy as
    /// distributions do, with the stripped file pointing at it by `.gnu_debuglink`.
    #[test]
    fn a_stripped_file_finds_its_debug_file_by_debuglink() {
        let dir = std::env::temp_dir().join(format!("refhunt-debugfile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".debug")).unwrap();
        let source = dir.join("p.c");
        std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
        let full = dir.join("p");
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let status = Command::new(program).args(args).status().unwrap();
            assert!(status.success(), "{program} {args:?}");
        };
        run(
            "gcc",
            &[
                "-g".as_ref(),
                "-Wl,--build-id".as_ref(),
                source.as_os_str(),
                "-o".as_ref(),
                full.as_os_str(),
            ],
        );
        let debug = dir.join(".debug").join("p.debug");
        run(
            "objcopy",
            &[
                "--only-keep-debug".as_ref(),
                full.as_os_str(),
                debug.as_os_str(),
            ],
        );
        assert_eq!(find(&full), None, "a file with DWARF needs no debug file");
        run("strip", &["--strip-debug".as_ref(), full.as_os_str()]);
        let link = format!("--add-gnu-debuglink={}", debug.display());
        run("objcopy", &[link.as_ref(), full.as_os_str()]);
        assert_eq!(find(&full), Some(dir.join(".debug").join("p.debug")));
        // A debug file of another build is not taken.
        run(
            "gcc",
            &[
                "-g".as_ref(),
                "-O1".as_ref(),
                "-Wl,--build-id".as_ref(),
                source.as_os_str(),
                "-o".as_ref(),
                dir.join("other").as_os_str(),
            ],
        );
        run(
            "objcopy",
            &[
                "--only-keep-debug".as_ref(),
                dir.join("other").as_os_str(),
                debug.as_os_str(),
            ],
        );
        assert_eq!(find(&full), None, "a debug file of another build");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
