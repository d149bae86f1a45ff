//! The screen: whether one call, tracked in a window of its own, may have left what the full
//! method (repetition, the snapshot, the census) calls a leak, in one pass over the heap's
//! references at each end of the call and nothing kept per object but a word list.
//!
//! It flags the window when
//! - a survivor (an object made in it, alive) has more references than the references to it
//!   found from the objects the collector tracks, the containers and code objects they lead
//!   to, the strings that key their dicts, running frames' locals and static data: the
//!   snapshot finds at least these, so each object it calls leaked or indirectly leaked is
//!   flagged here;
//! - an object reached at the start, from the same places, has a higher refcount at the end
//!   (the census reports an old object only if its refcount grew in every measured run);
//! - a native block made in the window is still allocated (the report's native leaks are
//!   among them).
//!
//! A flag means "look closer", not "leak": `pytest --refhunt` then runs the full method.
//! See docs/architecture.md, "The screen", for why a leak it finds in every measured call
//! shows in the screened one.

use crate::census::left_out;
use crate::cpython::{self, Api, Header, Layout, Object, PyObject, VisitProc};
use crate::hooks::State;
use crate::live::ALLOCATED;
use crate::maps::Readable;
use crate::modules::{self, LoadedModule};
use crate::pyframes;
use crate::survivors::{Heap, Survivors};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};

/// The objects reached when the screened call began, each with its type and refcount less
/// the agent's own reference (a code object a stack of the window keeps).
#[derive(Default)]
pub struct Baseline {
    reached: Vec<(usize, usize, isize)>,
    /// After a screened call that needs a recount: the old objects whose refcount grew, with
    /// their type, refcount and the references found to them at its end.
    candidates: Vec<(usize, usize, isize, isize)>,
}

/// The traversal's state: what to do with each reference, and the containers outside the
/// collector's lists (untracked dicts and tuples, code objects) entered so far.
struct Walk<'a, F: FnMut(usize, bool)> {
    found: F,
    entered: FxHashSet<usize>,
    queue: Vec<usize>,
    api: &'a Api,
    layout: &'a Layout,
}

/// # Safety
/// `arg` is the `Walk` the traversal was started with, borrowed by nothing else during the
/// call; `op` is what a traversal visits; the GIL is held.
unsafe extern "C" fn visit<F: FnMut(usize, bool)>(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is a `*mut Walk<F>` that nothing else borrows now (caller's contract).
    let w = unsafe { &mut *(arg as *mut Walk<F>) };
    let op = op as usize;
    if cpython::may_be_object(op) {
        // SAFETY: a word a traversal visits that may be an object is a live one, GIL held.
        unsafe { w.reached(op) };
    }
    0
}

impl<F: FnMut(usize, bool)> Walk<'_, F> {
    /// # Safety
    /// `op` is a live object; the GIL is held.
    unsafe fn reached(&mut self, op: usize) {
        // SAFETY: `op` is a live object (caller's contract).
        let object = unsafe { Object::new(op) };
        // SAFETY: as above; a GC object has its GC head before it.
        let (gc, untracked) = unsafe {
            let gc = object.is_gc();
            (gc, gc && cpython::gc_untracked(op))
        };
        (self.found)(op, gc && !untracked);
        // A tracked container is traversed from the collector's list; the others once each.
        let other = untracked || object.as_code(self.api.code_type).is_some();
        if other && self.entered.insert(op) {
            self.queue.push(op);
        }
    }

    /// # Safety
    /// `op` is a live container or code object; the GIL is held.
    unsafe fn references_of(&mut self, op: usize) {
        // SAFETY: `op` is a live object (caller's contract).
        let object = unsafe { Object::new(op) };
        if let Some(code) = object.as_code(self.api.code_type) {
            for word in code.object_fields(self.layout) {
                // SAFETY: a live code object's object fields hold live objects.
                unsafe { self.reached(word) };
            }
            return;
        }
        // SAFETY: a live container, the GIL held; `self` goes only as the traversal's `arg`.
        unsafe { object.traverse(visit::<F> as VisitProc, self as *mut Self as *mut c_void) };
        if let Some(dict) = object.as_dict().filter(|_| self.layout.unicode_dicts()) {
            let found = &mut self.found;
            // SAFETY: the GIL is held; `dict_next` is `PyDict_Next`; its keys are live.
            unsafe { dict.unicode_keys(self.api.dict_next, |key| found(key, false)) };
        }
    }
}

