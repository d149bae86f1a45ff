//! Which recorded blocks hold survivors: live objects made in the window, told apart from
//! freed blocks and from words that only look like objects.
//!
//! Nothing is kept per survivor. A program can leave millions, and the live table already
//! holds each one's record at a place its address gives: asking it costs three lookups, and
//! walking it costs a pass over records that are already there.

use crate::cpython::{self, Api, Header, Layout, Object, Type};
use crate::hooks::State;
use crate::live::{Block, LiveTable, BUFFER, LIVE};
use crate::maps::Readable;
use crate::modules::LoadedModule;
use crate::windows::View;
use rustc_hash::FxHashSet;

/// The unsafe methods share one contract, the snapshot's: tracking is paused and the GIL is
/// held, so the live table is accurate for the process as it is now. A block it records is
/// allocated (readable for its size), and a block recorded `LIVE` holds a live object at its
/// `object_offset`; the types in `heap` are live. A survivor is a block of the window being
/// captured (`window`): those of enclosing windows are old to it.
pub struct Survivors<'a> {
    live: &'a LiveTable,
    window: &'a View,
    /// 3.13+: the block records where its object starts.
    tracer: bool,
    layout: &'a Layout,
    api: &'a Api,
    heap: &'a Heap,
}

impl<'a> Survivors<'a> {
    /// The survivors of `window`, the innermost window of `state`, among the objects `heap`
    /// was made from.
    pub fn of(state: &'a State, window: &'a View, heap: &'a Heap) -> Self {
        Survivors {
            live: &state.live,
            window,
            tracer: state.creations.seen(),
            layout: &state.layout,
            api: &state.api,
            heap,
        }
    }

    /// The record of the survivor at `word`, if there is one. Any word may be asked: nothing
    /// is read through it unless a live block holds it.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn get(&self, word: usize) -> Option<Block> {
        if !word.is_multiple_of(16) {
            return None; // objects are 16-byte aligned
        }
        // The object sits 0, 16 or 32 bytes into its block, after the headers of its type.
        [0, 16, 32].into_iter().find_map(|offset| {
            let block = word.checked_sub(offset)?;
            let b = self.live.get(block)?;
            // SAFETY: `block` is recorded, so allocated (the live table is accurate: caller's
            // contract); `object_in` reads only inside it, and returns a live object, whose
            // header `counts` reads.
            unsafe {
                (self.object_in(block, &b)? == word && counts(word, self.layout, self.api))
                    .then_some(b)
            }
        })
    }

    /// The size of the block that starts at `word` and holds no object, if one was made in
    /// the window: a MEM-domain buffer, or a native block.
    pub fn buffer(&self, word: usize) -> Option<usize> {
        let b = self.live.get(word)?;
        let native = b.is_native() && b.state == crate::live::ALLOCATED;
        (b.stack == BUFFER || native && self.window.holds(b.stack)).then_some(b.size as usize)
    }

    /// Whether `stack` was taken in the window being captured (or one inside it).
    pub fn in_window(&self, stack: u32) -> bool {
        self.window.holds(stack)
    }

    /// The window's measured run that `stack`, a survivor's, was taken in; 0 outside
    /// repetition.
    pub fn run(&self, stack: u32) -> u16 {
        self.window.run(stack)
    }

    /// The str survivor whose characters start at `word`: C code that keeps a `char *` to a
    /// str's text (a docstring set as `tp_doc` or `ml_doc`) keeps the str for it.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn str_of_text(&self, word: usize) -> Option<usize> {
        self.layout.str_headers().into_iter().find_map(|header| {
            let op = word.checked_sub(header)?;
            // SAFETY: `contains` only reads through blocks the accurate live table
            // records (caller's contract); once it says yes, `op` is a live object.
            let found = unsafe { self.contains(op) }.then(|| unsafe { Object::new(op) })?;
            (found.tp().addr() == self.heap.unicode_type
                && found.as_str()?.text_offset(self.layout) == Some(header))
            .then_some(op)
        })
    }

    /// The survivor at `word`, or the str whose text starts there.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn at_or_text(&self, word: usize) -> Option<usize> {
        // SAFETY: both take any word, given the caller's contract, which is theirs.
        unsafe {
            if self.contains(word) {
                Some(word)
            } else {
                self.str_of_text(word)
            }
        }
    }

    /// Whether `word` is a survivor.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn contains(&self, word: usize) -> bool {
        // SAFETY: `get` takes any word, given the caller's contract, which is its own.
        unsafe { self.get(word).is_some() }
    }

    /// Every survivor and its record, in address order.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn for_each(&self, mut f: impl FnMut(usize, Block)) {
        self.live.for_each(|block, b| {
            // SAFETY: `block` comes from the accurate live table (caller's contract), so it
            // is allocated; `object_in` reads only inside it and returns a live object, whose
            // header `counts` reads.
            if let Some(op) = unsafe { self.object_in(block, &b) } {
                // SAFETY: `object_in` returned `op`, so it is a live object.
                if unsafe { counts(op, self.layout, self.api) } {
                    f(op, b);
                }
            }
        });
    }

    /// # Safety
    /// `block` is allocated, and `b` its record in an accurate live table.
    unsafe fn object_in(&self, block: usize, b: &Block) -> Option<usize> {
        if !self.window.holds(b.stack) {
            return None;
        }
        // SAFETY: the caller's contract is `object_in`'s.
        unsafe { object_in(block, b, self.tracer, self.layout, self.heap) }
    }
}

