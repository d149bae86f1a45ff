//! Symbolization of the native addresses in a capture, done once per address after the
//! program has ended.
//!
//! Each address is tried against the module's DWARF (function, file, line, and the chain of
//! inlined calls), then its ELF symbol table (function only), then reported as module+offset;
//! a stripped module's separate debug file, when installed, comes first (see [`debug_file`]).
//! Every frame says which of the three it came from, because a stripped wheel is common and a
//! reader must know when a name is a guess.

mod debug_file;
mod mapped;
mod symbols;

use addr2line::Loader;
use refhunt_core::capture::Module;
use refhunt_core::report::{NativeFrame, SymbolSource, Symbolizer};
use std::collections::HashMap;
use std::path::Path;

/// The debug information of ELF files, read once per file: the file's own, and its separate
/// debug file's first, if it has one. Reading libpython's takes about 10 ms, so `refhunt run`
/// reads it while the program runs.
#[derive(Default)]
pub struct Loaders(HashMap<String, Debug>);

/// What one file and its debug file tell: DWARF, debug file first, and function symbols.
pub struct Debug {
    dwarf: Vec<Loader>,
    symbols: symbols::Symbols,
}

impl Loaders {
    pub fn load(&mut self, path: &str) -> &Debug {
        self.0.entry(path.to_string()).or_insert_with(|| {
            let files: Vec<_> = debug_file::find(Path::new(path))
                .into_iter()
                .chain([Path::new(path).to_path_buf()])
                .collect();
            Debug {
                dwarf: files.iter().filter_map(|f| Loader::new(f).ok()).collect(),
                symbols: symbols::Symbols::of(files.iter().map(|f| f.as_path())),
            }
        })
    }
}

/// Symbolizes addresses from the ELF files named in a capture's module map.
pub struct ElfSymbolizer {
    loaders: Loaders,
    is_interpreter: Box<dyn Fn(&str) -> bool>,
}

impl ElfSymbolizer {
    /// `is_interpreter` tells the interpreter's own modules from extensions, by path;
    /// `loaders` may hold files read already.
    pub fn new(is_interpreter: impl Fn(&str) -> bool + 'static, loaders: Loaders) -> Self {
        ElfSymbolizer {
            loaders,
            is_interpreter: Box::new(is_interpreter),
        }
    }
}

/// The interpreter's modules: libpython, or the executable when Python is linked statically.
pub fn interpreter_predicate(executable: &str) -> impl Fn(&str) -> bool {
    let exe = std::fs::canonicalize(executable).ok();
    move |path: &str| {
        refhunt_core::runtime::is_runtime_library(path)
            || exe.is_some() && std::fs::canonicalize(path).ok() == exe
    }
}

impl Symbolizer for ElfSymbolizer {
    fn in_runtime(&self, _pc: u64, module: Option<&Module>) -> bool {
        module.is_some_and(|m| (self.is_interpreter)(&m.path))
    }

    fn symbolize(&mut self, pc: u64, module: Option<&Module>) -> Vec<NativeFrame> {
        let Some(module) = module else {
            return vec![unknown(pc, "?".into(), pc, false)];
        };
        let name = Path::new(&module.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| module.path.clone());
        let interpreter = (self.is_interpreter)(&module.path);
        // A return address follows its call; the call's line is the one before it.
        let probe = pc.wrapping_sub(module.bias).wrapping_sub(1);
        let offset = pc.wrapping_sub(module.start);
        let debug = self.loaders.load(&module.path);
        let frame = |function: Option<String>, file, line, source, inlined| NativeFrame {
            pc,
            function,
            file,
            line,
            module: name.clone(),
            offset,
            source,
            inlined,
            interpreter,
        };
        for loader in &debug.dwarf {
            let out = dwarf_frames(loader, probe, &frame);
            if out.iter().any(|f| f.function.is_some()) {
                return out;
            }
        }
        if let Some(symbol) = debug.symbols.find(probe) {
            return vec![frame(
                Some(symbol.to_string()),
                None,
                None,
                SymbolSource::Symtab,
                false,
            )];
        }
        vec![unknown(pc, name, offset, interpreter)]
    }
}

/// The frames DWARF gives for `probe`, innermost (inlined) first.
fn dwarf_frames(
    loader: &Loader,
    probe: u64,
    frame: &dyn Fn(Option<String>, Option<String>, Option<u32>, SymbolSource, bool) -> NativeFrame,
) -> Vec<NativeFrame> {
    let mut out = Vec::new();
    if let Ok(mut frames) = loader.find_frames(probe) {
        while let Ok(Some(f)) = frames.next() {
            let function = f
                .function
                .as_ref()
                .and_then(|n| n.demangle().ok().map(|d| d.into_owned()));
            let (file, line) = f
                .location
                .map(|l| (l.file.map(str::to_string), l.line))
                .unwrap_or((None, None));
            out.push(frame(function, file, line, SymbolSource::Dwarf, true));
        }
    }
    if let Some(last) = out.last_mut() {
        last.inlined = false;
    }
    out
}

fn unknown(pc: u64, module: String, offset: u64, interpreter: bool) -> NativeFrame {
    NativeFrame {
        pc,
        function: None,
        file: None,
        line: None,
        module,
        offset,
        source: SymbolSource::Offset,
        inlined: false,
        interpreter,
    }
}