/// Calls `found` with every reference found from the objects in `gc_items` but `lists`
/// (which hand them over), the containers and code objects they lead to, running frames'
/// locals, and the words of extensions' static data that are objects; and whether the
/// object referred to is one the collector tracks (so among `gc_items`), when known.
///
/// # Safety
/// The GIL is held; `gc_items` are live objects (`gc.get_objects()`'s); `heap` was made
/// from them.
unsafe fn walk(
    api: &Api,
    layout: &Layout,
    modules: &[LoadedModule],
    heap: &Heap,
    gc_items: &[usize],
    lists: &[usize],
    found: impl FnMut(usize, bool),
) {
    let mut w = Walk {
        found,
        entered: FxHashSet::default(),
        queue: Vec::new(),
        api,
        layout,
    };
    for &op in gc_items.iter().filter(|op| !lists.contains(op)) {
        // SAFETY: a tracked object is a live container (caller's contract).
        unsafe { w.references_of(op) };
        while let Some(other) = w.queue.pop() {
            // SAFETY: only live untracked containers and code objects are queued.
            unsafe { w.references_of(other) };
        }
    }
    // SAFETY: the GIL is held, so the frames stay put; their locals are live objects.
    unsafe { pyframes::running_locals(api, layout, |op| w.reached(op)) };
    for m in modules
        .iter()
        .filter(|m| refhunt_core::runtime::is_extension_module(&m.path))
    {
        // SAFETY: `m` is loaded, so its writable segments are mapped; a word is read
        // through only once its header is mapped and its type is a type.
        unsafe {
            m.static_words(&[], |word| {
                let object = word.is_multiple_of(8)
                    && heap.readable(word, 16)
                    && heap.is_type(Header::new(word).type_addr());
                if object {
                    (w.found)(word, false);
                }
            })
        };
    }
}

impl Baseline {
    /// The objects reached from `gc_items` (see [`walk`]) as the screened call begins.
    ///
    /// # Safety
    /// The GIL is held; `gc_items` are live objects (`gc.get_objects()`'s) and `lists` the
    /// lists that hand them over.
    pub unsafe fn take(state: &State, gc_items: &[usize], lists: &[usize]) -> Baseline {
        let (api, layout) = (&state.api, &state.layout);
        let modules = modules::loaded();
        // SAFETY: `gc_items` are live (caller's contract).
        let heap = unsafe { Heap::new(api, &modules, gc_items) };
        let mut reached = Vec::with_capacity(gc_items.len() * 4);
        let mut keep = |op: usize| {
            // SAFETY: `op` is a live object, whose header is readable and type live.
            if unsafe { !left_out(op, layout) } {
                // SAFETY: as above.
                let header = unsafe { Header::new(op) };
                reached.push((op, header.type_addr(), refcount(state, op, header)));
            }
        };
        for &op in gc_items.iter().filter(|op| !lists.contains(op)) {
            keep(op);
        }
        // A tracked object is kept once, from the collector's list, however often reached.
        // SAFETY: the caller's contract is `walk`'s.
        unsafe {
            walk(
                api,
                layout,
                &modules,
                &heap,
                gc_items,
                lists,
                |op, tracked| {
                    if !tracked {
                        keep(op);
                    }
                },
            )
        };
        Baseline {
            reached,
            candidates: Vec::new(),
        }
    }