const RECENT_TYPES: usize = 16;

/// What is known for certain about the heap at the snapshot, to tell real objects from words
/// that only look like them without reading unmapped memory. A type is static (inside a
/// module's writable segment) or a heap type the collector tracks.
pub struct Heap {
    dict_type: usize,
    heap_types: FxHashSet<usize>,
    tracked: FxHashSet<usize>,
    readable: Readable,
    segments: Vec<(usize, usize)>,
    type_type: usize,
    unicode_type: usize,
    /// Recent answers of `is_type`, by the type's address.
    recent_types: [std::cell::Cell<(usize, bool)>; RECENT_TYPES],
}

impl Heap {
    /// # Safety
    /// `gc_items` are live objects (`gc.get_objects()`'s, with the GIL held).
    pub unsafe fn new(api: &Api, modules: &[LoadedModule], gc_items: &[usize]) -> Heap {
        let heap_types = gc_items
            .iter()
            .copied()
            // SAFETY: each item is a live object (caller's contract).
            .filter(|&o| unsafe { Object::new(o) }.as_type().is_some())
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
            unicode_type: api.unicode_type,
            recent_types: Default::default(),
        }
    }

    /// Whether `[addr, addr + len)` was mapped readable when the snapshot began.
    pub fn readable(&self, addr: usize, len: usize) -> bool {
        self.readable.contains(addr, len)
    }

    /// Whether `tp`, any word, is a type object; nothing is read through it unless it is a
    /// tracked heap type or lies in a module's writable segment.
    ///
    /// # Safety
    /// The objects `new` was given are still live, and the modules still loaded.
    pub unsafe fn is_type(&self, tp: usize) -> bool {
        // Neighbouring survivors mostly share a few types (a list of tuples of ints and
        // strs: three).
        let recent = &self.recent_types[(tp >> 4) % RECENT_TYPES];
        let (last, answer) = recent.get();
        if tp == last && tp != 0 {
            return answer;
        }
        // SAFETY: the caller's contract is `check_type`'s.
        let answer = unsafe { self.check_type(tp) };
        recent.set((tp, answer));
        answer
    }

    /// # Safety
    /// As for [`Heap::is_type`].
    unsafe fn check_type(&self, tp: usize) -> bool {
        if tp == 0 || !tp.is_multiple_of(8) {
            return false;
        }
        let mapped = self.heap_types.contains(&tp) || {
            let i = self.segments.partition_point(|s| s.0 <= tp);
            // A word near the top of the address space would wrap past the segment's end.
            let end = tp.checked_add(cpython::TYPE_FIELDS_END);
            i > 0 && end.is_some_and(|end| end <= self.segments[i - 1].1)
        };
        if !mapped {
            return false;
        }
        // SAFETY: `tp` is a live heap type (tracked, so live: caller's contract), or the type
        // fields the agent reads lie in a loaded module's writable segment, so they are mapped.
        let meta = unsafe { Header::new(tp) }.type_addr();
        meta == self.type_type
            || self.heap_types.contains(&meta)
                // SAFETY: `meta` is a tracked heap type, live (caller's contract).
                && unsafe { Type::new(meta) }.is_metatype()
    }

    /// Whether a dict is a dead one that 3.14+ keeps on its freelist: its first word links the
    /// next member, another dict (see [`cpython::FREELIST_NEXT`]). Traversing one would follow
    /// its freed keys.
    ///
    /// # Safety
    /// `dict`'s header is readable; what was mapped readable when the snapshot began still is.
    unsafe fn on_dict_freelist(&self, dict: usize) -> bool {
        // SAFETY: the header is readable (caller's contract).
        let next = unsafe { Header::new(dict) }.freelist_next();
        next.is_multiple_of(8)
            && self.readable.contains(next, 16)
            // SAFETY: `next`'s header was just found mapped.
            && unsafe { Header::new(next) }.type_addr() == self.dict_type
    }

    /// Whether a word from static data is a dict that the collector does not track, such as the
    /// interpreter's table of loaded extensions. Only exact dicts that pass structural checks are
    /// accepted, every read checked against the process's mappings first: most words are not
    /// pointers, and traversing something that only looks like an object would crash the host.
    ///
    /// # Safety
    /// What was mapped readable when the snapshot began (`readable`) still is, and
    /// `dict_type` is the live `PyDict_Type`.
    pub unsafe fn untracked_dict(&self, word: usize) -> bool {
        // SAFETY: `dict_type` is the live `PyDict_Type` (caller's contract).
        let size = unsafe { Type::new(self.dict_type) }.basicsize();
        if !word.is_multiple_of(8)
            || word < cpython::GC_HEAD
            || !self
                .readable
                .contains(word - cpython::GC_HEAD, cpython::GC_HEAD + size)
        {
            return false;
        }
        // SAFETY: the GC head and the fixed part of a dict at `word` were just found mapped.
        let header = unsafe { Header::new(word) };
        // SAFETY: as above.
        if header.type_addr() != self.dict_type || !unsafe { cpython::gc_untracked(word) } {
            return false;
        }
        // SAFETY: `word` has the type of a dict and a dict's fixed part is mapped there.
        let Some(dict) = unsafe { Object::new(word) }.as_dict() else {
            return false;
        };
        header.refcnt() > 0
            // SAFETY: the header is mapped, and so is what was mapped when the snapshot began.
            && !unsafe { self.on_dict_freelist(word) }
            && (0..1 << 32).contains(&dict.used())
            && dict.keys_look_live(|at, len| self.readable(at, len))
    }
}

