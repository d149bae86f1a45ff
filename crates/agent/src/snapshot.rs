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

use crate::cpython::{
    self, read_usize, type_flags, type_name, type_of, Api, Layout, PyObject, VisitProc,
    TPFLAGS_HAVE_GC, TPFLAGS_TYPE_SUBCLASS,
};
use crate::hooks::State;
use crate::index::Index;
use crate::live::{Block, LIVE, NO_STACK};
use crate::maps::Readable;
use crate::modules::{self, LoadedModule};
use crate::paths;
use crate::pyframes::PyFrameRef;
use refhunt_core::capture::{Class, Group, Module, PyFrame, Stack};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void, CStr};

/// Reachable groups given a path, at most: one search serves them all, but naming each path
/// walks dicts.
const MAX_PATHS: usize = 256;

/// What the snapshot hands back for the capture.
pub struct Outcome {
    pub groups: Vec<Group>,
    pub stacks: Vec<Stack>,
    pub modules: Vec<Module>,
    pub live_objects: u64,
}

/// The recorded objects still alive at the end of the window, in address order, a column per
/// field: a program may leave millions, and every byte kept per survivor is paid for in page
/// faults.
struct Survivors {
    /// Their addresses.
    index: Index,
    stacks: Vec<u32>,
    bytes: Vec<u32>,
}

/// What points at one survivor; kept only for the survivors something points at.
#[derive(Clone, Copy, Default)]
struct Held {
    /// References found in objects.
    found: i64,
    /// Pointers found in static data.
    statics: i64,
    /// Referred to by an object outside the survivors.
    outside_holder: bool,
}

struct Walk<'a> {
    index: &'a Index,
    held: FxHashMap<u32, Held>,
    /// The survivor being traversed, if the holder is one.
    holder: Option<u32>,
    edges: Vec<(u32, u32)>,
    /// Holders already traversed or queued.
    seen: FxHashSet<usize>,
    /// Containers found by traversal that the collector does not track, still to traverse.
    queue: Vec<usize>,
    code_type: usize,
    dict_next: unsafe extern "C" fn(
        *mut PyObject,
        *mut isize,
        *mut *mut PyObject,
        *mut *mut PyObject,
    ) -> c_int,
    /// 3.11+: dicts whose keys are all strings do not visit their keys.
    unicode_dicts: bool,
    /// 3.13+: objects may keep their attributes inline and still own a `__dict__`.
    inline_values: bool,
    module_type: usize,
    ht_slots: usize,
}

impl Walk<'_> {
    /// Containers hold references; so do code objects, though the collector ignores them.
    unsafe fn holds_references(&self, op: usize) -> bool {
        type_of(op) == self.code_type || cpython::is_gc(op)
    }
}

unsafe extern "C" fn visit(op: *mut PyObject, arg: *mut c_void) -> c_int {
    let walk = &mut *(arg as *mut Walk);
    let op = op as usize;
    if let Some(i) = walk.index.get(op) {
        let held = walk.held.entry(i).or_default();
        held.found += 1;
        match walk.holder {
            Some(h) => walk.edges.push((h, i)),
            None => held.outside_holder = true,
        }
    } else if walk.holds_references(op) && walk.seen.insert(op) {
        walk.queue.push(op);
    }
    0
}

