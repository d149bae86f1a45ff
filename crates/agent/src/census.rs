//! Unexplained references to objects that were there before the window.
//!
//! A leaked reference to an object that someone else made (a cached singleton handed out
//! with one reference too many, `None` increfed and forgotten) leaves no new object: only a
//! refcount that exceeds the references that can be found. The census counts, for every
//! object it can reach, the references found to it: from every object the collector knows
//! and every container they lead to (through `tp_traverse`, the string keys that 3.11+'s
//! dicts do not visit, and a code object's fields), from running frames' locals, and from
//! extensions' static data, whose words also lead to objects no container holds (an
//! extension's cached tuple). What is left of the refcount is unexplained.
//!
//! It is taken when the window begins and again at its end. An object's unexplained count
//! can be high for good reasons (`None` on 3.11 is referenced from C structs everywhere), so
//! what is reported is its gain over the window, on the same object: 100 or more in a plain
//! window, or under repetition a gain whose refcount grew in every measured run. Immortal
//! objects and types are left out: an immortal refcount means nothing, and a type's
//! instances hold it in ways no traversal of theirs reports.

use crate::cpython::{self, Api, Header, Layout, Object, PyObject, Type, VisitProc};
use crate::maps::Readable;
use crate::modules::{self, LoadedModule};
use crate::pyframes;
use crate::shadow::Counts;
use crate::survivors::Heap;
use rustc_hash::FxHashSet;
use std::ffi::{c_int, c_void};

/// A plain window reports an object whose unexplained references grew by this many.
pub const PLAIN_GAIN: i64 = 100;

/// One object reached at the window's start.
struct Subject {
    op: usize,
    tp: usize,
    unexplained: i64,
    /// Its refcount at the last boundary between measured runs.
    last: i64,
    /// Measured runs at whose end its refcount was higher than at their start.
    grew: u16,
}

/// The census at the start of the window, and what each boundary of a measured run saw.
#[derive(Default)]
pub struct Census {
    subjects: Vec<Subject>,
    /// Boundaries seen: the start of each measured run, and the end.
    boundaries: u16,
}

/// An old object whose unexplained references grew.
pub struct Gain {
    pub op: usize,
    /// Unexplained at the end.
    pub unexplained: i64,
    pub gained: i64,
    /// Under repetition: measured runs whose end found its refcount higher than their start.
    pub grew: Option<u16>,
}

struct Count<'a> {
    /// Every object reached or queued, with the references found to it: a container is
    /// queued when it is first entered here.
    found: Counts,
    queue: Vec<usize>,
    heap: &'a Heap,
    api: &'a Api,
    layout: &'a Layout,
}

/// The visit function of the census's traversals.
///
/// # Safety
/// `arg` is the `Count` the traversal was started with, borrowed by nothing else during the
/// call; `op` is what a traversal visits: a live object, or a word
/// [`cpython::may_be_object`] rejects; the GIL is held.
unsafe extern "C" fn visit(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is a `*mut Count` that nothing else borrows now (caller's contract).
    let c = unsafe { &mut *(arg as *mut Count) };
    if cpython::may_be_object(op as usize) {
        // SAFETY: a word `may_be_object` lets through is a live object (caller's contract).
        unsafe { c.reached(op as usize) };
    }
    0
}

impl Count<'_> {
    /// # Safety
    /// `op` is a live object; the GIL is held.
    unsafe fn reached(&mut self, op: usize) {
        if !self.found.add(op) {
            // SAFETY: `op` is a live object and the GIL is held (caller's contract), as
            // `is_gc` needs.
            let object = unsafe { Object::new(op) };
            // SAFETY: as above.
            if object.as_code(self.api.code_type).is_some() || unsafe { object.is_gc() } {
                self.queue.push(op);
            }
        }
    }

    /// A word of an extension's static data that no object reached is: an object if its
    /// header is mapped and its type is a type, counted without being traversed, since a stale
    /// pointer can pass these checks and traversing what only looks like a container could
    /// crash the host.
    ///
    /// # Safety
    /// Any word may be given: nothing is read through it before it passes those checks. The
    /// objects `self.heap` was made from are live, and what was mapped when it was made
    /// still is.
    unsafe fn probe(&mut self, word: usize) {
        if word.is_multiple_of(8)
            && self.heap.readable(word, 16)
            // SAFETY: `word`'s first 16 bytes, its header, were just found mapped; `is_type`
            // takes any word while `heap`'s objects are live (caller's contract).
            && unsafe { self.heap.is_type(Header::new(word).type_addr()) }
        {
            self.found.insert(word, 1);
        }
    }

    /// # Safety
    /// `op` is a live container or code object; the GIL is held.
    unsafe fn references_of(&mut self, op: usize) {
        // SAFETY: `op` is a live object (caller's contract).
        let op = unsafe { Object::new(op) };
        if let Some(code) = op.as_code(self.api.code_type) {
            // Not a container to the collector: its names, constants and file are fields.
            for word in code.object_fields(self.layout) {
                // SAFETY: a live code object's object fields hold live objects; the GIL is held.
                unsafe { self.reached(word) };
            }
            return;
        }
        // SAFETY: `op` is a live container (caller's contract) and the GIL is held; `self` is
        // handed on only as the traversal's `arg`.
        unsafe { op.traverse(visit as VisitProc, self as *mut Count as *mut c_void) };
        if let Some(dict) = op.as_dict() {
            let found = &mut self.found;
            // SAFETY: the GIL is held; `api` and `layout` are this interpreter's.
            unsafe {
                dict.unicode_keys(self.api, self.layout, |key| {
                    found.add(key);
                })
            };
        }
        // A class holds the keys its instances' dicts share (a mock's new class per mock
        // showed them as unexplained references to its attribute names).
        if let Some(tp) = op.as_type() {
            for key in tp.cached_keys(self.layout) {
                self.found.add(key);
            }
        }
    }
}

