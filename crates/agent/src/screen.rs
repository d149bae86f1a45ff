//! The screen: whether the calls of a batch of tests, tracked in a window of their own and
//! each test's made as measured runs of their own, may have left what the full method
//! (repetition, the snapshot, the census) calls a leak. One pass over the heap's references
//! at each end of the batch, and a read of the refcounts it noted around each test's runs.
//!
//! It flags a test when
//! - a survivor (an object made in it, alive) has more references than the references to it
//!   found from the objects the collector tracks, the containers and code objects they lead
//!   to, the strings that key their dicts, the fields their traversal leaves out, running
//!   frames' locals and static data, and such survivors of one type come from every run of
//!   the test: the snapshot finds at least these references, so each object it calls leaked
//!   or indirectly leaked is flagged here;
//! - a native block made in every run of the test is still allocated (the report's native
//!   leaks are among them);
//! - an object reached at the start gained over the batch a run's worth of references at
//!   least beyond those found to it (the census's gain, which it reports for an old object
//!   whose refcount grew in every measured run), and its refcount rose by as much over the
//!   test's runs.
//!
//! A flag means "look closer", not "leak": `pytest --refhunt` then screens the test alone,
//! and runs the full method if that cannot clear it. See docs/architecture.md, "The screen",
//! for why a leak it finds in every measured call shows in the screened ones.

use crate::census::{interpreter_roots, left_out, statics_hold_objects};
use crate::cpython::{self, Api, Header, Layout, Object, PyObject, VisitProc};
use crate::hooks::State;
use crate::live::ALLOCATED;
use crate::maps::Readable;
use crate::modules::{self, LoadedModule};
use crate::snapshot::untraversed_fields;
use crate::survivors::{Heap, Survivors};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};
use std::mem::take;

/// The objects reached when the screened calls began, each with its type, its refcount less
/// the agent's own reference (a code object a stack of the window keeps), and the references
/// found to it. An object may have several entries, whose references add up.
#[derive(Default)]
pub struct Baseline {
    entries: Vec<Entry>,
    /// Each entry's refcount as the runs of the test under way began.
    marks: Vec<isize>,
    /// The entries whose refcount rose by a run's worth at least over a test's runs, with
    /// the test.
    rises: Vec<(u32, u16)>,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    op: usize,
    tp: usize,
    refcount: isize,
    found: u32,
}

/// Entries of the objects reached last, by a hash of their address: most references go to
/// a few objects (interned names, `None`, small ints), which this sums in cache. An entry
/// pushed out goes to the baseline's list.
struct Recent {
    slots: Vec<Entry>,
}

const RECENT_BITS: u32 = 13;

impl Recent {
    fn new() -> Recent {
        Recent {
            slots: vec![Entry::default(); 1 << RECENT_BITS],
        }
    }

    /// Counts a reference to `op`, whose entry `entry` makes when it has none here.
    fn add(&mut self, op: usize, entry: impl FnOnce() -> Entry, out: &mut Vec<Entry>) {
        let i = (op >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_BITS);
        let slot = &mut self.slots[i];
        if slot.op == op {
            slot.found += 1;
            return;
        }
        if slot.op != 0 {
            out.push(*slot);
        }
        *slot = entry();
    }

    fn drain(self, out: &mut Vec<Entry>) {
        out.extend(self.slots.into_iter().filter(|e| e.op != 0));
    }
}

/// The traversal's state: what to do with each reference, and the containers outside the
/// collector's lists (untracked dicts and tuples, code objects) entered so far.
struct Walk<'a, F: FnMut(usize, bool)> {
    found: F,
    entered: FxHashSet<usize>,
    queue: Vec<usize>,
    /// Words visited and not yet looked at: looked at in bulk, each header fetched a few
    /// words ahead of its turn.
    pending: Vec<usize>,
    api: &'a Api,
    layout: &'a Layout,
}