/// Snapshot of the recorded blocks; the caller holds the GIL and has paused tracking.
///
/// # Safety
/// `gc_objects` is a live `list` from `gc.get_objects()`; `garbage` is a list of the objects
/// the last collection found unreachable.
pub unsafe fn take(state: &State, gc_objects: usize, garbage: usize) -> Outcome {
    let api = &state.api;
    let layout = &state.layout;
    let modules = modules::loaded();
    let gc_items = list_items(gc_objects);
    let types = Heap::new(api, &modules, &gc_items);

    let recorded = state.live.len();
    let (mut ops, mut stacks, mut bytes) = (
        Vec::with_capacity(recorded),
        Vec::with_capacity(recorded),
        Vec::with_capacity(recorded),
    );
    state.live.for_each(|block, b| {
        if let Some(op) = object_in(block, &b, state.tracer_active, layout, &types) {
            if counts(op, layout, api) {
                ops.push(op);
                stacks.push(b.stack);
                bytes.push(b.size.div_ceil(16) * 16);
            }
        }
    });
    let survivors = Survivors {
        index: Index::new(ops),
        stacks,
        bytes,
    };
    let index = &survivors.index;

    let mut walk = Walk {
        index,
        held: FxHashMap::default(),
        holder: None,
        edges: Vec::new(),
        seen: FxHashSet::default(),
        queue: Vec::new(),
        code_type: api.code_type,
        dict_next: api.dict_next,
        unicode_dicts: state.layout.minor >= 11,
        inline_values: state.layout.minor >= 13,
        module_type: api.module_type,
        ht_slots: state.layout.ht_slots,
    };
    // Survivors are traversed first, each as the holder of what it refers to.
    for &op in gc_items.iter().chain(std::iter::once(&gc_objects)) {
        if !index.contains(op) && walk.seen.insert(op) {
            walk.queue.push(op);
        }
    }
    for i in 0..index.len() {
        walk.holder = Some(i as u32);
        references_of(index.op(i), &mut walk);
    }
    walk.holder = None;
    scan_statics(&modules, &types, &mut walk);
    while let Some(op) = walk.queue.pop() {
        references_of(op, &mut walk);
    }
    for &code in &state.codes {
        // The agent's own reference to each code object in a stored stack.
        if let Some(i) = index.get(code) {
            walk.held.entry(i).or_default().found += 1;
        }
    }
    let (held, edges) = (walk.held, walk.edges);
    let garbage = list_items(garbage);
    let classes = classify(index, &held, &edges, &garbage, |classes| {
        attribute_to_interpreter(classes, &survivors.stacks, state, &modules)
    });
    if std::env::var_os("REFHUNT_DEBUG").is_some() {
        explain(index, &classes, &held, api);
    }
    let (groups, stacks) = group(&survivors, &classes, state, &gc_items);
    Outcome {
        groups,
        stacks,
        modules: modules
            .iter()
            .map(|m| Module {
                path: m.path.clone(),
                start: m.start as u64,
                end: m.end as u64,
                bias: m.bias as u64,
            })
            .collect(),
        live_objects: index.len() as u64,
    }
}

unsafe fn list_items(list: usize) -> Vec<usize> {
    // PyListObject: ob_size at 16, ob_item at 24 (stable since 3.0).
    let n = read_usize(list + 16);
    let items = read_usize(list + 24) as *const usize;
    (0..n).map(|i| *items.add(i)).collect()
}

/// What is known for certain about the heap at the snapshot, to tell real objects from words
/// that only look like them without reading unmapped memory. A type is static (inside a
/// module's writable segment) or a heap type the collector tracks.
struct Heap {
    dict_type: usize,
    heap_types: FxHashSet<usize>,
    tracked: FxHashSet<usize>,
    readable: Readable,
    segments: Vec<(usize, usize)>,
    type_type: usize,
    last_type: std::cell::Cell<(usize, bool)>,
}

impl Heap {
    unsafe fn new(api: &Api, modules: &[LoadedModule], gc_items: &[usize]) -> Heap {
        let heap_types = gc_items
            .iter()
            .copied()
            .filter(|&o| type_flags(type_of(o)) & TPFLAGS_TYPE_SUBCLASS != 0)
            .collect();
        let mut segments: Vec<(usize, usize)> = modules
            .iter()
            .flat_map(|m| m.writable.iter().copied())
            .collect();
        segments.sort();
        Heap {
            dict_type: api.dict_type,
            heap_types,
            tracked: gc_items.iter().copied().collect(),
            readable: Readable::of_self(),
            segments,
            type_type: api.type_type,
            last_type: std::cell::Cell::new((0, false)),
        }
    }

    unsafe fn is_type(&self, tp: usize) -> bool {
        // Neighbouring survivors mostly share a type.
        let (last, answer) = self.last_type.get();
        if tp == last && tp != 0 {
            return answer;
        }
        let answer = self.check_type(tp);
        self.last_type.set((tp, answer));
        answer
    }

    unsafe fn check_type(&self, tp: usize) -> bool {
        if tp == 0 || !tp.is_multiple_of(8) {
            return false;
        }
        let mapped = self.heap_types.contains(&tp) || {
            let i = self.segments.partition_point(|s| s.0 <= tp);
            i > 0 && tp + cpython::TP_TRAVERSE + 8 <= self.segments[i - 1].1
        };
        if !mapped {
            return false;
        }
        let meta = type_of(tp);
        meta == self.type_type
            || self.heap_types.contains(&meta) && type_flags(meta) & TPFLAGS_TYPE_SUBCLASS != 0
    }
}