/// Where a census starts: the objects the collector tracks, the lists that handed them over
/// (whose references are not counted), and the objects the agent holds a reference to (the
/// code objects of its stored stacks, which a window's first stack takes).
pub struct Roots<'a> {
    pub gc_items: &'a [usize],
    pub lists: &'a [usize],
    pub ours: &'a FxHashSet<usize>,
}

/// What the interpreter holds where no traversal of the collector's objects looks: what its
/// running frames refer to (see [`pyframes::running_references`]) and, on 3.10, its state's
/// caches of single-character bytes and strs. Values may repeat.
///
/// # Safety
/// The GIL is held, so the frames and the main interpreter's state stay put.
pub unsafe fn interpreter_roots(api: &Api, layout: &Layout, mut f: impl FnMut(usize)) {
    // SAFETY: the GIL is held (caller's contract).
    unsafe {
        pyframes::running_references(api, layout, &mut f);
        cpython::interpreter_caches(layout, (api.main_interpreter)() as usize, f);
    }
}

/// The references found to every object reached from the roots, running frames and static
/// data, the agent's own included.
///
/// # Safety
/// The GIL is held; `roots.gc_items` are live objects (`gc.get_objects()`), `roots.lists`
/// the lists the caller made to hand them over.
unsafe fn count(
    api: &Api,
    layout: &Layout,
    modules: &[LoadedModule],
    heap: &Heap,
    roots: &Roots,
    extra: &[usize],
) -> Counts {
    let Roots {
        gc_items,
        lists,
        ours,
    } = *roots;
    let mut c = Count {
        found: Counts::default(),
        queue: gc_items
            .iter()
            .chain(extra)
            .copied()
            .filter(|op| !lists.contains(op))
            .collect(),
        heap,
        api,
        layout,
    };
    // Queued already, or never to be traversed.
    for &op in gc_items.iter().chain(extra).chain(lists) {
        c.found.insert(op, 0);
    }
    // SAFETY: the GIL is held (caller's contract); what the interpreter holds is live.
    unsafe { interpreter_roots(api, layout, |word| c.reached(word)) };
    while let Some(op) = c.queue.pop() {
        // SAFETY: only live containers and code objects are queued: the caller's `gc_items`
        // and `extra`, and objects `reached` found to be one; the GIL is held.
        unsafe { c.references_of(op) };
    }
    let own = modules::find(modules, count as *const () as usize);
    // SAFETY: `PyInterpreterState_Main` reads the runtime's main interpreter, GIL held.
    let borrowed = layout.borrowed_at(unsafe { (api.main_interpreter)() } as usize);
    for (i, m) in modules.iter().enumerate() {
        // An extension's statics may hold an object nothing else does; the interpreter's
        // hold objects reached already, some of them taken and dropped as the program runs
        // (3.11's method cache keeps a reference to each name it caches). Other libraries
        // hold no objects.
        let extension = refhunt_core::runtime::is_extension_module(&m.path);
        if Some(i) == own || !statics_hold_objects(&m.path) {
            continue;
        }
        // SAFETY: `m` is loaded, so its writable segments are mapped, as `static_words`
        // needs; `probe` takes any word, and `heap` was made from this census's objects.
        unsafe {
            m.static_words(&borrowed, |word| {
                if !c.found.add_if_counted(word) && extension {
                    c.probe(word)
                }
            })
        };
    }
    for &op in lists {
        c.found.remove(op);
    }
    for &op in ours {
        c.found.add_if_counted(op);
    }
    c.found
}

/// Whether the static data of the module at `path` may hold objects: an extension's, or the
/// interpreter's (the C runtime's and other libraries' hold none).
pub fn statics_hold_objects(path: &str) -> bool {
    refhunt_core::runtime::is_extension_module(path)
        || refhunt_core::runtime::is_runtime_library(path)
            && !refhunt_core::runtime::is_c_runtime(path)
        || crate::attribution::is_main_executable(path)
}