/// # Safety
/// `arg` is the `Walk` the traversal was started with, borrowed by nothing else during the
/// call; `op` is what a traversal visits; the GIL is held.
unsafe extern "C" fn visit<F: FnMut(usize, bool)>(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is a `*mut Walk<F>` that nothing else borrows now (caller's contract).
    let w = unsafe { &mut *(arg as *mut Walk<F>) };
    if cpython::may_be_object(op as usize) {
        w.pending.push(op as usize);
    }
    0
}

/// Words pending before they are looked at.
const PENDING: usize = 512;

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
            // A live code object's object fields hold live objects.
            self.pending.extend(code.object_fields(self.layout));
            return;
        }
        // SAFETY: a live container, the GIL held; `self` goes only as the traversal's `arg`.
        unsafe { object.traverse(visit::<F> as VisitProc, self as *mut Self as *mut c_void) };
        let pending = &mut self.pending;
        // SAFETY: as above.
        unsafe {
            let api = self.api;
            untraversed_fields(object, self.layout, api, |word| {
                if cpython::may_be_object(word) {
                    pending.push(word)
                }
            })
        };
        // A class holds the keys its instances' dicts share, as the census counts them.
        if let Some(tp) = object.as_type() {
            pending.extend(tp.cached_keys(self.layout));
        }
        if let Some(dict) = object.as_dict() {
            // SAFETY: the GIL is held; `api` and `layout` are this interpreter's; its keys are
            // live, and strings, which `reached` passes on as untracked.
            unsafe { dict.unicode_keys(self.api, self.layout, |key| pending.push(key)) };
        }
    }

    /// Looks at the pending words, and enters the containers they lead to, until none is
    /// left.
    ///
    /// # Safety
    /// The pending words are live objects and the queued ones live containers or code
    /// objects; the GIL is held.
    unsafe fn drain(&mut self) {
        loop {
            let pending = std::mem::take(&mut self.pending);
            for (i, &op) in pending.iter().enumerate() {
                if let Some(&ahead) = pending.get(i + PREFETCH_AHEAD) {
                    prefetch(ahead);
                }
                // SAFETY: a pending word is a live object (caller's contract).
                unsafe { self.reached(op) };
            }
            self.pending = pending;
            self.pending.clear();
            match self.queue.pop() {
                // SAFETY: only live untracked containers and code objects are queued.
                Some(other) => unsafe { self.references_of(other) },
                None => return,
            }
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
        pending: Vec::with_capacity(2 * PENDING),
        api,
        layout,
    };
    for &op in gc_items.iter().filter(|op| !lists.contains(op)) {
        // SAFETY: a tracked object is a live container (caller's contract).
        unsafe { w.references_of(op) };
        if w.pending.len() >= PENDING {
            // SAFETY: what a traversal visits and a code object holds are live objects.
            unsafe { w.drain() };
        }
    }
    // SAFETY: as above.
    unsafe { w.drain() };
    // SAFETY: the GIL is held; what the interpreter holds is live.
    unsafe { interpreter_roots(api, layout, |op| w.reached(op)) };
    // The census's statics: the extensions' and the interpreter's, less its borrowed words
    // (its freelists, its type cache's values); its method cache holds the names it caches.
    let own = modules::find(modules, refcount as *const () as usize);
    // SAFETY: the GIL is held, so the main interpreter stays put.
    let borrowed = layout.borrowed_at(unsafe { (api.main_interpreter)() } as usize);
    for (i, m) in modules.iter().enumerate() {
        if Some(i) == own || !statics_hold_objects(&m.path) {
            continue;
        }
        // SAFETY: `m` is loaded, so its writable segments are mapped; a word is read
        // through only once its header is mapped and its type is a type.
        unsafe {
            m.static_words(&borrowed, |word| {
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
    /// The objects reached from `gc_items` (see [`walk`]) as the screened calls begin, in
    /// the memory of `spare`, a spent baseline.
    ///
    /// # Safety
    /// The GIL is held; `gc_items` are live objects (`gc.get_objects()`'s) and `lists` the
    /// lists that hand them over.
    pub unsafe fn take(
        state: &State,
        gc_items: &[usize],
        lists: &[usize],
        spare: Baseline,
    ) -> Baseline {
        let (api, layout) = (&state.api, &state.layout);
        let modules = modules::loaded();
        // SAFETY: `gc_items` are live (caller's contract).
        let heap = unsafe { Heap::new(api, &modules, gc_items) };
        let Baseline {
            mut entries,
            mut marks,
            mut rises,
        } = spare;
        entries.clear();
        marks.clear();
        rises.clear();
        let mut recent = Recent::new();
        // Each object the objects of `gc_items` lead to, with its references; an object left
        // out of the census (immortal, static, a metatype) with none.
        let mut reached = |op: usize, entries: &mut Vec<Entry>| {
            let entry = || {
                // SAFETY: `op` is a live object, whose header is readable and type live.
                let header = unsafe { Header::new(op) };
                Entry {
                    op,
                    tp: header.type_addr(),
                    refcount: refcount(state, op, header),
                    found: 1,
                }
            };
            // SAFETY: as above.
            if unsafe { !left_out(op, layout) } {
                recent.add(op, entry, entries);
            }
        };
        // As `count` has it: the list's reference to each tracked object, then the walk's.
        for &op in gc_items.iter().filter(|op| !lists.contains(op)) {
            reached(op, &mut entries);
        }
        // SAFETY: the caller's contract is `walk`'s.
        unsafe {
            walk(api, layout, &modules, &heap, gc_items, lists, |op, _| {
                reached(op, &mut entries)
            })
        };
        recent.drain(&mut entries);
        // One entry per object, in address order: each test's two reads of the refcounts go
        // through the heap once, page after page.
        entries.sort_unstable_by_key(|e| e.op);
        entries.dedup_by(|later, kept| {
            let same = later.op == kept.op;
            if same {
                kept.found += later.found;
            }
            same
        });
        if debug() {
            eprintln!(
                "refhunt-debug: screen: {} tracked, {} entries",
                gc_items.len(),
                entries.len()
            );
        }
        Baseline {
            entries,
            marks,
            rises,
        }
    }

    /// Notes each entry's refcount as test `test`'s runs begin (`ended` false), or, as they
    /// end, the entries whose refcount rose by `runs` at least since: a test that leaks
    /// references to an old object takes one in each of its runs.
    ///
    /// # Safety
    /// The GIL is held and tracking is paused.
    pub unsafe fn mark_test(&mut self, state: &State, test: u16, runs: u16, ended: bool) {
        // Their memory is reused from test to test.
        let (mut marks, mut rises) = (take(&mut self.marks), take(&mut self.rises));
        // SAFETY: the GIL is held and tracking is paused (caller's contract).
        let now = unsafe { self.refcounts_now(state) };
        if ended {
            rises.extend(now.enumerate().filter_map(|(i, (_, n))| {
                let before = marks.get(i).copied().unwrap_or(isize::MAX);
                let rose = n.is_some_and(|n| n.saturating_sub(before) >= runs as isize);
                rose.then_some((i as u32, test))
            }));
        } else {
            marks.clear();
            marks.extend(now.map(|(_, n)| n.unwrap_or(isize::MAX)));
        }
        (self.marks, self.rises) = (marks, rises);
    }

    /// Each entry with its object's refcount now: none if its memory is unmapped, holds
    /// another type, or holds a free-list pointer where the refcount was (a freed block).
    ///
    /// # Safety
    /// The GIL is held and tracking is paused.
    unsafe fn refcounts_now<'a>(
        &'a self,
        state: &'a State,
    ) -> impl Iterator<Item = (&'a Entry, Option<isize>)> + 'a {
        // The entries are in address order.
        let mut readable = Readable::of_self().ascending();
        self.entries.iter().enumerate().map(move |(i, e)| {
            // The headers are far apart: reading one is a cache miss, which the loads of
            // the next few overlap.
            if let Some(ahead) = self.entries.get(i + PREFETCH_AHEAD) {
                prefetch(ahead.op);
            }
            if !readable.contains(e.op, 16) {
                return (e, None);
            }
            // SAFETY: the header's 16 bytes were just found mapped.
            let header = unsafe { Header::new(e.op) };
            let now = refcount(state, e.op, header);
            let live = header.type_addr() == e.tp && now <= u32::MAX as isize;
            (e, live.then_some(now))
        })
    }

    /// The objects reached at the start whose refcount is higher now, with their refcount
    /// then and the references found to them then; `is_new` tells the window's survivors,
    /// which may sit where an old object died.
    ///
    /// # Safety
    /// The GIL is held and tracking is paused.
    unsafe fn grown(
        &self,
        state: &State,
        is_new: &dyn Fn(usize) -> bool,
    ) -> FxHashMap<usize, (isize, isize)> {
        // SAFETY: as above (caller's contract); an entry is one object's, all its
        // references summed.
        unsafe { self.refcounts_now(state) }
            .filter(|&(e, now)| now.is_some_and(|n| n > e.refcount) && !is_new(e.op))
            .map(|(e, _)| (e.op, (e.refcount, e.found as isize)))
            .collect()
    }
}

/// Entries ahead whose header is fetched while one is read.
const PREFETCH_AHEAD: usize = 16;

/// Asks for the cache line at `addr`, which need not be mapped: a prefetch never faults.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
    // address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// `op`'s refcount less the agent's own reference (to a code object only).
fn refcount(state: &State, op: usize, header: Header) -> isize {
    let ours = header.type_addr() == state.api.code_type && state.codes.contains(&op);
    header.refcnt() - isize::from(ours)
}

/// What the end of the screened calls says must be looked at more closely.
#[derive(Default)]
pub struct Screened {
    /// A bit per test: survivors of every one of its runs have references beyond those
    /// found, or native blocks of every one of them are left. The snapshot, which finds
    /// references everywhere, may classify them.
    pub survivors: u64,
    /// A bit per test: an old object gained references that those found do not account
    /// for, and rose over its runs. Only the census of the full method can tell.
    pub old: u64,
}

/// The end of the screened calls of `tests` tests, each made as `runs` measured runs, test
/// `i`'s numbered `i * runs + 1` to `(i + 1) * runs` (see the module's doc).
///
/// # Safety
/// The snapshot's contract (`snapshot::take`): the GIL is held and tracking is paused;
/// `gc_objects` is a live list from `gc.get_objects()`. `runs * tests` is at most 64.
pub unsafe fn end(
    state: &State,
    baseline: &Baseline,
    gc_objects: usize,
    runs: u16,
    tests: u16,
) -> Screened {
    let api = &state.api;
    let modules = modules::loaded();
    // SAFETY: `gc_objects` is a live list (caller's contract).
    let gc_items = unsafe { cpython::list_items(gc_objects) };
    // SAFETY: its items are live.
    let heap = unsafe { Heap::new(api, &modules, &gc_items) };
    let window = state.windows.view(&state.stacks);
    let survivors = Survivors::of(state, &window, &heap);
    // As the report's rule has it, what may be a leak was left by every measured run of a
    // test: the runs of each, as a mask.
    let masks: Vec<u64> = (0..tests)
        .map(|i| ((1u64 << runs) - 1) << (i * runs))
        .collect();
    let every_run_of = |runs_seen: u64| {
        masks
            .iter()
            .enumerate()
            .filter(|(_, &m)| runs_seen & m == m)
            .fold(0u64, |tests, (i, _)| tests | 1 << i)
    };
    let mut native_runs = 0u64;
    state.live.for_each(|_, b| {
        if b.is_native() && b.state == ALLOCATED && window.holds(b.stack) {
            native_runs |= run_bit(window.run(b.stack));
        }
    });
    let native = every_run_of(native_runs);
    if native != 0 && debug() {
        eprintln!("refhunt-debug: screen: native blocks left by every run of tests {native:#b}");
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
            old: 0,
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
    let unexplained = unexplained_runs
        .values()
        .fold(0, |tests, &r| tests | every_run_of(r));
    // Old objects that gained references nothing found explains, a run's worth at least:
    // the tests over whose runs they rose by as much.
    let mut gained = FxHashSet::default();
    for (&op, &(before, found_before)) in &grown {
        // SAFETY: an object reached at the start, found mapped now with its type: live.
        let header = unsafe { Header::new(op) };
        let gain = refcount(state, op, header) - before;
        if gain - (found[&op] - found_before) >= runs as isize {
            gained.insert(op);
            if debug() {
                // SAFETY: as above.
                let object = unsafe { Object::new(op) };
                eprintln!(
                    "refhunt-debug: screen: old {op:#x} {} gained {gain} references, {} found",
                    object.tp().name(),
                    found[&op] - found_before
                );
            }
        }
    }
    let took = baseline
        .rises
        .iter()
        .filter(|&&(i, _)| gained.contains(&baseline.entries[i as usize].op))
        .fold(0u64, |tests, &(_, test)| tests | 1 << test);
    if debug() {
        eprintln!(
            "refhunt-debug: screen: tests flagged by native blocks {native:#x}, survivors {unexplained:#x}, old objects {took:#x}"
        );
    }
    Screened {
        survivors: native | unexplained,
        old: took,
    }
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