/// The object that lives in a recorded block, if any.
///
/// # Safety
/// `block` is allocated and `b` is its record in an accurate live table (a `LIVE` record's
/// object is live); `types` holds for the process as it is.
unsafe fn object_in(
    block: usize,
    b: &Block,
    tracer: bool,
    layout: &Layout,
    types: &Heap,
) -> Option<usize> {
    if b.stack >= BUFFER {
        return None;
    }
    if tracer {
        let op = block + b.object_offset as usize;
        // SAFETY: a `LIVE` record's object is live (caller's contract), so its header is
        // readable; `is_type` takes any word.
        return (b.state == LIVE && unsafe { types.is_type(Header::new(op).type_addr()) })
            .then_some(op);
    }
    // Before 3.13 only the allocation is seen: the object sits after a header whose size
    // depends on its type, so each possible offset is checked against the type found there.
    for offset in [0usize, 16, 32] {
        if offset + 16 > b.size as usize {
            break;
        }
        let op = block + offset;
        let room = b.size as usize - offset;
        // SAFETY: `op + 16` is inside the allocated block (checked above), so its header is
        // readable; `is_type` takes any word.
        let tp = unsafe { Header::new(op).type_addr() };
        // SAFETY: as above.
        if !unsafe { types.is_type(tp) } {
            continue;
        }
        // SAFETY: `is_type` said `tp` is a type, live while the snapshot lasts.
        let tp = unsafe { Type::new(tp) };
        if tp.preheader(layout) == offset
            // SAFETY: `fits` is given the room the block leaves `op`.
            && unsafe { fits(op, tp, room, layout, types) }
            // SAFETY: `tp` is `op`'s type word, the object fits its room, and its preheader
            // lies in the block.
            && unsafe { proven_object(op, tp, room, types) }
        {
            return Some(op);
        }
    }
    None
}