/// Whether an object's unexplained count means nothing: immortal, static (3.11), or a type.
///
/// # Safety
/// `op`'s header is readable and its type is a live type (a live object's are).
pub unsafe fn left_out(op: usize, layout: &Layout) -> bool {
    // SAFETY: `op`'s header is readable (caller's contract).
    let header = unsafe { Header::new(op) };
    header.immortal(layout)
        || header.static_count()
        // SAFETY: `op`'s type is a live type (caller's contract).
        || unsafe { Type::new(header.type_addr()) }.is_metatype()
}

impl Census {
    /// The census at the start of a window.
    ///
    /// # Safety
    /// As for [`count`].
    pub unsafe fn take(api: &Api, layout: &Layout, roots: &Roots) -> Census {
        let modules = modules::loaded();
        // SAFETY: the roots' objects are live (caller's contract).
        let heap = unsafe { Heap::new(api, &modules, roots.gc_items) };
        // SAFETY: the caller's contract is `count`'s.
        let found = unsafe { count(api, layout, &modules, &heap, roots, &[]) };
        let mut subjects: Vec<Subject> = Vec::new();
        found.for_each(|op, found| {
            // SAFETY: each word found is a live object reached by a traversal, or a probed
            // word whose 16-byte header is mapped and whose type is a live type.
            if unsafe { left_out(op, layout) } {
                return;
            }
            // SAFETY: as above, its header is readable.
            let header = unsafe { Header::new(op) };
            let refcnt = header.refcnt() as i64;
            subjects.push(Subject {
                op,
                tp: header.type_addr(),
                unexplained: refcnt - i64::from(found),
                last: refcnt,
                grew: 0,
            });
        });
        // In address order, each boundary reads them as the heap lies.
        subjects.sort_unstable_by_key(|s| s.op);
        Census {
            subjects,
            boundaries: 0,
        }
    }

    /// A measured run starts or the last one ended: whose refcount grew since the last
    /// boundary. Objects may have died since the start, so a refcount is read only where
    /// memory is still mapped; what is read there is checked at the end.
    pub fn boundary(&mut self) {
        if self.subjects.is_empty() {
            return;
        }
        let readable = Readable::of_self();
        let first = self.boundaries == 0;
        for s in &mut self.subjects {
            if !readable.contains(s.op, 16) {
                continue;
            }
            // SAFETY: the header's 16 bytes are mapped, read as words.
            let now = unsafe { Header::new(s.op) }.refcnt() as i64;
            if !first && now > s.last {
                s.grew += 1;
            }
            s.last = now;
        }
        self.boundaries += 1;
    }

    /// Old objects alive at the end whose unexplained references grew: by
    /// [`PLAIN_GAIN`] in a plain window, or under repetition by at least one per measured run
    /// with a refcount that grew in every run. `is_new` tells objects made in the window, whose
    /// address an old one may have had; `containers` are the containers made in the window,
    /// whose references count too, even where the collector does not track them (a leaked
    /// dict of ints holds its ints).
    ///
    /// # Safety
    /// As for [`count`]; `containers` are live.
    pub unsafe fn gains(
        &self,
        api: &Api,
        layout: &Layout,
        roots: &Roots,
        is_new: &dyn Fn(usize) -> bool,
        containers: &[usize],
    ) -> Vec<Gain> {
        // The boundaries are each measured run's start, and the last one's end.
        let runs = self.boundaries.saturating_sub(1);
        if self.subjects.is_empty() {
            return Vec::new();
        }
        let modules = modules::loaded();
        // SAFETY: the roots' objects are live (caller's contract).
        let heap = unsafe { Heap::new(api, &modules, roots.gc_items) };
        // SAFETY: the caller's contract is `count`'s, and `containers` are live objects.
        let found = unsafe { count(api, layout, &modules, &heap, roots, containers) };
        let repeated = runs > 0;
        let mut gains = Vec::new();
        for s in &self.subjects {
            // Alive at the end only if something still leads to it.
            let Some(f) = found.get(s.op) else {
                continue;
            };
            // SAFETY: `s.op` was found again at the end, so it is a live object reached by a
            // traversal, or a probed word whose header is mapped and whose type is a type;
            // `left_out` is asked only once its type is the one it had at the start.
            let header = unsafe { Header::new(s.op) };
            // SAFETY: as above.
            if header.type_addr() != s.tp || is_new(s.op) || unsafe { left_out(s.op, layout) } {
                continue;
            }
            let unexplained = header.refcnt() as i64 - i64::from(f);
            let gained = unexplained - s.unexplained;
            let wanted = if repeated {
                gained >= runs as i64 && s.grew >= runs
            } else {
                gained >= PLAIN_GAIN
            };
            if wanted {
                gains.push(Gain {
                    op: s.op,
                    unexplained,
                    gained,
                    grew: repeated.then_some(s.grew),
                });
            }
        }
        gains.sort_by_key(|g| std::cmp::Reverse(g.gained));
        gains
    }
}
