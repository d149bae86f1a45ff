//! The capture file: what the agent saw, before symbolization.
//!
//! The agent writes one JSON document at the end of a tracking window. Native frames are raw
//! return addresses plus the module map needed to symbolize them later; Python frames are
//! already resolved, because only the live interpreter can turn a code object into a line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// First field of every capture, so that a wrong file is named as such.
pub const FORMAT: &str = "refhunt-capture";
/// Bumped whenever a field changes meaning.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capture {
    pub format: String,
    pub version: u32,
    pub python: PythonInfo,
    pub pid: u32,
    pub argv: Vec<String>,
    /// Loaded ELF modules at capture time, for symbolization.
    pub modules: Vec<Module>,
    /// Interned creation stacks; groups refer to them by index.
    pub stacks: Vec<Stack>,
    pub groups: Vec<Group>,
    /// Objects with references that nothing found accounts for, however made: a singleton
    /// handed out with one too many leaves no new object to group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexplained: Vec<Unexplained>,
    /// Native blocks that C code outside the interpreter allocated in the window and never
    /// freed, by allocation site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<NativeGroup>,
    #[serde(default)]
    pub counters: Counters,
    /// Things the agent could not be sure of, said in words for the report.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Why no object's refcount could be watched, if none could: the report says it where a
    /// holder is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_refused: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PythonInfo {
    pub version: String,
    pub executable: String,
    /// A `Py_DEBUG` build, which has `sys.gettotalrefcount`.
    pub debug: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Module {
    pub path: String,
    pub start: u64,
    pub end: u64,
    /// Load bias: runtime address minus the address in the file.
    pub bias: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stack {
    /// Return addresses, innermost first, from the allocator's caller up to the eval loop.
    pub native: Vec<u64>,
    /// Python frames, innermost first.
    pub python: Vec<PyFrame>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PyFrame {
    pub file: String,
    pub function: String,
    pub line: u32,
}

/// What keeps a surviving object alive. `docs/classes.md` explains each with an example.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Its refcount is higher than every reference found in objects, frames and C statics.
    Leaked,
    /// Referred to only by leaked objects: it goes when they go.
    Indirect,
    /// A leak by the evidence of references, but made once, where one-time work runs (a
    /// module's import, a class's creation), and few: listed below the leaks, not counted
    /// as one, so that a real one-time leak stays in sight without failing a run.
    Once,
    /// Held outside Python and not growing: a pointer in an extension's or the interpreter's
    /// static data, or, under repetition, an unexplained reference that did not grow in every
    /// run (a C cache).
    HeldOutside,
    /// Referred to by a live Python object that is itself accounted for.
    Reachable,
    /// Unreachable and in a reference cycle: the next `gc.collect()` would free it.
    Garbage,
    /// An unexplained reference to an object that only the interpreter's own code created
    /// (no extension frame, no Python frame outside the import system): its C bookkeeping,
    /// such as the table of loaded extensions, holds it where no traversal can see.
    Interpreter,
}

impl Class {
    pub fn is_leak(self) -> bool {
        matches!(self, Class::Leaked | Class::Indirect)
    }

    pub fn label(self) -> &'static str {
        match self {
            Class::Leaked => "leaked reference",
            Class::Indirect => "indirectly leaked",
            Class::Once => "made once, not referenced",
            Class::HeldOutside => "held outside Python",
            Class::Reachable => "reachable from Python",
            Class::Garbage => "cyclic garbage",
            Class::Interpreter => "held by the interpreter",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    pub class: Class,
    pub type_name: String,
    pub count: u64,
    pub bytes: u64,
    pub stack: u32,
    /// Under repetition, the survivors created in each measured run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<u64>,
    /// For a reachable group, one path from a module to one of its objects, e.g.
    /// `module zoo . _registry [list] -> int`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What the class rests on, said of one object of the group, e.g. "referenced by
    /// nothing" or "a pointer in the state of module zoo".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Held outside Python by C code outside the runtime (an extension's static data, buffer
    /// or module state, an object's C field): listed even when the interpreter made it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_by_extension: bool,
    /// Objects of the group whose refcount a breakpoint watched, and what wrote it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watched: Vec<Watched>,
}

/// Blocks and their bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockTally {
    pub count: u64,
    pub bytes: u64,
}

impl BlockTally {
    pub fn add(&mut self, other: BlockTally) {
        self.count += other.count;
        self.bytes += other.bytes;
    }
}

/// The native blocks of one allocation site still allocated at the end of the window, by
/// what a conservative scan of memory found pointing to them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NativeGroup {
    /// `malloc`, `calloc`, `PyMem_Malloc`, `PyObject_Malloc`, ...
    pub allocator: String,
    pub stack: u32,
    /// No pointer to them anywhere in live memory.
    #[serde(default)]
    pub definite: BlockTally,
    /// Pointed to only by lost blocks.
    #[serde(default)]
    pub indirect: BlockTally,
    /// Pointed to only in their middle, or only by a stale stack slot.
    #[serde(default)]
    pub possible: BlockTally,
    /// A pointer to their start in live memory.
    #[serde(default)]
    pub reachable: BlockTally,
    /// Under repetition, the blocks made in each measured run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<u64>,
    /// Leaked objects that the lost blocks point to, by the objects' creation stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HeldObjects>,
}

impl NativeGroup {
    /// Definitely, indirectly and possibly lost blocks together.
    pub fn lost(&self) -> BlockTally {
        let mut t = self.definite;
        t.add(self.indirect);
        t.add(self.possible);
        t
    }

    pub fn all(&self) -> BlockTally {
        let mut t = self.lost();
        t.add(self.reachable);
        t
    }
}

/// Objects that lost native blocks point to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldObjects {
    pub type_name: String,
    pub count: u64,
    /// Their creation stack.
    pub stack: u32,
}

