//! The end of a window: which recorded objects survive, what holds each, and the capture.
//!
//! A survivor's refcount is compared with the references that can be found:
//! - from every object the collector knows (`gc.get_objects()`) and every survivor, through
//!   `tp_traverse`, or for objects without one (code objects, ranges) a scan of their fixed
//!   part for pointers;
//! - from the static data (`.data`, `.bss`) of every loaded module.
//!
//! What is left over is a reference nobody can account for: a leaked reference. Objects held
//! only by leaked objects are indirect leaks; everything else is accounted for.

use crate::attribution::{self, Attribution};
use crate::brief;
use crate::census::{self, Roots, PLAIN_GAIN};
use crate::cpython::{self, read_usize, Api, Header, Layout, Object, PyObject, Type, VisitProc};
use crate::holds::History;
use crate::hooks::State;
use crate::live::{Block, ALLOCATED, BUFFER, NO_STACK};
use crate::modules::{self, LoadedModule};
use crate::native;
use crate::paths;
use crate::pyframes::PyFrameRef;
use crate::survivors::{Heap, Survivors};
use crate::tally::{Held, Owner, Tally};
use refhunt_core::capture::{
    Capture, Class, Group, Module, NativeGroup, PyFrame, RefWrites, Stack, Unexplained, Watched,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void, CStr};

/// Reachable groups given a path, at most: one search serves them all, but naming each path
/// walks dicts.
const MAX_PATHS: usize = 256;
/// Watched objects whose history a group carries, at most.
const WATCHED_PER_GROUP: usize = 4;
/// Creation sites a holder run watches, at most.
const HOLDER_SITES: usize = 16;
/// Old objects that holder runs watch, four a run, at most.
const HOLDER_OBJECTS: usize = 3 * crate::breakpoints::SLOTS;

/// What the snapshot hands back for the capture.
pub struct Outcome {
    pub groups: Vec<Group>,
    pub stacks: Vec<Stack>,
    pub modules: Vec<Module>,
    pub live_objects: u64,
    /// The self-check, when the window marked what was there before it.
    pub unseen: Option<Unseen>,
    /// Creation sites of leak groups that no watched object explains: a holder run watches
    /// them.
    pub holder_sites: FxHashMap<u64, u32>,
    pub unexplained: Vec<Unexplained>,
    pub native: Vec<NativeGroup>,
    /// Old objects with unexplained references that a holder run watches.
    pub holder_objects: Vec<HolderObject>,
}

/// An old object that a holder run watches directly.
#[derive(Clone, Copy)]
pub struct HolderObject {
    pub op: usize,
    pub tp: usize,
    /// Its place in the capture's `unexplained`.
    pub index: usize,
}

/// Objects the collector tracks that were made in the window and not seen made.
pub struct Unseen {
    pub total: u64,
    /// The most frequent types first, at most five.
    pub by_type: Vec<(String, u64)>,
}

struct Walk<'a> {
    survivors: &'a Survivors<'a>,
    held: Tally,
    /// The survivor being traversed, if the holder is one.
    holder: Option<usize>,
    /// (holder, held) between survivors.
    edges: Vec<(usize, usize)>,
    /// Survivors the current holder's traversal visited, to tell its C fields apart.
    visited: Vec<usize>,
    /// Holders already traversed or queued.
    seen: FxHashSet<usize>,
    /// Containers found by traversal that the collector does not track, still to traverse.
    queue: Vec<usize>,
    api: &'a Api,
    layout: cpython::Layout,
}

impl Walk<'_> {
    /// Containers hold references; so do code objects, though the collector ignores them.
    ///
    /// # Safety
    /// `op` is a live object; the GIL is held.
    unsafe fn holds_references(&self, op: usize) -> bool {
        // SAFETY: `op` is a live object and the GIL is held (caller's contract), which is all
        // `is_gc` needs.
        unsafe {
            let op = Object::new(op);
            op.as_code(self.api.code_type).is_some() || op.is_gc()
        }
    }
}

