//! Which recorded blocks hold survivors: live objects made in the window, told apart from
//! freed blocks and from words that only look like objects.
//!
//! Nothing is kept per survivor. A program can leave millions, and the live table already
//! holds each one's record at a place its address gives: asking it costs three lookups, and
//! walking it costs a pass over records that are already there.

use crate::cpython::{
    self, read_usize, type_flags, type_of, Api, Layout, TPFLAGS_HAVE_GC, TPFLAGS_TYPE_SUBCLASS,
};
use crate::live::{Block, LiveTable, BUFFER, LIVE};
use crate::maps::Readable;
use crate::modules::LoadedModule;
use rustc_hash::FxHashSet;

/// The unsafe methods share one contract, the snapshot's: tracking is paused and the GIL is
/// held, so the live table is accurate for the process as it is now. A block it records is
/// allocated (readable for its size), and a block recorded `LIVE` holds a live object at its
/// `object_offset`; the types in `heap` are live.
pub struct Survivors<'a> {
    live: &'a LiveTable,
    /// 3.13+: the block records where its object starts.
    tracer: bool,
    layout: &'a Layout,
    api: &'a Api,
    heap: &'a Heap,
}

impl<'a> Survivors<'a> {
    pub fn new(
        live: &'a LiveTable,
        tracer: bool,
        layout: &'a Layout,
        api: &'a Api,
        heap: &'a Heap,
    ) -> Self {
        Survivors {
            live,
            tracer,
            layout,
            api,
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
        (b.stack == BUFFER || (b.is_native() && b.state == crate::live::ALLOCATED))
            .then_some(b.size as usize)
    }

    /// The str survivor whose characters start at `word`: C code that keeps a `char *` to a
    /// str's text (a docstring set as `tp_doc` or `ml_doc`) keeps the str for it.
    ///
    /// # Safety
    /// The snapshot's contract (see [`Survivors`]): the live table is accurate.
    pub unsafe fn str_of_text(&self, word: usize) -> Option<usize> {
        [self.layout.ascii_size, self.layout.compact_size]
            .into_iter()
            .find_map(|header| {
                let op = word.checked_sub(header)?;
                // SAFETY: `contains` only reads through blocks the accurate live table
                // records (caller's contract); once it says yes, `op` is a live object, whose
                // type and, for a str, `state` are readable.
                unsafe {
                    (self.contains(op)
                        && type_of(op) == self.heap.unicode_type
                        && cpython::str_text_offset(op, self.layout) == Some(header))
                    .then_some(op)
                }
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
        // SAFETY: the caller's contract is `object_in`'s.
        unsafe { object_in(block, b, self.tracer, self.layout, self.heap) }
    }
}

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
    last_type: std::cell::Cell<(usize, bool)>,
}

impl Heap {
    /// # Safety
    /// `gc_items` are live objects (`gc.get_objects()`'s, with the GIL held).
    pub unsafe fn new(api: &Api, modules: &[LoadedModule], gc_items: &[usize]) -> Heap {
        let heap_types = gc_items
            .iter()
            .copied()
            // SAFETY: each item is a live object (caller's contract), so its type is live.
            .filter(|&o| unsafe { type_flags(type_of(o)) } & TPFLAGS_TYPE_SUBCLASS != 0)
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
            last_type: std::cell::Cell::new((0, false)),
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
        // Neighbouring survivors mostly share a type.
        let (last, answer) = self.last_type.get();
        if tp == last && tp != 0 {
            return answer;
        }
        // SAFETY: the caller's contract is `check_type`'s.
        let answer = unsafe { self.check_type(tp) };
        self.last_type.set((tp, answer));
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
            i > 0 && tp + cpython::TP_TRAVERSE + 8 <= self.segments[i - 1].1
        };
        if !mapped {
            return false;
        }
        // SAFETY: `tp` is a live heap type (tracked, so live: caller's contract), or its
        // header up to `tp_traverse` lies in a loaded module's writable segment, so it is
        // mapped; `meta` is read through only when it is a tracked heap type.
        unsafe {
            let meta = type_of(tp);
            meta == self.type_type
                || self.heap_types.contains(&meta) && type_flags(meta) & TPFLAGS_TYPE_SUBCLASS != 0
        }
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
        const MA_USED: usize = 16;
        if !word.is_multiple_of(8)
            || word < cpython::GC_HEAD
            || !self
                .readable
                .contains(word - cpython::GC_HEAD, cpython::GC_HEAD + 48)
        {
            return false;
        }
        // SAFETY: `[word - GC_HEAD, word + 48)` was just checked mapped readable, and every read
        // here lies in it; `dict_keys_readable` checks its own reads against the mappings.
        unsafe {
            if type_of(word) != self.dict_type || read_usize(word - cpython::GC_HEAD) != 0 {
                return false;
            }
            let refcnt = read_usize(word) as isize;
            let used = read_usize(word + MA_USED) as isize;
            refcnt > 0 && (0..1 << 32).contains(&used) && dict_keys_readable(word, self)
        }
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
        return (b.state == LIVE && unsafe { types.is_type(type_of(op)) }).then_some(op);
    }
    // Before 3.13 only the allocation is seen: the object sits after a header whose size
    // depends on its type, so each possible offset is checked against the type found there.
    for offset in [0usize, 16, 32] {
        if offset + 16 > b.size as usize {
            break;
        }
        let op = block + offset;
        // SAFETY: `op + 16` is inside the allocated block (checked above), so its first two
        // words are readable; `tp` is read through only once `is_type` says it is a type;
        // `fits` and `proven_object` are given the room the block leaves `op`.
        unsafe {
            let tp = type_of(op);
            if types.is_type(tp)
                && layout.preheader(type_flags(tp)) == offset
                && fits(op, tp, b.size as usize - offset, layout, types)
                && proven_object(op, tp, b.size as usize - offset, types)
            {
                return Some(op);
            }
        }
    }
    None
}

/// Whether the object at `op` fits the `room` its block leaves it. A compact str is smaller
/// than its type's `tp_basicsize` (up to 31 characters on 3.11) and must fill the same
/// 16-byte units as its block, which also proves it is one.
///
/// # Safety
/// `tp` is a live type; `op` starts `room` allocated bytes, and is laid out as a str's
/// header where `tp` is `str`.
unsafe fn fits(op: usize, tp: usize, room: usize, layout: &Layout, heap: &Heap) -> bool {
    if tp == heap.unicode_type {
        // SAFETY: `op` has a str's type, so the caller guarantees its header readable.
        if let Some(size) = unsafe { cpython::compact_str_size(op, layout) } {
            return size.div_ceil(16) == room.div_ceil(16);
        }
    }
    // SAFETY: `tp` is a live type (caller's contract).
    unsafe { basicsize(tp) <= room }
}

/// A block can hold something that looks like an object: a dict's key table whose entries
/// hold a class sits where that class's instance would, with the right header size. Since a
/// survivor gets traversed, and traversing a fake object crashes the host, a container must
/// prove itself: tracked by the collector (exact membership), or untracked with an empty
/// GC link, a static type, and contents that fit its block.
///
/// # Safety
/// `tp` is a live type whose `tp_basicsize` fits in `room`, the allocated bytes from `op`;
/// its preheader (the GC link where `tp` has the GC flag) lies in the same block, before `op`.
unsafe fn proven_object(op: usize, tp: usize, room: usize, heap: &Heap) -> bool {
    // SAFETY: the whole body relies on the contract above: each read is in `op`'s fixed part
    // or its GC link, inside the block, or a field of the live type `tp`; a dict's keys are
    // read only after `dict_keys_readable` checks them against the mappings.
    unsafe {
        let refcnt = read_usize(op) as isize;
        if !(1..1 << 40).contains(&refcnt) {
            return false;
        }
        let flags = type_flags(tp);
        if flags & TPFLAGS_HAVE_GC == 0 || heap.tracked.contains(&op) {
            return true;
        }
        if read_usize(op - cpython::GC_HEAD) != 0 || flags & cpython::TPFLAGS_HEAPTYPE != 0 {
            return false;
        }
        let itemsize = read_usize(tp + cpython::TP_ITEMSIZE);
        let items = read_usize(op + cpython::OB_SIZE) as isize;
        let fits = itemsize == 0
            || items >= 0 && basicsize(tp).saturating_add(items as usize * itemsize) <= room;
        fits && (flags & cpython::TPFLAGS_DICT_SUBCLASS == 0 || dict_keys_readable(op, heap))
    }
}

/// A dict's key table: aligned, mapped, with a positive refcount.
///
/// # Safety
/// `op`'s fixed part, up to `ma_keys`, is readable (a dict's or a dict subclass's).
pub unsafe fn dict_keys_readable(op: usize, heap: &Heap) -> bool {
    // SAFETY: `ma_keys` is in the fixed part the caller guarantees readable.
    let keys = unsafe { read_usize(op + cpython::DICT_KEYS) };
    // SAFETY: `keys` is read only once the mappings say its first 32 bytes are readable.
    keys.is_multiple_of(8)
        && heap.readable.contains(keys, 32)
        && (unsafe { read_usize(keys) } as isize) > 0
}

/// `tp->tp_basicsize`.
///
/// # Safety
/// `tp` is a readable type object.
pub unsafe fn basicsize(tp: usize) -> usize {
    // SAFETY: `tp_basicsize` is a field of the type the caller guarantees readable.
    unsafe { *((tp + cpython::TP_BASICSIZE) as *const isize) as usize }
}

/// Whether a live object counts as a survivor: interned strings and immortal objects belong to
/// the interpreter.
///
/// # Safety
/// `op` is a live object.
unsafe fn counts(op: usize, layout: &Layout, api: &Api) -> bool {
    // SAFETY: `op` is a live object (caller's contract), so its header is readable.
    let refcnt = unsafe { read_usize(op + cpython::OB_REFCNT) } as i64;
    if refcnt <= 0 || layout.immortal && (refcnt as i32) < 0 {
        return false;
    }
    // SAFETY: `op` is live, so its type is readable; its `state` is read only once its type
    // says `op` is a str, whose header holds it.
    unsafe {
        type_of(op) != api.unicode_type || *((op + cpython::UNICODE_STATE) as *const u32) & 3 == 0
    }
}
