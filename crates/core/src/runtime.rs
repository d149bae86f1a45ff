//! Which loaded modules are the runtime (interpreter, C library, loader) rather than code a
//! user wrote: a creation site is never placed in the runtime.

const RUNTIME_PREFIXES: [&str; 7] = [
    "libpython",
    "libc.so",
    "libc-",
    "ld-linux",
    "libpthread",
    "libdl",
    "linux-vdso",
];

/// Whether the module at `path` is a runtime library, judged by its file name. A statically
/// linked python executable is runtime too; callers check that themselves.
pub fn is_runtime_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    RUNTIME_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether the module at `path` is the C runtime, the interpreter aside: the C library and
/// the loader, which hold no Python objects.
pub fn is_c_runtime(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    is_runtime_library(path) && !name.starts_with("libpython")
}

/// Whether a frame in the module at `path` allocates on its caller's behalf: the C runtime,
/// and the C++ runtime's `operator new` (libstdc++, libc++, libgcc).
pub fn allocates_for_caller(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    is_c_runtime(path)
        || ["libstdc++", "libc++", "libgcc_s"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Whether the module at `path` is named as CPython names extension modules
/// (`name.cpython-311-x86_64-linux-gnu.so`, `name.abi3.so`).
pub fn is_extension_module(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") && (name.contains(".cpython-") || name.ends_with(".abi3.so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_libraries_by_name() {
        assert!(is_runtime_library("/usr/lib/libpython3.11.so.1.0"));
        assert!(is_runtime_library("/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_runtime_library("/lib64/ld-linux-x86-64.so.2"));
        assert!(is_c_runtime("/lib64/ld-linux-x86-64.so.2"));
        assert!(!is_c_runtime("/usr/lib/libpython3.11.so.1.0"));
        assert!(allocates_for_caller(
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
        ));
        assert!(!allocates_for_caller("/usr/lib/libpython3.11.so.1.0"));
        assert!(is_extension_module(
            "/tmp/zoo.cpython-311-x86_64-linux-gnu.so"
        ));
        assert!(is_extension_module("/site/_rust.abi3.so"));
        assert!(!is_extension_module("/usr/lib/libcrypto.so.3"));
        assert!(!is_runtime_library(
            "/tmp/zoo.cpython-311-x86_64-linux-gnu.so"
        ));
        assert!(!is_runtime_library(
            "/site-packages/numpy/core/_multiarray_umath.so"
        ));
    }
}