/// The visit function of every traversal the snapshot makes.
///
/// # Safety
/// The snapshot's contract (see [`take`]): the GIL is held and tracking is paused. `arg` is
/// the `Walk` the traversal was started with, borrowed by nothing else during the call; `op`
/// is what a traversal visits: a live object, or a word [`cpython::may_be_object`] rejects.
unsafe extern "C" fn visit(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is a `*mut Walk` that nothing else borrows now (caller's contract).
    let walk = unsafe { &mut *(arg as *mut Walk) };
    let op = op as usize;
    // SAFETY: `contains` takes any word while the live table is accurate (tracking is
    // paused); a word `may_be_object` lets through is a live object (caller's contract).
    if unsafe { walk.survivors.contains(op) } {
        walk.visited.push(op);
        walk.held.found(op, walk.holder.is_none());
        if let Some(h) = walk.holder {
            walk.edges.push((h, op));
        }
    } else if cpython::may_be_object(op)
        // SAFETY: a word `may_be_object` lets through is a live object (caller's contract),
        // and the GIL is held.
        && unsafe { walk.holds_references(op) }
        && walk.seen.insert(op)
    {
        walk.queue.push(op);
    }
    0
}

/// Visits `word` if it is a survivor; any word may be asked.
///
/// # Safety
/// The snapshot's contract (see [`take`]): the GIL is held and tracking is paused.
unsafe fn visit_survivor(word: usize, walk: &mut Walk) {
    // SAFETY: `contains` takes any word while the live table is accurate (tracking is
    // paused); a survivor is a live object, and `walk` is borrowed only through the pointer
    // for the call.
    unsafe {
        if walk.survivors.contains(word) {
            visit(word as *mut PyObject, walk as *mut Walk as *mut c_void);
        }
    }
}

/// Every instance of a heap type holds its type, which many C types' traversals (and
/// `type_traverse`, for a class's metaclass) do not visit; counted once, if they did not.
///
/// # Safety
/// The snapshot's contract (see [`take`]).
unsafe fn visit_heap_type(tp: Type, walk: &mut Walk) {
    if !tp.is_heap() {
        return;
    }
    let tp = tp.addr();
    match walk.visited.iter().position(|&v| v == tp) {
        Some(i) => {
            walk.visited.swap_remove(i);
        }
        // SAFETY: the caller's contract is `visit_survivor`'s.
        None => unsafe { visit_survivor(tp, walk) },
    }
}

/// Snapshot of the recorded blocks; the caller holds the GIL and has paused tracking.
///
/// # Safety
/// The snapshot's contract, which every unsafe fn of this module relies on: the GIL is held
/// and tracking is paused, so no object is freed or made and the live table is accurate.
/// `in_flight` lists what the program holds where no traversal looks (an exception in
/// flight).
/// `gc_objects` is a live `list` from `gc.get_objects()`; `garbage` is a list of the objects
/// the last collection found unreachable.
pub unsafe fn take(state: &State, gc_objects: usize, garbage: usize, in_flight: usize) -> Outcome {
    // SAFETY: the whole body relies on the contract above: with the GIL held and tracking paused,
    // the three lists and their items are live, the live table (hence every survivor) is accurate,
    // and nothing the walk reaches is freed while it runs; each call below needs no more than that.
    unsafe {
        let in_flight_list = in_flight;
        let api = &state.api;
        let layout = &state.layout;
        let modules = modules::loaded();
        let gc_items = cpython::list_items(gc_objects);
        let types = Heap::new(api, &modules, &gc_items);

        let window = state.windows.view(&state.stacks);
        let survivors = Survivors::of(state, &window, &types);
        let mut walk = Walk {
            survivors: &survivors,
            held: Tally::default(),
            holder: None,
            edges: Vec::new(),
            visited: Vec::new(),
            seen: FxHashSet::default(),
            queue: Vec::new(),
            api,
            layout: state.layout,
        };
        // The snapshot's own lists (`gc.get_objects()` and the garbage) hold a reference to each
        // of their items, found here; they hold nothing for the program, so an item they refer
        // to can still be held only by leaked objects.
        let garbage_items = cpython::list_items(garbage);
        for &op in gc_items.iter().chain(&garbage_items) {
            if survivors.contains(op) {
                walk.held.ours(op);
            }
        }
        walk.seen.extend([gc_objects, garbage]);
        // Survivors are traversed first, each as the holder of what it refers to.
        for &op in &gc_items {
            if !survivors.contains(op) && walk.seen.insert(op) {
                walk.queue.push(op);
            }
        }
        survivors.for_each(|op, _| {
            walk.holder = Some(op);
            references_of(op, &mut walk);
        });
        walk.holder = None;
        // What running frames refer to counts, and the containers among it are walked too
        // (up to 3.10 the frames themselves, which the collector does not track while they
        // run: their locals and their callers).
        census::interpreter_roots(api, layout, |word| {
            // SAFETY: what the interpreter holds is live, and `walk` is borrowed only through
            // the pointer for the call.
            visit(word as *mut PyObject, &mut walk as *mut Walk as *mut c_void);
        });
        let borrowed = layout.borrowed_at((api.main_interpreter)() as usize);
        scan_statics(&modules, &types, &mut walk, &borrowed);
        while let Some(op) = walk.queue.pop() {
            references_of(op, &mut walk);
        }
        for &code in &state.codes {
            // The agent's own reference to each code object in a stored stack.
            if survivors.contains(code) {
                walk.held.found(code, false);
            }
        }
        let (mut held, edges) = (walk.held, walk.edges);
        let attribution = Attribution::new(state, &modules);
        let in_flight = cpython::list_items(in_flight);
        classify(
            &survivors,
            &mut held,
            &edges,
            &garbage_items,
            &in_flight,
            &attribution,
        );
        if std::env::var_os("REFHUNT_DEBUG").is_some() {
            eprintln!(
                "refhunt-debug: {} histories, {} traps",
                state.holds.histories().count(),
                state.holds.traps
            );
            for h in state.holds.histories() {
                eprintln!(
                    "refhunt-debug: watched {:#x} {} whole={} traps={} survivor={}",
                    h.object,
                    Object::new(h.object).tp().name(),
                    h.whole,
                    h.traps,
                    survivors.contains(h.object)
                );
            }
            explain(&survivors, &held, &attribution, api);
        }
        let grouped = group(
            &survivors,
            &held,
            &attribution,
            state,
            &gc_items,
            &|class, op| {
                let h = held.get(op);
                (
                    evidence(class, op, h.as_ref(), &modules, api),
                    held_by_extension(h.as_ref(), &modules),
                )
            },
            &|op| {
                held.get(op)
                    .map_or(Object::new(op).refcnt() as i64, |h| unexplained(op, &h))
            },
        );
        let mut unexplained = grouped.unexplained;
        let mut stacks = grouped.stacks;
        let mut native_ids: FxHashMap<u32, u32> = FxHashMap::default();
        let owners = || {
            let mut owners = Vec::new();
            survivors.for_each(|op, b| {
                // A collection frees cyclic garbage, and with it the buffers it owns (msgpack's
                // Unpacker in a cycle with its ext_hook holds a megabyte).
                let class = class_of(op, &b, &held, &attribution);
                if class.is_leak() || class == Class::Garbage {
                    let block = op - b.object_offset as usize;
                    owners.push((block, block + b.size as usize));
                }
            });
            owners
        };
        let native = native::groups(
            state,
            &window,
            &modules,
            &|word| {
                let b = survivors.get(word)?;
                (b.stack < BUFFER && class_of(word, &b, &held, &attribution).is_leak())
                    .then(|| (b.stack, Object::new(word).tp().name()))
            },
            &owners,
            &mut |stack| {
                *native_ids.entry(stack).or_insert_with(|| {
                    stacks.push(resolve_stack(state, stack));
                    (stacks.len() - 1) as u32
                })
            },
        );
        let gains = match state.windows.census() {
            Some(census) => census.gains(
                api,
                layout,
                &Roots {
                    gc_items: &gc_items,
                    lists: &[gc_objects, garbage, in_flight_list],
                    ours: &state.codes,
                },
                &|op| survivors.contains(op),
                &grouped.containers,
            ),
            None => Vec::new(),
        };
        let holder_objects = gains
            .iter()
            .enumerate()
            .filter(|(_, g)| g.grew.is_some())
            .map(|(i, g)| HolderObject {
                op: g.op,
                tp: Object::new(g.op).tp().addr(),
                index: unexplained.len() + i,
            })
            .take(HOLDER_OBJECTS)
            .collect();
        unexplained.extend(gains.iter().map(|g| Unexplained {
            type_name: Object::new(g.op).tp().name(),
            repr: brief::describe(api, layout, Object::new(g.op)),
            unexplained: g.unexplained,
            gained: g.gained,
            grew: g.grew.map(u32::from),
            stack: None,
            watched: Vec::new(),
        }));
        Outcome {
            groups: grouped.groups,
            stacks,
            native,
            holder_sites: grouped.holder_sites,
            unexplained,
            holder_objects,
            modules: modules
                .iter()
                .map(|m| Module {
                    path: m.path.clone(),
                    start: m.start as u64,
                    end: m.end as u64,
                    bias: m.bias as u64,
                })
                .collect(),
            live_objects: grouped.live_objects,
            unseen: state
                .marked_before
                .then(|| unseen(state, &gc_items, &[gc_objects, garbage])),
        }
    }
}

/// The self-check: tracked objects with no record at their block, neither made in the window
/// nor alive before it. The lists handed to the snapshot were made after it paused.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `gc_items` are live objects.
unsafe fn unseen(state: &State, gc_items: &[usize], lists: &[usize]) -> Unseen {
    // SAFETY: the whole body relies on the contract above: each item is a live object, so its type
    // is live and readable, and its type's name too.
    unsafe {
        let mut by_type: FxHashMap<usize, u64> = FxHashMap::default();
        for &op in gc_items.iter().filter(|op| !lists.contains(op)) {
            let tp = Object::new(op).tp();
            // With creation events, an allocation alone was not seen made.
            let seen = match state.live.get(op - tp.preheader(&state.layout)) {
                Some(b) if b.state == ALLOCATED => !state.creations.seen() && b.stack < BUFFER,
                Some(_) => true,
                None => false,
            };
            if !seen {
                *by_type.entry(tp.addr()).or_default() += 1;
            }
        }
        let mut by_type: Vec<(String, u64)> = by_type
            .into_iter()
            .map(|(tp, n)| (Type::new(tp).name(), n))
            .collect();
        by_type.sort_by_key(|t| std::cmp::Reverse(t.1));
        Unseen {
            total: by_type.iter().map(|t| t.1).sum(),
            by_type: by_type.into_iter().take(5).collect(),
        }
    }
}

/// Visits what `op` refers to: `tp_traverse` for containers; for other objects, which the
/// collector does not traverse, a code object's object fields or a pointer scan of the fixed
/// part (a range's).
///
/// # Safety
/// The snapshot's contract (see [`take`]); `op` is a live object.
unsafe fn references_of(op: usize, walk: &mut Walk) {
    // SAFETY: `op` is a live object (caller's contract).
    let op = unsafe { Object::new(op) };
    let tp = op.tp();
    walk.visited.clear();
    if tp.has_gc() {
        // SAFETY: the GIL is held (the snapshot's contract); a container is traversed with
        // `walk` handed on only as the traversal's `arg`, borrowed by nothing else meanwhile.
        unsafe {
            if !op.is_gc() {
                return; // a static type: its references live in static data, scanned apart
            }
            op.traverse(visit as VisitProc, walk as *mut Walk as *mut c_void);
            visit_untraversed(op, walk);
            scan_c_fields(op, walk);
        }
        return;
    }
    // SAFETY: the snapshot's contract is theirs.
    unsafe { visit_heap_type(tp, walk) };
    if let Some(code) = op.as_code(walk.api.code_type) {
        let layout = walk.layout;
        for word in code
            .object_fields(&layout)
            .chain(code.cached_objects(&layout))
        {
            // SAFETY: the snapshot's contract is `visit_survivor`'s.
            unsafe { visit_survivor(word, walk) };
        }
        return;
    }
    // A str holds characters, not references, and a compact one ends before its type's
    // `tp_basicsize`: the next block's words once read like a pointer.
    if tp.addr() == walk.api.unicode_type {
        return;
    }
    // A variable-size object's first word is its size (an int's, a bytes').
    for word in op.fixed_words() {
        // SAFETY: the snapshot's contract is `contains`' and `visit`'s; a survivor is live.
        unsafe {
            if walk.survivors.contains(word) {
                visit(word as *mut PyObject, walk as *mut Walk as *mut c_void);
            }
        }
    }
}

/// References that `tp_traverse` leaves out because they cannot form a cycle, each found by a
/// false alarm. All but the string keys are visited only when the target is a survivor: the
/// live table says so without reading through the word.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `op` is a live container.
unsafe fn visit_untraversed(op: Object, walk: &mut Walk) {
    let layout = walk.layout;
    // A dict whose keys are all strings does not visit its keys.
    if let Some(dict) = op.as_dict() {
        let api = walk.api;
        // SAFETY: `op` is a live dict and the GIL is held (the snapshot's contract); `walk` is
        // borrowed only through the pointer for each call.
        unsafe {
            dict.unicode_keys(api, &layout, |key| {
                visit(key as *mut PyObject, walk as *mut Walk as *mut c_void);
            })
        };
    }
    let api = walk.api;
    // SAFETY: the snapshot's contract is `visit_survivor`'s.
    let visit = |word| unsafe { visit_survivor(word, walk) };
    // SAFETY: `op` is a live container (caller's contract).
    unsafe { untraversed_fields(op, &layout, api, visit) };
}

/// The references in `op`'s fields that its `tp_traverse` leaves out, but dict keys.
///
/// # Safety
/// `op` is a live object; the GIL is held.
pub unsafe fn untraversed_fields(
    op: Object,
    layout: &Layout,
    api: &Api,
    mut visit: impl FnMut(usize),
) {
    if let Some(tp) = op.as_type() {
        // A class holds the dict of its subclasses (weak references only); `import ast`
        // showed it.
        visit(tp.subclasses());
        // A heap type holds its name, its `__slots__` tuple and its qualified name (`_json`'s
        // types on 3.13 and functools' `_HashedSeq` showed them).
        tp.heap_names(layout)
            .into_iter()
            .flatten()
            .for_each(&mut visit);
    }
    // A module holds its name apart from its dict (3.13's `PyModule_Create` showed it).
    if let Some(module) = op.as_module(api.module_type) {
        visit(module.name_word(layout));
    }
    // A coroutine made while origin tracking is on (asyncio's debug mode) holds its origin.
    op.coroutine_origin(&api.frame_types, layout)
        .into_iter()
        .for_each(&mut visit);
    // A descriptor holds its names (a class's `__weakref__` and `__dict__` getters showed
    // them, one per class made in a test).
    op.descr_names(&api.descr_types)
        .into_iter()
        .flatten()
        .for_each(&mut visit);
    // 3.13: an object whose attributes still live inline owns its `__dict__` once one is
    // made, but `PyObject_VisitManagedDict` then visits only the inline values.
    // SAFETY: `op` is a live object (caller's contract).
    unsafe { op.materialized_dict(layout) }
        .into_iter()
        .for_each(visit);
}

/// Pointers to survivors that C code keeps through `op` and its traversal did not visit: in
/// the fixed part of its C struct (a C type's own fields, a C metaclass's fields of a class),
/// and in a module's state. Each counts once more than the traversal already did.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `op` is a live object.
unsafe fn scan_c_fields(op: Object, walk: &mut Walk) {
    // SAFETY: `at_or_text` takes any word while the live table is accurate (the snapshot's
    // contract).
    let owned = |word: usize, owner: Owner, walk: &mut Walk| unsafe {
        let Some(word) = walk.survivors.at_or_text(word) else {
            return;
        };
        if let Some(i) = walk.visited.iter().position(|&v| v == word) {
            walk.visited.swap_remove(i);
            return;
        }
        walk.held.pointer(word, true, owner, walk.holder.is_none());
        if let Some(h) = walk.holder {
            walk.edges.push((h, word));
        }
    };
    let tp = op.tp();
    // SAFETY: the snapshot's contract is theirs.
    unsafe { visit_heap_type(tp, walk) };
    // A weak reference points at its referent without holding it.
    let weak = walk
        .api
        .weakref_types
        .iter()
        .any(|&w| w != 0 && tp.derives_from(w));
    // A frame's header holds borrowed words, and stale or unset ones; its traversal visits
    // what it holds (`untraversed_fields` what it does not).
    let frame = op.holds_frame(&walk.api.frame_types);
    for word in op.fields().filter(|_| !weak && !frame) {
        owned(word, Owner::Field(tp.addr()), walk);
    }
    if let Some(module) = op.as_module(walk.api.module_type) {
        // SAFETY: `op` is a live object (caller's contract).
        for word in unsafe { module.state_words(&walk.layout, 1 << 20) } {
            owned(word, Owner::ModuleState(op.addr()), walk);
        }
    }
}

/// Counts pointers to survivors in every module's static data, and queues the untracked
/// containers that statics hold (such as the interpreter's table of loaded extensions), which
/// nothing else leads to.
///
/// The C runtime's own data (libc, the loader) holds no objects, only pointers into memory
/// that the snapshot's own allocations may have unmapped since the maps were read: probing
/// one for a dict crashed the host one run in three. The interpreter's freelists hold stale
/// pointers past their counts, and its type cache borrowed values that may have died (its
/// names it holds), to memory that now holds other objects: they are skipped too (3.12's
/// cache held one of the ints a window had leaked).
///
/// # Safety
/// The snapshot's contract (see [`take`]); `modules` are loaded, `types` was made from this
/// snapshot's objects, and `skip` are the interpreter's borrowed words.
unsafe fn scan_statics(
    modules: &[LoadedModule],
    types: &Heap,
    walk: &mut Walk,
    skip: &[crate::cpython::Borrowed],
) {
    let own = modules::find(modules, scan_statics as *const () as usize);
    for (i, m) in modules.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        let probe = !refhunt_core::runtime::is_c_runtime(&m.path);
        // An extension's static pointer to a buffer it allocated (a table of cached objects,
        // as orjson keeps its keys) holds what the buffer points at. The interpreter's own
        // buffers are its objects' (a list's items), which their traversal counts.
        let buffers = probe && !refhunt_core::runtime::is_runtime_library(&m.path);
        let on_word = |word| {
            // SAFETY: `at_or_text` takes any word while the live table is accurate.
            if let Some(word) = unsafe { walk.survivors.at_or_text(word) } {
                walk.held.pointer(word, false, Owner::Static(i), false);
            } else if let Some(size) = walk
                .survivors
                .buffer(word)
                .filter(|&size| buffers && types.readable(word, size))
            {
                for at in (word..word + size.min(1 << 22) / 8 * 8).step_by(8) {
                    // SAFETY: `word` starts a block made in the window that is still allocated
                    // (the live table is accurate) and mapped readable for its `size`, and `at`
                    // stays inside it.
                    let word = unsafe { read_usize(at) };
                    // SAFETY: `contains` takes any word while the live table is accurate.
                    if unsafe { walk.survivors.contains(word) } {
                        walk.held.pointer(word, true, Owner::StaticBuffer(i), true);
                    }
                }
            } else if probe
                && !walk.seen.contains(&word)
                // SAFETY: `untracked_dict` reads only what was mapped readable when the
                // snapshot began; the C runtime's data, whose pointers may lead to memory
                // unmapped since, is not probed (`probe` is false for it).
                && unsafe { types.untracked_dict(word) }
            {
                walk.seen.insert(word);
                walk.queue.push(word);
            }
        };
        // SAFETY: `m` is loaded (caller's contract), so its writable segments are mapped, as
        // `static_words` needs.
        unsafe { m.static_words(skip, on_word) };
    }
}