/// The object that lives in a recorded block, if any.
unsafe fn object_in(
    block: usize,
    b: &Block,
    tracer: bool,
    layout: &Layout,
    types: &Heap,
) -> Option<usize> {
    if b.stack == NO_STACK {
        return None;
    }
    if tracer {
        let op = block + b.object_offset as usize;
        return (b.state == LIVE && types.is_type(type_of(op))).then_some(op);
    }
    // Before 3.13 only the allocation is seen: the object sits after a header whose size
    // depends on its type, so each possible offset is checked against the type found there.
    for offset in [0usize, 16, 32] {
        if offset + 16 > b.size as usize {
            break;
        }
        let op = block + offset;
        let tp = type_of(op);
        if types.is_type(tp)
            && layout.preheader(type_flags(tp)) == offset
            && offset + basicsize(tp) <= b.size as usize
            && proven_object(op, tp, b.size as usize - offset, types)
        {
            return Some(op);
        }
    }
    None
}

/// A block can hold something that looks like an object: a dict's key table whose entries
/// hold a class sits where that class's instance would, with the right header size. Since a
/// survivor gets traversed, and traversing a fake object crashes the host, a container must
/// prove itself: tracked by the collector (exact membership), or untracked with an empty
/// GC link, a static type, and contents that fit its block.
unsafe fn proven_object(op: usize, tp: usize, room: usize, heap: &Heap) -> bool {
    const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
    const TP_ITEMSIZE: usize = 40;
    const OB_SIZE: usize = 16;
    let refcnt = read_usize(op) as isize;
    if !(1..1 << 40).contains(&refcnt) {
        return false;
    }
    let flags = type_flags(tp);
    if flags & TPFLAGS_HAVE_GC == 0 || heap.tracked.contains(&op) {
        return true;
    }
    if read_usize(op - cpython::GC_HEAD) != 0 || flags & TPFLAGS_HEAPTYPE != 0 {
        return false;
    }
    let itemsize = read_usize(tp + TP_ITEMSIZE);
    let items = read_usize(op + OB_SIZE) as isize;
    let fits = itemsize == 0
        || items >= 0 && basicsize(tp).saturating_add(items as usize * itemsize) <= room;
    fits && (flags & cpython::TPFLAGS_DICT_SUBCLASS == 0 || dict_keys_readable(op, heap))
}

/// A dict's key table: aligned, mapped, with a positive refcount.
unsafe fn dict_keys_readable(op: usize, heap: &Heap) -> bool {
    let keys = read_usize(op + cpython::DICT_KEYS);
    keys.is_multiple_of(8) && heap.readable.contains(keys, 32) && (read_usize(keys) as isize) > 0
}

unsafe fn basicsize(tp: usize) -> usize {
    *((tp + cpython::TP_BASICSIZE) as *const isize) as usize
}

/// Whether a live object counts as a survivor: interned strings and immortal objects belong to
/// the interpreter.
unsafe fn counts(op: usize, layout: &Layout, api: &Api) -> bool {
    let refcnt = read_usize(op + cpython::OB_REFCNT) as i64;
    if refcnt <= 0 || layout.immortal && (refcnt as i32) < 0 {
        return false;
    }
    type_of(op) != api.unicode_type || *((op + cpython::UNICODE_STATE) as *const u32) & 3 == 0
}

/// Visits what `op` refers to: `tp_traverse` for containers, a pointer scan of the fixed part
/// for other objects (code objects, ranges), which the collector does not traverse.
unsafe fn references_of(op: usize, walk: &mut Walk) {
    let tp = type_of(op);
    if type_flags(tp) & TPFLAGS_HAVE_GC != 0 {
        if !cpython::is_gc(op) {
            return; // a static type: its references live in static data, scanned apart
        }
        let traverse = read_usize(tp + cpython::TP_TRAVERSE);
        if traverse != 0 {
            let traverse: cpython::TraverseProc = std::mem::transmute(traverse);
            traverse(
                op as *mut PyObject,
                visit as VisitProc,
                walk as *mut Walk as *mut c_void,
            );
        }
        visit_untraversed(op, tp, walk);
        return;
    }
    let end = basicsize(tp).min(4096);
    let mut at = 16;
    while at + 8 <= end {
        let word = read_usize(op + at);
        if walk.index.contains(word) {
            visit(word as *mut PyObject, walk as *mut Walk as *mut c_void);
        }
        at += 8;
    }
}