    /// The objects reached at the start whose refcount is higher now; `is_new` tells the
    /// window's survivors, which may sit where an old object died.
    ///
    /// # Safety
    /// The GIL is held and tracking is paused.
    unsafe fn grown(
        &self,
        state: &State,
        is_new: &dyn Fn(usize) -> bool,
    ) -> FxHashMap<usize, usize> {
        let readable = Readable::of_self();
        let mut grown = FxHashMap::default();
        for &(op, tp, before) in &self.reached {
            if !readable.contains(op, 16) {
                continue;
            }
            // SAFETY: the header's 16 bytes were just found mapped.
            let header = unsafe { Header::new(op) };
            if header.type_addr() == tp && refcount(state, op, header) > before && !is_new(op) {
                grown.insert(op, tp);
            }
        }
        grown
    }
}

/// `op`'s refcount less the agent's own reference (to a code object only).
fn refcount(state: &State, op: usize, header: Header) -> isize {
    let ours = header.type_addr() == state.api.code_type && state.codes.contains(&op);
    header.refcnt() - isize::from(ours)
}

/// What the end of the screened call says: what must be looked at more closely.
#[derive(Default)]
pub struct Screened {
    /// A survivor has references beyond those found, or a native block of the window is left:
    /// the snapshot, which finds references everywhere, must classify them.
    pub survivors: bool,
    /// Old objects' refcounts grew, which references found to them may explain: one more
    /// call, counted with [`recount`], tells.
    pub recount: bool,
}

/// The end of the screened call (see the module's doc). A recount leaves the old objects whose
/// refcount grew in `baseline`, each with its references found now.
///
/// # Safety
/// The snapshot's contract (`snapshot::take`): the GIL is held and tracking is paused;
/// `gc_objects` is a live list from `gc.get_objects()`.
pub unsafe fn end(
    state: &State,
    baseline: &mut Baseline,
    gc_objects: usize,
    runs: u16,
) -> Screened {
    let api = &state.api;
    let modules = modules::loaded();
    // SAFETY: `gc_objects` is a live list (caller's contract).
    let gc_items = unsafe { cpython::list_items(gc_objects) };
    // SAFETY: its items are live.
    let heap = unsafe { Heap::new(api, &modules, &gc_items) };
    let window = state.windows.view(&state.stacks);
    let survivors = Survivors::of(state, &window, &heap);
    // As the report's rule has it, what may be a leak was left by every measured run.
    let every = (1u64 << runs.min(63)) - 1;
    let mut native_runs = 0u64;
    state.live.for_each(|_, b| {
        if b.is_native() && b.state == ALLOCATED && window.holds(b.stack) {
            native_runs |= run_bit(window.run(b.stack));
        }
    });
    let native = native_runs == every;
    if native && debug() {
        eprintln!("refhunt-debug: screen: native blocks of the window are left by every run");
    }
    // SAFETY: the GIL is held and tracking is paused (caller's contract); `contains` takes
    // any word.
    let grown = unsafe { baseline.grown(state, &|op| survivors.contains(op)) };
    let mut found: FxHashMap<usize, isize> = FxHashMap::default();
    let mut run_of: FxHashMap<usize, u16> = FxHashMap::default();
    // SAFETY: the live table is accurate (caller's contract).
    unsafe {
        survivors.for_each(|op, b| {
            found.insert(op, 0);
            run_of.insert(op, window.run(b.stack));
        })
    };
    // The list handing the objects over may be a freed survivor's, from a freelist.
    found.remove(&gc_objects);
    found.extend(grown.keys().map(|&op| (op, 0)));
    if found.is_empty() {
        return Screened {
            survivors: native,
            recount: false,
        };
    }
    // SAFETY: the caller's contract is `count`'s.
    unsafe { count(state, &modules, &heap, &gc_items, gc_objects, &mut found) };
    // The runs that left survivors with references beyond those found, by type.
    let mut unexplained_runs: FxHashMap<usize, u64> = FxHashMap::default();
    for (&op, &n) in &found {
        let Some(&run) = run_of.get(&op) else {
            continue;
        };
        // SAFETY: a survivor is a live object.
        let header = unsafe { Header::new(op) };
        if refcount(state, op, header) > n {
            *unexplained_runs.entry(header.type_addr()).or_default() |= run_bit(run);
            if debug() {
                // SAFETY: as above.
                let object = unsafe { Object::new(op) };
                eprintln!(
                    "refhunt-debug: screen: survivor {op:#x} {} of run {run} has {} references, {n} found",
                    object.tp().name(),
                    object.refcnt()
                );
            }
        }
    }
    let unexplained = unexplained_runs.values().any(|&r| r == every);
    baseline.candidates = grown
        .into_iter()
        .map(|(op, tp)| {
            // SAFETY: as above.
            let header = unsafe { Header::new(op) };
            (op, tp, refcount(state, op, header), found[&op])
        })
        .collect();
    Screened {
        survivors: native || unexplained,
        recount: !baseline.candidates.is_empty(),
    }
}