/// Gives a class, in `held`, to every survivor that something points at, that the collector
/// found to be garbage, or that holds another survivor. Every other survivor is a leak:
/// nothing explains any of its references.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `held` is keyed by survivors.
unsafe fn classify(
    survivors: &Survivors,
    held: &mut Tally,
    edges: &[(usize, usize)],
    garbage: &[usize],
    in_flight: &[usize],
    attribution: &Attribution,
) {
    // SAFETY: `get` takes any word while the live table is accurate, and `leak_class` reads
    // a stack's code objects, which the agent holds, with the GIL held.
    let leak = |op: usize| unsafe {
        survivors
            .get(op)
            .map_or(Class::Leaked, |b| attribution.leak_class(b.stack))
    };
    held.classify_each(|op, h| {
        // Pointers from C memory matter only where the references found in objects fall
        // short: a cache's stale or borrowed pointer to a list item changes nothing.
        // SAFETY: `op` is a survivor (caller's contract), a live object whose refcount is
        // readable.
        unsafe {
            if unexplained(op, &h) > 0 {
                leak(op)
            } else if h.owner.is_some() && h.ours + h.found < Object::new(op).refcnt() as i64 {
                Class::HeldOutside
            } else {
                Class::Reachable
            }
        }
    });
    for &op in garbage
        .iter()
        // SAFETY: `contains` takes any word while the live table is accurate.
        .filter(|&&op| unsafe { survivors.contains(op) })
    {
        held.set_class(op, Class::Garbage);
    }
    // What the program still holds where no traversal looks (the exception a `with` block
    // ends with: the thread state and the value stack hold it) is reachable, and so is all
    // that it holds: its traceback, the frames, their locals.
    let mut queue: Vec<usize> = in_flight
        .iter()
        .copied()
        // SAFETY: `contains` takes any word while the live table is accurate.
        .filter(|&op| unsafe { survivors.contains(op) })
        .collect();
    if !queue.is_empty() {
        let mut held_by: FxHashMap<usize, Vec<usize>> = FxHashMap::default();
        for &(h, t) in edges {
            held_by.entry(h).or_default().push(t);
        }
        while let Some(op) = queue.pop() {
            if held.set_class(op, Class::Reachable) != Some(Class::Reachable) {
                queue.extend(held_by.get(&op).into_iter().flatten());
            }
        }
    }
    for &(h, _) in edges {
        if held.class(h).is_none() {
            held.set_class(h, leak(h));
        }
    }
    // Only leaked holders and garbage pass their class on: without them (a program that
    // leaks nothing) nothing below would change.
    let passes_on = |&(h, _): &(usize, usize)| {
        held.class(h)
            .is_some_and(|c| c.is_leak() || c == Class::Garbage)
    };
    if !edges.iter().any(passes_on) {
        return;
    }
    // Each target's holders, side by side: a list per target would be an allocation per
    // survivor, the most of a snapshot of millions.
    let mut holders: Vec<(usize, usize)> = edges.iter().map(|&(h, t)| (t, h)).collect();
    holders.sort_unstable();
    // Held only by leaked objects: indirectly leaked; only by garbage: garbage. Repeat until
    // nothing changes (chains of containers).
    loop {
        let mut changed = false;
        for hs in holders.chunk_by(|a, b| a.0 == b.0) {
            let t = hs[0].0;
            // Pointers in C fields of leaked objects go with them; static data stays.
            let h = held.get(t).unwrap_or_default();
            let inheritable = match held.class(t) {
                Some(Class::Reachable) => true,
                Some(Class::HeldOutside) => {
                    !matches!(h.owner, Some(Owner::Static(_) | Owner::StaticBuffer(_)))
                }
                _ => false,
            };
            if !inheritable || h.outside_holder {
                continue;
            }
            let class_of = |&(_, h): &(usize, usize)| held.class(h).unwrap_or(Class::Leaked);
            let inherited = if hs.iter().all(|h| class_of(h).is_leak()) {
                Class::Indirect
            } else if hs.iter().all(|h| class_of(h) == Class::Garbage) {
                Class::Garbage
            } else {
                continue;
            };
            held.set_class(t, inherited);
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

/// References to `op` that nothing found accounts for.
///
/// # Safety
/// `op` is a live object.
unsafe fn unexplained(op: usize, h: &Held) -> i64 {
    // SAFETY: `op` is a live object (caller's contract).
    let refcnt = unsafe { Object::new(op) }.refcnt() as i64;
    refcnt - h.ours - h.found - h.statics - h.owned
}

/// A survivor's class: the one `classify` gave it, else a leak of its creation site's owner.
///
/// # Safety
/// The GIL is held (as for [`Attribution::leak_class`]).
unsafe fn class_of(op: usize, b: &Block, classes: &Tally, attribution: &Attribution) -> Class {
    match classes.class(op) {
        Some(class) => class,
        // SAFETY: the GIL is held (caller's contract), which is all `leak_class` needs.
        None => unsafe { attribution.leak_class(b.stack) },
    }
}

/// `REFHUNT_DEBUG`: each leaked object's accounting, to triage a false alarm.
///
/// # Safety
/// The snapshot's contract (see [`take`]).
unsafe fn explain(survivors: &Survivors, held: &Tally, attribution: &Attribution, api: &Api) {
    // SAFETY: the whole body relies on the contract above: `for_each` hands over live survivors
    // (the live table is accurate); `repr`, `PyUnicode_AsUTF8` and `Py_DecRef` run with the GIL
    // held on a live object and the new reference `repr` returned, given back once.
    unsafe {
        survivors.for_each(|op, b| {
            if class_of(op, &b, held, attribution) != Class::Leaked {
                return;
            }
            let h = held.get(op).unwrap_or_default();
            let repr = (api.repr)(op as *mut PyObject);
            let text = if repr.is_null() {
                (api.err_clear)();
                String::from("?")
            } else {
                let t = CStr::from_ptr((api.unicode_utf8)(repr))
                    .to_string_lossy()
                    .into_owned();
                (api.decref)(repr);
                t
            };
            eprintln!(
                "refhunt-debug: {:#x} {} refcnt={} found={} statics={} {:.120}",
                op,
                Object::new(op).tp().name(),
                Object::new(op).refcnt(),
                h.found,
                h.statics,
                text
            );
        });
    }
}

/// Survivors grouped by (class, type, creation stack), with their count in each measured run,
/// and how many survivors there are. Reachable groups that grew in every run get a path from
/// a module, as the report lists them.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `gc_items` are live objects.
unsafe fn group(
    survivors: &Survivors,
    classes: &Tally,
    attribution: &Attribution,
    state: &State,
    gc_items: &[usize],
    evidence: &dyn Fn(Class, usize) -> (Option<String>, bool),
    unexplained: &dyn Fn(usize) -> i64,
) -> Grouped {
    struct Tally {
        count: u64,
        bytes: u64,
        runs: Vec<u64>,
        /// One survivor of the group, to find a path to.
        example: usize,
    }
    // Survivors come in address order, and neighbours mostly share a key: sum each run of
    // equal keys, then merge the sums by the stack's site, since each measured run has its
    // own stack ids.
    /// (class, type, stack) and (count, bytes, one survivor).
    type Key = (Class, usize, u32);
    type Sum = (u64, u64, usize);
    let mut by_stack: FxHashMap<Key, Sum> = FxHashMap::default();
    let mut current: Option<(Key, Sum)> = None;
    let mut live_objects = 0;
    let mut flush = |run: Option<(Key, Sum)>| {
        if let Some((key, (count, bytes, example))) = run {
            let t = by_stack.entry(key).or_insert((0, 0, example));
            t.0 += count;
            t.1 += bytes;
        }
    };
    // Survivors that may have a hundred references nobody accounts for, and the containers,
    // whose references the census counts.
    let mut many = Vec::new();
    let mut containers = Vec::new();
    // SAFETY: the live table is accurate (tracking is paused), as `for_each` needs; each `op`
    // it hands over is a live object, whose header and type are readable, and the GIL is held,
    // as `is_gc`, `class_of` and `buffers_of` need.
    unsafe {
        survivors.for_each(|op, b| {
            live_objects += 1;
            let object = Object::new(op);
            if object.refcnt() as i64 >= PLAIN_GAIN {
                many.push((op, b.stack));
            }
            if state.windows.census().is_some()
                && (object.is_gc() || object.as_code(state.api.code_type).is_some())
            {
                containers.push(op);
            }
            let tp = object.tp().addr();
            let key = (class_of(op, &b, classes, attribution), tp, b.stack);
            let mut bytes = b.size.div_ceil(16) as u64 * 16;
            if key.0.is_leak() {
                bytes += buffers_of(op, survivors, state);
            }
            match &mut current {
                Some((k, run)) if *k == key => {
                    run.0 += 1;
                    run.1 += bytes;
                }
                _ => flush(current.replace((key, (1, bytes, op)))),
            }
        });
    }
    flush(current);
    let mut groups: FxHashMap<(Class, usize, &[u64]), (u32, Tally)> = FxHashMap::default();
    let mut runs = 0;
    // Without repetition, reachable objects are only totalled (a program holds thousands),
    // so their sites are left out: a capture of `ast.parse` went from 3.6 MB to a fraction.
    let repeated = by_stack.keys().any(|&(_, _, s)| survivors.run(s) > 0);
    for ((class, tp, stack), (count, bytes, example)) in by_stack {
        let stack = if class == Class::Reachable && !repeated {
            NO_STACK
        } else {
            stack
        };
        let site = if stack == NO_STACK {
            &[]
        } else {
            state.stacks.site(stack)
        };
        let (_, g) = groups.entry((class, tp, site)).or_insert((
            stack,
            Tally {
                count: 0,
                bytes: 0,
                runs: Vec::new(),
                example,
            },
        ));
        g.count += count;
        g.bytes += bytes;
        let epoch = if stack == NO_STACK {
            0
        } else {
            survivors.run(stack) as usize
        };
        if epoch > 0 {
            if g.runs.len() < epoch {
                g.runs.resize(epoch, 0);
            }
            g.runs[epoch - 1] += count;
            runs = runs.max(epoch);
        }
    }
    // Whether a reachable group grew in every run is judged on its creation site (see
    // `StackTable::site_hash`), as the report merges groups: one Python line reaches the same
    // C line by other interpreter paths once the interpreter has specialized its call.
    let mut by_site: FxHashMap<(usize, u64), (Vec<u64>, usize)> = FxHashMap::default();
    for ((class, tp, _), (stack, t)) in &groups {
        if *class != Class::Reachable || runs == 0 {
            continue;
        }
        let (sum, _) = by_site
            .entry((*tp, state.stacks.site_hash(*stack)))
            .or_insert_with(|| (vec![0; runs], t.example));
        for (s, n) in sum.iter_mut().zip(&t.runs) {
            *s += n;
        }
    }
    let wanted: FxHashSet<usize> = by_site
        .into_values()
        .filter(|(sum, _)| !sum.contains(&0))
        .map(|(_, example)| example)
        .take(MAX_PATHS)
        .collect();
    let mut paths = if wanted.is_empty() {
        FxHashMap::default()
    } else {
        // SAFETY: the GIL is held and the objects are live (caller's contract); `wanted` are
        // survivors, live too.
        unsafe { paths::from_modules(&state.api, gc_items, &wanted) }
    };
    // Each watched survivor's history goes with its group; the whole ones first, the
    // longest first.
    let mut watched: FxHashMap<(Class, usize, &[u64]), Vec<&History>> = FxHashMap::default();
    for h in state.holds.histories() {
        // SAFETY: `get` takes any word while the live table is accurate.
        let Some(b) = (unsafe { survivors.get(h.object) }) else {
            continue;
        };
        // SAFETY: the GIL is held (caller's contract), as `class_of` needs.
        let class = unsafe { class_of(h.object, &b, classes, attribution) };
        if class != Class::Reachable && b.stack < BUFFER {
            let site = state.stacks.site(b.stack);
            watched
                // SAFETY: `h.object` is a survivor, a live object.
                .entry((class, unsafe { Object::new(h.object) }.tp().addr(), site))
                .or_default()
                .push(h);
        }
    }
    for hs in watched.values_mut() {
        hs.sort_by_key(|h| (!h.whole, std::cmp::Reverse(h.traps)));
        hs.truncate(WATCHED_PER_GROUP);
    }
    let mut stack_ids: FxHashMap<u32, u32> = FxHashMap::default();
    let mut stacks = Vec::new();
    let mut id_of = |stack: u32| {
        *stack_ids.entry(stack).or_insert_with(|| {
            // SAFETY: the GIL is held (caller's contract), as `resolve_stack` needs.
            stacks.push(unsafe { resolve_stack(state, stack) });
            (stacks.len() - 1) as u32
        })
    };
    let watched_of = |h: &History, id_of: &mut dyn FnMut(u32) -> u32| {
        to_watched(h, id_of, unexplained(h.object), None)
    };
    let mut extra = Vec::new();
    for (op, stack) in many {
        let n = unexplained(op);
        if n < PLAIN_GAIN {
            continue;
        }
        extra.push(Unexplained {
            // SAFETY: `op` is a survivor, a live object, and the GIL is held (caller's
            // contract), as `describe` needs.
            type_name: unsafe { Object::new(op) }.tp().name(),
            // SAFETY: `op` is a live survivor and the GIL is held, as `describe` needs.
            repr: unsafe { brief::describe(&state.api, &state.layout, Object::new(op)) },
            unexplained: n,
            gained: n,
            grew: None,
            stack: (stack < BUFFER).then(|| id_of(stack)),
            watched: state
                .holds
                .histories()
                .filter(|h| h.object == op)
                .map(|h| watched_of(h, &mut id_of))
                .collect(),
        });
    }
    let mut out = Vec::new();
    let mut holder_sites = FxHashMap::default();
    for (key, (stack, tally)) in groups {
        let (class, tp, _) = key;
        let id = id_of(stack);
        let (evidence, held_by_extension) = evidence(class, tally.example);
        let histories = watched.remove(&key).unwrap_or_default();
        // Under repetition, a leak that no object watched whole explains is watched again, in
        // a holder run. Whether it grew in every run is the report's to judge, on the groups
        // it merges by site (a warm call site reaches the same line by a shorter C path).
        if class == Class::Leaked
            && runs > 0
            && !tally.runs.is_empty()
            && !histories.iter().any(|h| h.whole)
            && holder_sites.len() < HOLDER_SITES
        {
            holder_sites.insert(state.stacks.site_hash(stack), id);
        }
        let watched = histories
            .into_iter()
            .map(|h| watched_of(h, &mut id_of))
            .collect();
        out.push(Group {
            class,
            // SAFETY: `tp` is the type of a survivor, live as it is.
            type_name: unsafe { Type::new(tp) }.name(),
            count: tally.count,
            bytes: tally.bytes,
            stack: id,
            runs: tally.runs,
            path: paths.remove(&tally.example),
            evidence,
            held_by_extension,
            watched,
        });
    }
    out.sort_by(|a, b| (a.class, b.bytes).cmp(&(b.class, a.bytes)));
    Grouped {
        groups: out,
        stacks,
        live_objects,
        holder_sites,
        unexplained: extra,
        containers,
    }
}

/// The fields of a leaked object where its buffers are looked for: those of its first 512
/// bytes, past its refcount and type.
const BUFFER_FIELDS: usize = 62;

/// The bytes of the blocks made in the window that leaked object `op` points to from its
/// fixed part and that hold no object: a list's items, a dict's keys, a bytearray's bytes,
/// a C type's malloc'd buffer. They go with the object's leak.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `op` is a survivor.
unsafe fn buffers_of(op: usize, survivors: &Survivors, state: &State) -> u64 {
    let mut counted = [0usize; 4];
    let mut n = 0;
    let mut bytes = 0;
    // Past the refcount and the type, within the type's fixed size.
    // SAFETY: `op` is a survivor (caller's contract), a live object.
    for word in unsafe { Object::new(op) }.fields().take(BUFFER_FIELDS) {
        if word == 0 || !word.is_multiple_of(16) || counted[..n].contains(&word) {
            continue;
        }
        let Some(b) = state.live.get(word) else {
            continue;
        };
        // Without creation events, a block with a stack may hold an object.
        let buffer = b.stack == BUFFER || b.is_native() || state.creations.seen();
        // An enclosing window's block is old to this one.
        let ours = b.stack >= BUFFER || survivors.in_window(b.stack);
        // SAFETY: `contains` takes any word while the live table is accurate.
        if b.state == ALLOCATED && buffer && ours && !unsafe { survivors.contains(word) } {
            bytes += b.size as u64;
            if n < counted.len() {
                counted[n] = word;
                n += 1;
            }
        }
    }
    bytes
}

struct Grouped {
    groups: Vec<Group>,
    stacks: Vec<Stack>,
    live_objects: u64,
    /// Creation site hash, and the group's stack in the capture.
    holder_sites: FxHashMap<u64, u32>,
    unexplained: Vec<Unexplained>,
    /// Survivors that are containers.
    containers: Vec<usize>,
}

/// A history as the capture carries it, its stacks renumbered by `id_of`.
fn to_watched(
    h: &History,
    id_of: &mut dyn FnMut(u32) -> u32,
    unexplained: i64,
    calls: Option<u32>,
) -> Watched {
    Watched {
        writes: h
            .writes
            .iter()
            .map(|w| RefWrites {
                stack: id_of(w.stack),
                increments: w.increments,
                decrements: w.decrements,
            })
            .collect(),
        order: h.order.iter().map(|&(s, d)| (id_of(s), d)).collect(),
        unordered: h.unordered,
        whole: h.whole,
        lost: h.lost,
        unexplained,
        from_creation: h.from_creation,
        calls,
    }
}

/// What a holder run's breakpoints saw, added to the capture of the window before it: each
/// watched object made at a wanted site that is still alive joins its group, and each old
/// object its entry, as one call's worth.
///
/// # Safety
/// The GIL is held and tracking is paused.
pub unsafe fn add_holders(state: &State, capture: &mut Capture) {
    let mut resolved: FxHashMap<u32, u32> = FxHashMap::default();
    if std::env::var_os("REFHUNT_DEBUG").is_some() {
        eprintln!(
            "refhunt-debug: holder run: {} histories, {} sites, {} objects",
            state.holds.histories().count(),
            state.holder_sites.len(),
            state.holder_chunk.len()
        );
    }
    for h in state.holds.histories() {
        // SAFETY: a history is forgotten when its block is freed or made into another object
        // (`Holds::forget`, from the hooks), so `h.object`'s block is still allocated and its
        // object's header readable.
        let alive = unsafe { Header::new(h.object) }.refcnt() > 0;
        let old = state.holder_chunk.iter().find(|o| o.op == h.object);
        let group = if old.is_some() {
            None
        } else {
            // SAFETY: `h.object`'s block is still allocated (its history was not forgotten),
            // so its header is readable, and its type is live while the object is.
            let tp = unsafe { Object::new(h.object) }.tp();
            let block = h.object - tp.preheader(&state.layout);
            state
                .live
                .get(block)
                .filter(|b| b.stack < BUFFER)
                .and_then(|b| state.holder_sites.get(&state.stacks.site_hash(b.stack)))
                .and_then(|id| {
                    capture
                        .groups
                        .iter()
                        .position(|g| g.stack == *id && g.class == Class::Leaked)
                })
        };
        if !alive || (old.is_none() && group.is_none()) {
            continue;
        }
        let stacks = &mut capture.stacks;
        let mut id_of = |stack: u32| {
            *resolved.entry(stack).or_insert_with(|| {
                // SAFETY: the GIL is held (caller's contract), as `resolve_stack` needs.
                stacks.push(unsafe { resolve_stack(state, stack) });
                (stacks.len() - 1) as u32
            })
        };
        let watched = to_watched(h, &mut id_of, 0, old.is_some().then_some(1));
        if let Some(u) = old.and_then(|o| capture.unexplained.get_mut(o.index)) {
            u.watched.push(watched);
        } else if let Some(g) = group.map(|g| &mut capture.groups[g]) {
            if g.watched.len() < WATCHED_PER_GROUP {
                g.watched.push(watched);
            }
        }
    }
}

/// Whether C code outside the runtime holds the survivor: a pointer in an extension's static
/// data or buffer, in a module's state, or in an object's C field.
fn held_by_extension(held: Option<&Held>, modules: &[LoadedModule]) -> bool {
    match held.and_then(|h| h.owner) {
        Some(Owner::Static(i) | Owner::StaticBuffer(i)) => {
            !refhunt_core::runtime::is_runtime_library(&modules[i].path)
                && !attribution::is_main_executable(&modules[i].path)
        }
        Some(Owner::ModuleState(_) | Owner::Field(_)) => true,
        None => false,
    }
}

/// What the class of survivor `op` rests on, in words.
///
/// # Safety
/// The snapshot's contract (see [`take`]); `op` is a survivor and `held` what was found of
/// it, whose owners are live.
unsafe fn evidence(
    class: Class,
    op: usize,
    held: Option<&Held>,
    modules: &[LoadedModule],
    api: &Api,
) -> Option<String> {
    let file = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let referenced = |h: &Held| h.found + h.statics + h.owned > 0;
    Some(match (class, held) {
        (Class::Leaked | Class::Interpreter, None) => "referenced by nothing".into(),
        (Class::Leaked | Class::Interpreter, Some(h)) if !referenced(h) => {
            "referenced by nothing".into()
        }
        (Class::Leaked | Class::Interpreter, Some(h)) => {
            // SAFETY: `op` is a survivor, a live object (caller's contract).
            let missing = unsafe { unexplained(op, h) };
            format!(
                "{missing} {} more than the {} found",
                if missing == 1 {
                    "reference"
                } else {
                    "references"
                },
                h.found + h.statics + h.owned
            )
        }
        (Class::Indirect, _) => "held only by leaked objects".into(),
        (Class::Garbage, _) => "unreachable, in a reference cycle".into(),
        (Class::HeldOutside, Some(h)) => match h.owner? {
            Owner::Static(i) => {
                format!("a pointer in the static data of {}", file(&modules[i].path))
            }
            Owner::ModuleState(m) => format!(
                "a pointer in the state of module {}",
                // SAFETY: `m` is a module the walk reached, live, and the GIL is held.
                unsafe { module_name(api, m) }
            ),
            Owner::Field(tp) => format!(
                "a pointer in a C field of a {} object",
                // SAFETY: `tp` is the type of an object the walk reached, live as it is.
                unsafe { Type::new(tp) }.name()
            ),
            Owner::StaticBuffer(i) => format!(
                "a pointer in a buffer that the static data of {} points to",
                file(&modules[i].path)
            ),
        },
        _ => return None,
    })
}

/// The stored stack `id`, its Python frames named; an empty one for an object or a write
/// kept without a stack (`NO_STACK`: a write trapped when no room was left for a new one).
///
/// # Safety
/// The GIL is held.
unsafe fn resolve_stack(state: &State, id: u32) -> Stack {
    if id >= BUFFER {
        return Stack::default();
    }
    Stack {
        native: state.stacks.native(id).to_vec(),
        python: state
            .stacks
            .python(id)
            // SAFETY: a stored frame's code object is one the agent holds a reference to
            // (`State::codes`), so live, and the GIL is held (caller's contract).
            .map(|f| unsafe { python_frame(&state.api, &state.layout, f) })
            .collect(),
    }
}

/// A stored Python frame's file, function and line.
///
/// # Safety
/// `f.code` is a live code object; the GIL is held.
unsafe fn python_frame(api: &Api, layout: &cpython::Layout, f: PyFrameRef) -> PyFrame {
    // SAFETY: `f.code` is a live code object (caller's contract).
    let Some(code) = unsafe { Object::new(f.code) }.as_code(api.code_type) else {
        return PyFrame {
            file: String::new(),
            function: String::new(),
            line: 0,
        };
    };
    // SAFETY: `PyCode_Addr2Line` is given a live code object with the GIL held, and
    // `str_text` a code object's names, live strs, with the GIL held.
    unsafe {
        PyFrame {
            file: str_text(api, code.filename(layout)),
            function: str_text(api, code.qualname(layout)),
            line: (api.code_addr2line)(f.code as *mut PyObject, f.offset).max(0) as u32,
        }
    }
}

/// The text of the str `op`; empty where it is null or not a str.
///
/// # Safety
/// `op` is null or a live object; the GIL is held.
pub(crate) unsafe fn str_text(api: &Api, op: usize) -> String {
    if op == 0 {
        return String::new();
    }
    // SAFETY: `op` is a live object and the GIL is held (caller's contract); on anything but a
    // str `PyUnicode_AsUTF8` fails with an exception.
    let utf8 = unsafe { (api.unicode_utf8)(op as *mut PyObject) };
    if utf8.is_null() {
        // SAFETY: the GIL is held; `PyUnicode_AsUTF8` failed and set an exception.
        unsafe { (api.err_clear)() };
        return String::new();
    }
    // SAFETY: a non-null result is the str's NUL-terminated UTF-8, alive while it is.
    unsafe { CStr::from_ptr(utf8) }
        .to_string_lossy()
        .into_owned()
}

/// The name of module `op`, or `?`.
///
/// # Safety
/// `op` is a live module object; the GIL is held.
pub(crate) unsafe fn module_name(api: &Api, op: usize) -> String {
    // SAFETY: `op` is a live module and the GIL is held (caller's contract).
    let name = unsafe { (api.module_name)(op as *mut PyObject) };
    if name.is_null() {
        // SAFETY: the GIL is held; `PyModule_GetName` failed and set an exception.
        unsafe { (api.err_clear)() };
        return "?".into();
    }
    // SAFETY: a non-null result is the module's NUL-terminated name, alive while it is.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}