/// References that `tp_traverse` leaves out because they cannot form a cycle, each found by a
/// false alarm. All but the string keys are visited only when the target is a survivor: the
/// index says so without reading through the word.
unsafe fn visit_untraversed(op: usize, tp: usize, walk: &mut Walk) {
    let flags = type_flags(tp);
    let held = |word: usize, walk: &mut Walk| {
        if walk.index.contains(word) {
            visit(word as *mut PyObject, walk as *mut Walk as *mut c_void);
        }
    };
    // 3.11+: a dict whose keys are all strings does not visit its keys.
    if walk.unicode_dicts && flags & cpython::TPFLAGS_DICT_SUBCLASS != 0 {
        visit_unicode_keys(op, walk);
    }
    // A class holds the dict of its subclasses (weak references only); `import ast` showed it.
    if flags & TPFLAGS_TYPE_SUBCLASS != 0 {
        held(read_usize(op + cpython::TP_SUBCLASSES), walk);
    }
    // A heap type holds its name, its `__slots__` tuple and its qualified name (`_json`'s
    // types on 3.13 and functools' `_HashedSeq` showed them); the three sit side by side.
    if flags & TPFLAGS_TYPE_SUBCLASS != 0 && type_flags(op) & cpython::TPFLAGS_HEAPTYPE != 0 {
        for at in [walk.ht_slots - 8, walk.ht_slots, walk.ht_slots + 8] {
            held(read_usize(op + at), walk);
        }
    }
    // A module holds its name apart from its dict (3.13's `PyModule_Create` showed it).
    if tp == walk.module_type {
        held(read_usize(op + cpython::MD_NAME), walk);
    }
    // 3.13: an object whose attributes still live inline owns its `__dict__` once one is
    // made, but `PyObject_VisitManagedDict` then visits only the inline values.
    let inline = cpython::TPFLAGS_MANAGED_DICT | cpython::TPFLAGS_INLINE_VALUES;
    if walk.inline_values
        && flags & inline == inline
        && *((op + basicsize(tp) + cpython::INLINE_VALUES_VALID) as *const u8) != 0
    {
        held(read_usize(op - cpython::MANAGED_DICT_BEFORE), walk);
    }
}

/// Counts pointers to survivors in every module's static data, and queues the untracked
/// containers that statics hold (such as the interpreter's table of loaded extensions), which
/// nothing else leads to.
/// A combined table whose keys are all strings holds a reference to each key that
/// `dict_traverse` does not visit (a string cannot form a cycle). Split tables share their
/// keys with the type, which holds them once.
unsafe fn visit_unicode_keys(op: usize, walk: &mut Walk) {
    let keys = read_usize(op + cpython::DICT_KEYS);
    if keys == 0 || read_usize(op + cpython::DICT_VALUES) != 0 {
        return;
    }
    if *((keys + cpython::DICT_KEYS_KIND) as *const u8) != cpython::DICT_KEYS_UNICODE {
        return;
    }
    let mut pos: isize = 0;
    let mut key: *mut PyObject = std::ptr::null_mut();
    let mut value: *mut PyObject = std::ptr::null_mut();
    while (walk.dict_next)(op as *mut PyObject, &mut pos, &mut key, &mut value) != 0 {
        visit(key, walk as *mut Walk as *mut c_void);
    }
}

unsafe fn scan_statics(modules: &[LoadedModule], types: &Heap, walk: &mut Walk) {
    let own = modules::find(modules, scan_statics as *const () as usize);
    for (i, m) in modules.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        for &(start, end) in &m.writable {
            let mut at = start.next_multiple_of(8);
            while at + 8 <= end {
                let word = read_usize(at);
                if let Some(s) = walk.index.get(word) {
                    walk.held.entry(s).or_default().statics += 1;
                } else if !walk.seen.contains(&word) && untracked_container(word, types) {
                    walk.seen.insert(word);
                    walk.queue.push(word);
                }
                at += 8;
            }
        }
    }
}

/// Whether a word from static data is a dict that the collector does not track, such as the
/// interpreter's table of loaded extensions. Only exact dicts that pass structural checks are
/// accepted, every read checked against the process's mappings first: most words are not
/// pointers, and traversing something that only looks like an object would crash the host.
unsafe fn untracked_container(word: usize, heap: &Heap) -> bool {
    const MA_USED: usize = 16;
    if !word.is_multiple_of(8)
        || word < cpython::GC_HEAD
        || !heap
            .readable
            .contains(word - cpython::GC_HEAD, cpython::GC_HEAD + 48)
    {
        return false;
    }
    if type_of(word) != heap.dict_type || read_usize(word - cpython::GC_HEAD) != 0 {
        return false;
    }
    let refcnt = read_usize(word) as isize;
    let used = read_usize(word + MA_USED) as isize;
    refcnt > 0 && (0..1 << 32).contains(&used) && dict_keys_readable(word, heap)
}

