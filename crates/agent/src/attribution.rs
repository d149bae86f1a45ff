//! Whose leak it is. A leak that no extension and no program code took part in creating is
//! the interpreter's: no native frame outside the runtime, and the innermost Python frame in
//! the import system.

use crate::cpython::Object;
use crate::hooks::State;
use crate::modules::LoadedModule;
use crate::snapshot::str_text;
use refhunt_core::capture::Class;
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};

pub struct Attribution<'a> {
    state: &'a State,
    /// Address ranges of the runtime's modules: the interpreter, the C library, the loader.
    runtime: Vec<(usize, usize)>,
    /// Each stack's verdict, and the last one asked: neighbouring survivors share stacks.
    verdicts: RefCell<FxHashMap<u32, Class>>,
    last: Cell<Option<(u32, Class)>>,
}

impl<'a> Attribution<'a> {
    pub fn new(state: &'a State, modules: &[LoadedModule]) -> Self {
        Attribution {
            state,
            runtime: modules
                .iter()
                .filter(|m| is_runtime(&m.path))
                .map(|m| (m.start, m.end))
                .collect(),
            verdicts: RefCell::default(),
            last: Cell::new(None),
        }
    }

    /// The class of a leak created at `stack`: leaked, or the interpreter's.
    ///
    /// # Safety
    /// The caller holds the GIL: the stack's code objects are read.
    pub unsafe fn leak_class(&self, stack: u32) -> Class {
        if let Some((last, class)) = self.last.get() {
            if last == stack {
                return class;
            }
        }
        let class = *self.verdicts.borrow_mut().entry(stack).or_insert_with(|| {
            // SAFETY: the GIL is held (caller's contract), which is all `user_made` needs.
            if unsafe { self.user_made(stack) } {
                Class::Leaked
            } else {
                Class::Interpreter
            }
        });
        self.last.set(Some((stack, class)));
        class
    }

    /// Whether an extension's native frame or program code took part in the stack.
    ///
    /// # Safety
    /// The GIL is held: the stack's innermost code object is read.
    unsafe fn user_made(&self, stack: u32) -> bool {
        let stacks = &self.state.stacks;
        let native = stacks.native(stack).iter().any(|&pc| {
            !self
                .runtime
                .iter()
                .any(|&(lo, hi)| (lo..hi).contains(&(pc as usize)))
        });
        // The innermost Python frame is the code that was running: the import system's own
        // frames are the interpreter's, whoever asked for the import.
        native
            || stacks.python(stack).next().is_some_and(|f| {
                // SAFETY: a stored frame's code object is one the agent holds a reference to
                // (`State::codes`), so live, and the GIL is held (caller's contract).
                let api = &self.state.api;
                // SAFETY: as above; a code object's file name is a live str it holds.
                let file = unsafe { Object::new(f.code) }
                    .as_code(api.code_type)
                    .map(|code| unsafe { str_text(api, code.filename(&self.state.layout)) });
                !file.is_some_and(|file| file.starts_with("<frozen "))
            })
    }
}

fn is_runtime(path: &str) -> bool {
    refhunt_core::runtime::is_runtime_library(path) || is_main_executable(path)
}

/// Whether `path` is this process's executable: a statically linked interpreter is runtime.
pub fn is_main_executable(path: &str) -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|exe| exe.as_os_str() == path)
}