/// After one more call: whether an old object whose refcount grew in the screened call
/// gained references that nothing found accounts for (the census's gain) in this one.
///
/// # Safety
/// As for [`end`].
pub unsafe fn recount(state: &State, baseline: &Baseline, gc_objects: usize) -> bool {
    let modules = modules::loaded();
    // SAFETY: `gc_objects` is a live list (caller's contract).
    let gc_items = unsafe { cpython::list_items(gc_objects) };
    // SAFETY: its items are live.
    let heap = unsafe { Heap::new(&state.api, &modules, &gc_items) };
    let readable = Readable::of_self();
    let mut found: FxHashMap<usize, isize> = FxHashMap::default();
    let mut refcounts = Vec::new();
    for &(op, tp, before, found_before) in &baseline.candidates {
        if !readable.contains(op, 16) {
            continue;
        }
        // SAFETY: the header's 16 bytes were just found mapped.
        let header = unsafe { Header::new(op) };
        if header.type_addr() == tp {
            found.insert(op, 0);
            refcounts.push((op, refcount(state, op, header) - before, found_before));
        }
    }
    // SAFETY: the caller's contract is `count`'s.
    unsafe { count(state, &modules, &heap, &gc_items, gc_objects, &mut found) };
    refcounts.into_iter().any(|(op, grew, found_before)| {
        let more = grew > 0 && grew > found[&op] - found_before;
        if more && debug() {
            // SAFETY: a candidate found mapped with its type: live.
            let object = unsafe { Object::new(op) };
            eprintln!(
                "refhunt-debug: screen: old {op:#x} {} grew by {grew}, found by {}",
                object.tp().name(),
                found[&op] - found_before
            );
        }
        more
    })
}

/// The bit of measured run `run` (1, 2, ...) in a mask of runs.
fn run_bit(run: u16) -> u64 {
    (1u64 << run.min(64)) >> 1
}

fn debug() -> bool {
    std::env::var_os("REFHUNT_DEBUG").is_some()
}

/// Adds to each object of `found` the references [`walk`] finds to it, and the one of the
/// list `gc_objects` to each tracked object.
///
/// # Safety
/// The GIL is held; `gc_items` are the live items of `gc_objects`, and `heap` was made from
/// them.
unsafe fn count(
    state: &State,
    modules: &[LoadedModule],
    heap: &Heap,
    gc_items: &[usize],
    gc_objects: usize,
    found: &mut FxHashMap<usize, isize>,
) {
    for op in gc_items {
        if let Some(n) = found.get_mut(op) {
            *n += 1;
        }
    }
    let (api, layout) = (&state.api, &state.layout);
    // SAFETY: the caller's contract is `walk`'s.
    unsafe {
        walk(
            api,
            layout,
            modules,
            heap,
            gc_items,
            &[gc_objects],
            |op, _| {
                if let Some(n) = found.get_mut(&op) {
                    *n += 1;
                }
            },
        )
    };
}