/// Each survivor's class. Cyclic garbage and direct leaks first; `refine` may reclassify
/// leaks before indirect leaks and garbage are derived from their holders.
unsafe fn classify(
    index: &Index,
    held: &FxHashMap<u32, Held>,
    edges: &[(u32, u32)],
    garbage: &[usize],
    refine: impl FnOnce(&mut [Class]),
) -> Vec<Class> {
    // Nothing found pointing at a survivor: none of its references is explained, a leak.
    let mut classes = vec![Class::Leaked; index.len()];
    for (&i, h) in held {
        let unexplained =
            read_usize(index.op(i as usize) + cpython::OB_REFCNT) as i64 - h.found - h.statics;
        classes[i as usize] = if unexplained > 0 {
            Class::Leaked
        } else if h.statics > 0 {
            Class::HeldOutside
        } else {
            Class::Reachable
        };
    }
    for &op in garbage {
        if let Some(i) = index.get(op) {
            classes[i as usize] = Class::Garbage;
        }
    }
    refine(&mut classes);
    // Held only by leaked objects: indirectly leaked; only by garbage: garbage. Repeat until
    // nothing changes (chains of containers).
    let mut holders: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
    for &(h, t) in edges {
        holders.entry(t).or_default().push(h);
    }
    loop {
        let mut changed = false;
        for (&t, hs) in &holders {
            if classes[t as usize] != Class::Reachable || held[&t].outside_holder {
                continue;
            }
            let class_of = |h: &u32| classes[*h as usize];
            let inherited = if hs.iter().all(|h| class_of(h).is_leak()) {
                Class::Indirect
            } else if hs.iter().all(|h| class_of(h) == Class::Garbage) {
                Class::Garbage
            } else {
                continue;
            };
            classes[t as usize] = inherited;
            changed = true;
        }
        if !changed {
            break;
        }
    }
    classes
}

/// `REFHUNT_DEBUG`: each leaked object's accounting, to triage a false alarm.
unsafe fn explain(index: &Index, classes: &[Class], held: &FxHashMap<u32, Held>, api: &Api) {
    for i in (0..index.len()).filter(|&i| classes[i] == Class::Leaked) {
        let op = index.op(i);
        let h = held.get(&(i as u32)).copied().unwrap_or_default();
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
            type_name(type_of(op)),
            read_usize(op + cpython::OB_REFCNT),
            h.found,
            h.statics,
            text
        );
    }
}

/// Leaks that no extension and no program code took part in creating are the interpreter's:
/// no native frame outside the runtime, and the innermost Python frame in the import system.
unsafe fn attribute_to_interpreter(
    classes: &mut [Class],
    stacks: &[u32],
    state: &State,
    modules: &[LoadedModule],
) {
    let runtime = runtime_ranges(modules);
    let mut verdicts: FxHashMap<u32, bool> = FxHashMap::default();
    for (class, &stack) in classes.iter_mut().zip(stacks) {
        if *class != Class::Leaked {
            continue;
        }
        let user_made = *verdicts.entry(stack).or_insert_with(|| {
            let native = has_extension_frame(state, stack, &runtime);
            // The innermost Python frame is the code that was running: the import system's own
            // frames are the interpreter's, whoever asked for the import.
            native
                || state.stacks.python(stack).next().is_some_and(|f| {
                    !str_attr(&state.api, f.code as *mut PyObject, c"co_filename")
                        .starts_with("<frozen ")
                })
        });
        if !user_made {
            *class = Class::Interpreter;
        }
    }
}

/// Address ranges of the runtime's modules: the interpreter, the C library, the loader.
fn runtime_ranges(modules: &[LoadedModule]) -> Vec<(usize, usize)> {
    modules
        .iter()
        .filter(|m| is_runtime(&m.path))
        .map(|m| (m.start, m.end))
        .collect()
}

/// Whether a native frame of the stack lies outside the runtime: an extension took part.
fn has_extension_frame(state: &State, stack: u32, runtime: &[(usize, usize)]) -> bool {
    state.stacks.native(stack).iter().any(|&pc| {
        !runtime
            .iter()
            .any(|&(lo, hi)| (lo..hi).contains(&(pc as usize)))
    })
}

