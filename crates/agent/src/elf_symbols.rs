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