/// Whether the object at `op` fits the `room` its block leaves it. A compact str is smaller
/// than its type's `tp_basicsize` (up to 31 characters on 3.11) and must fill the same
/// 16-byte units as its block, which also proves it is one.
///
/// # Safety
/// `op` starts `room` allocated bytes.
unsafe fn fits(op: usize, tp: Type, room: usize, layout: &Layout, heap: &Heap) -> bool {
    if tp.addr() == heap.unicode_type {
        // SAFETY: `op` starts `room` allocated bytes (caller's contract).
        if let Some(size) = unsafe { cpython::compact_str_size_in(op, room, layout) } {
            return size.div_ceil(16) == room.div_ceil(16);
        }
    }
    tp.basicsize() <= room
}

/// A block can hold something that looks like an object: a dict's key table whose entries
/// hold a class sits where that class's instance would, with the right header size. Since a
/// survivor gets traversed, and traversing a fake object crashes the host, a container must
/// prove itself: tracked by the collector (exact membership), or untracked with an empty
/// GC link, a static type, and contents that fit its block.
///
/// # Safety
/// `tp` is a live type and `op`'s type word, and `op`'s object fits in `room`, the allocated
/// bytes from `op` (`fits`); its preheader (the GC link where `tp` has the GC flag) lies in
/// the same block, before `op`.
unsafe fn proven_object(op: usize, tp: Type, room: usize, heap: &Heap) -> bool {
    // SAFETY: `op`'s header and fixed part lie in the block, and its type word is the live
    // type `tp` (caller's contract).
    let object = unsafe { Object::new(op) };
    if !(1..1 << 40).contains(&object.refcnt()) {
        return false;
    }
    if !tp.has_gc() || heap.tracked.contains(&op) {
        return true;
    }
    // SAFETY: the GC link lies in the block, before `op` (caller's contract).
    if !unsafe { cpython::gc_untracked(op) } || tp.is_heap() {
        return false;
    }
    let fits = match object.var_size() {
        None => true,
        Some(items) => {
            items >= 0
                && tp
                    .basicsize()
                    .saturating_add(items as usize * tp.itemsize())
                    <= room
        }
    };
    fits && object
        .as_dict()
        .is_none_or(|dict| dict.keys_look_live(|at, len| heap.readable(at, len)))
}

/// Whether a live object counts as a survivor: interned strings and immortal objects belong to
/// the interpreter.
///
/// # Safety
/// `op` is a live object.
unsafe fn counts(op: usize, layout: &Layout, api: &Api) -> bool {
    // SAFETY: `op` is a live object (caller's contract).
    let op = unsafe { Object::new(op) };
    if op.refcnt() <= 0 || op.header().immortal(layout) {
        return false;
    }
    op.tp().addr() != api.unicode_type || op.as_str().is_none_or(|s| !s.interned())
}