fn is_runtime(path: &str) -> bool {
    refhunt_core::runtime::is_runtime_library(path)
        || std::fs::read_link("/proc/self/exe").is_ok_and(|exe| exe.as_os_str() == path)
}

/// Survivors grouped by (class, type, creation stack), with their count in each measured run.
/// Reachable groups that grew in every run get a path from a module, as the report lists them.
unsafe fn group(
    survivors: &Survivors,
    classes: &[Class],
    state: &State,
    gc_items: &[usize],
) -> (Vec<Group>, Vec<Stack>) {
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
    let mut by_stack: FxHashMap<(Class, usize, u32), (u64, u64, usize)> = FxHashMap::default();
    let key = |i: usize| {
        let op = survivors.index.op(i);
        ((classes[i], type_of(op), survivors.stacks[i]), op)
    };
    let mut i = 0;
    while i < classes.len() {
        let (k, op) = key(i);
        let (mut count, mut bytes) = (0, 0);
        while i < classes.len() && key(i).0 == k {
            count += 1;
            bytes += survivors.bytes[i] as u64;
            i += 1;
        }
        let t = by_stack.entry(k).or_insert((0, 0, op));
        t.0 += count;
        t.1 += bytes;
    }
    let mut groups: FxHashMap<(Class, usize, &[u64]), (u32, Tally)> = FxHashMap::default();
    let mut runs = 0;
    for ((class, tp, stack), (count, bytes, example)) in by_stack {
        let (_, g) = groups
            .entry((class, tp, state.stacks.site(stack)))
            .or_insert((
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
        let epoch = state.stacks.epoch(stack) as usize;
        if epoch > 0 {
            if g.runs.len() < epoch {
                g.runs.resize(epoch, 0);
            }
            g.runs[epoch - 1] += count;
            runs = runs.max(epoch);
        }
    }
    let wanted: FxHashSet<usize> = groups
        .iter()
        .filter(|((class, _, _), (_, t))| {
            *class == Class::Reachable && runs > 0 && t.runs.len() == runs && !t.runs.contains(&0)
        })
        .map(|(_, (_, t))| t.example)
        .take(MAX_PATHS)
        .collect();
    let mut paths = if wanted.is_empty() {
        FxHashMap::default()
    } else {
        paths::from_modules(&state.api, gc_items, &wanted)
    };
    let mut stack_ids: FxHashMap<u32, u32> = FxHashMap::default();
    let mut stacks = Vec::new();
    let mut out = Vec::new();
    for ((class, tp, _), (stack, tally)) in groups {
        let id = *stack_ids.entry(stack).or_insert_with(|| {
            stacks.push(resolve_stack(state, stack));
            (stacks.len() - 1) as u32
        });
        out.push(Group {
            class,
            type_name: type_name(tp),
            count: tally.count,
            bytes: tally.bytes,
            stack: id,
            runs: tally.runs,
            path: paths.remove(&tally.example),
        });
    }
    out.sort_by(|a, b| (a.class, b.bytes).cmp(&(b.class, a.bytes)));
    (out, stacks)
}

unsafe fn resolve_stack(state: &State, id: u32) -> Stack {
    Stack {
        native: state.stacks.native(id).to_vec(),
        python: state
            .stacks
            .python(id)
            .map(|f| python_frame(&state.api, f))
            .collect(),
    }
}

unsafe fn python_frame(api: &Api, f: PyFrameRef) -> PyFrame {
    let code = f.code as *mut PyObject;
    let line = (api.code_addr2line)(code, f.offset);
    PyFrame {
        file: str_attr(api, code, c"co_filename"),
        function: {
            let q = str_attr(api, code, c"co_qualname");
            if q.is_empty() {
                str_attr(api, code, c"co_name")
            } else {
                q
            }
        },
        line: line.max(0) as u32,
    }
}

unsafe fn str_attr(api: &Api, op: *mut PyObject, name: &CStr) -> String {
    let value = (api.getattr)(op, name.as_ptr());
    if value.is_null() {
        (api.err_clear)();
        return String::new();
    }
    let utf8 = (api.unicode_utf8)(value);
    let text = if utf8.is_null() {
        (api.err_clear)();
        String::new()
    } else {
        CStr::from_ptr(utf8).to_string_lossy().into_owned()
    };
    (api.decref)(value);
    text
}
