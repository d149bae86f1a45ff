//! Functions that a module keeps in its full symbol table only (`.symtab`, local symbols),
//! which `dlsym` cannot find: read from the module's file, mapped, once when needed.

use crate::modules::LoadedModule;
use object::{Object, ObjectSymbol};

/// The runtime address of the function `name` of `module`, if its file still has a full
/// symbol table that names it (a stripped distribution binary has none).
pub fn local_function(module: &LoadedModule, name: &str) -> Option<usize> {
    let file = std::fs::File::open(&module.path).ok()?;
    // SAFETY: a private read-only mapping of a loaded module's file, which the loader keeps
    // open and an upgrade replaces (a new inode) rather than truncates; it is read here and
    // dropped before returning.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = object::File::parse(&*data).ok()?;
    elf.symbols()
        .find(|s| s.kind() == object::SymbolKind::Text && s.name() == Ok(name))
        .map(|s| (s.address() as usize).wrapping_add(module.bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::process::Command;

    /// A library with a static function, which only `.symtab` names: found, at the address
    /// that runs it.
    #[test]
    fn a_static_function_of_a_loaded_library_is_found_and_runs() {
        let dir = std::env::temp_dir().join(format!("refhunt-elfsym-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("lib.c");
        std::fs::write(
            &source,
            "static int hidden(void) { return 42; }\nint visible(void) { return hidden() + 1; }\n",
        )
        .unwrap();
        let lib = dir.join("libhidden.so");
        let status = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O0", "-o"])
            .arg(&lib)
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());
        let path = CString::new(lib.to_str().unwrap()).unwrap();
        // SAFETY: a library just built, whose constructors do nothing.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null());
        let module = crate::modules::loaded()
            .into_iter()
            .find(|m| m.path.ends_with("libhidden.so"))
            .expect("the library among the loaded modules");
        let hidden = local_function(&module, "hidden").expect("hidden in .symtab");
        // SAFETY: `hidden` is `int hidden(void)` of the library, loaded.
        let f: extern "C" fn() -> libc::c_int = unsafe { std::mem::transmute(hidden) };
        assert_eq!(f(), 42);
        assert_eq!(local_function(&module, "absent"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