/// One object whose refcount exceeds the references found to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unexplained {
    pub type_name: String,
    /// Its type and size, or for a str, an int or a tuple of them, its value, truncated.
    pub repr: String,
    /// References to it that nothing found accounts for, at the end of the window.
    pub unexplained: i64,
    /// How many of them it gained in the window (all, for an object made in it).
    pub gained: i64,
    /// Under repetition: the measured runs at whose end its refcount had grown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grew: Option<u32>,
    /// Where it was made, if in the window: an index into `Capture::stacks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watched: Vec<Watched>,
}

/// The refcount writes of one watched object, summed per stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Watched {
    pub writes: Vec<RefWrites>,
    /// The first writes in order, as (stack, change), runs from one stack in one direction
    /// merged; complete when `unordered` is 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<(u32, i32)>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unordered: u32,
    /// Watched from its creation (or the start of a holder run) until the end; otherwise the
    /// history covers only the start of its life.
    pub whole: bool,
    /// Writes seen but not recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
    /// Its references that nothing found accounts for, at the end of the window.
    pub unexplained: i64,
    /// Watched from its creation: one reference, its creator's, is not among the writes.
    #[serde(default)]
    pub from_creation: bool,
    /// Calls made while it was watched, in a holder run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Refcount writes from one stack (an index into `Capture::stacks`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefWrites {
    pub stack: u32,
    pub increments: u32,
    pub decrements: u32,
}

/// A counter read at the start of the window and at its end.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub before: i64,
    pub after: i64,
}

impl Change {
    pub fn delta(self) -> i64 {
        self.after - self.before
    }
}

/// Whole-process counters over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Objects created in the window and alive at its end, after `gc.collect()`.
    pub live_objects: u64,
    /// The self-check: objects the collector tracks at the end that were made in the window
    /// without refhunt seeing them made (neither recorded nor alive before the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen: Option<u64>,
    /// What the final `gc.collect()` found unreachable.
    pub gc_freed: u64,
    /// `sys.gettotalrefcount()`, on debug builds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_refcount: Option<Change>,
    /// `sys.getallocatedblocks()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_blocks: Option<Change>,
    /// Resident set size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<Change>,
    /// The program's largest resident set, bytes, from `refhunt run` when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
    /// Measured runs and warm-ups, when the window was repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Repeat {
    pub runs: u32,
    pub warmup: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a refhunt capture: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("not a refhunt capture: format is {0:?}")]
    WrongFormat(String),
    #[error("capture version {found} is not supported (this refhunt reads version {VERSION})")]
    WrongVersion { found: u32 },
    #[error("not a refhunt capture: its counts add up past what a process can hold")]
    Implausible,
}

/// What a capture's counts, bytes and references may add up to: far past any process
/// (2^62), and far enough below `u64::MAX` that the report's totals cannot overflow.
const MAX_TOTAL: u64 = 1 << 62;

fn total(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// What only the traced interpreter's Python side knows of a window, handed to the agent at
/// its snapshot; the agent makes the capture around it.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    pub python: PythonInfo,
    pub argv: Vec<String>,
    pub counters: Counters,
    pub notes: Vec<String>,
}

impl Facts {
    pub fn from_json(text: &str) -> Result<Facts, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Capture {
    /// An empty capture of process `pid`: the envelope of every capture, written here only.
    pub fn new(facts: Facts, pid: u32) -> Capture {
        Capture {
            format: FORMAT.into(),
            version: VERSION,
            python: facts.python,
            pid,
            argv: facts.argv,
            modules: Vec::new(),
            stacks: Vec::new(),
            groups: Vec::new(),
            unexplained: Vec::new(),
            native: Vec::new(),
            counters: facts.counters,
            notes: facts.notes,
            watch_refused: None,
        }
    }

    pub fn from_json(text: &str) -> Result<Capture, CaptureError> {
        let capture: Capture = serde_json::from_str(text)?;
        if capture.format != FORMAT {
            return Err(CaptureError::WrongFormat(capture.format));
        }
        if capture.version != VERSION {
            return Err(CaptureError::WrongVersion {
                found: capture.version,
            });
        }
        if !capture.totals_fit() {
            return Err(CaptureError::Implausible);
        }
        Ok(capture)
    }

    /// Whether the counts, bytes and references that the report adds up stay within
    /// [`MAX_TOTAL`]; only an edited or corrupt file goes past it.
    fn totals_fit(&self) -> bool {
        let tallies = || {
            self.native
                .iter()
                .flat_map(|n| [n.definite, n.indirect, n.possible, n.reachable])
        };
        let change =
            |c: &Option<Change>| c.map_or(0, |c| total([c.before, c.after].map(i64::unsigned_abs)));
        let c = &self.counters;
        [
            total(self.groups.iter().map(|g| g.count)),
            total(self.groups.iter().map(|g| g.bytes)),
            total(self.groups.iter().flat_map(|g| g.runs.iter().copied())),
            total(tallies().map(|t| t.count)),
            total(tallies().map(|t| t.bytes)),
            total(self.native.iter().flat_map(|n| n.runs.iter().copied())),
            total(
                self.native
                    .iter()
                    .flat_map(|n| n.holds.iter().map(|h| h.count)),
            ),
            total(
                self.unexplained
                    .iter()
                    .flat_map(|u| [u.unexplained, u.gained].map(i64::unsigned_abs)),
            ),
            total([
                c.live_objects,
                c.gc_freed,
                c.unseen.unwrap_or(0),
                c.peak_rss.unwrap_or(0),
            ]),
            total([&c.total_refcount, &c.allocated_blocks, &c.rss].map(change)),
        ]
        .into_iter()
        .all(|t| t < MAX_TOTAL)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("capture serializes")
    }
}
