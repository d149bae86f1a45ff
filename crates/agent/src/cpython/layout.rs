//! The internal layouts of each CPython minor version, from its headers on x86_64 (default,
//! non-free-threaded builds), checked by the layout probe (`probe.rs`).

use super::*;

const MODULE_UP_TO_3_14: ModuleLayout = ModuleLayout {
    name: 48,
    state: 32,
    state_size: StateSize::InDef(24),
};

/// Words of the interpreter's static state that hold no reference: in `[start, end)`, those
/// at `at` bytes into each run of `stride` bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Borrowed {
    pub start: usize,
    pub end: usize,
    pub stride: usize,
    pub at: usize,
}

impl Borrowed {
    pub fn holds(&self, addr: usize) -> bool {
        (self.start..self.end).contains(&addr) && (addr - self.start) % self.stride == self.at
    }
}

/// Internal layouts of one CPython minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u32,
    /// Offset in `PyThreadState` of the current frame, or of the `_PyCFrame*` that holds it.
    pub tstate_frame: usize,
    /// 3.11-3.12: offset of `current_frame` in `_PyCFrame`.
    pub cframe_current: Option<usize>,
    pub frame_code: usize,
    pub frame_previous: usize,
    /// 3.11+: `prev_instr`/`instr_ptr`; 3.9-3.10: `f_lasti` (an `int`).
    pub frame_instr: usize,
    /// 3.11+: `owner`, to skip frames that the C stack owns.
    pub frame_owner: Option<usize>,
    /// 3.10 counts `f_lasti` in code units; 3.9 in bytes.
    pub lasti_in_units: bool,
    /// Flags whose types carry two extra pointers before the GC head.
    pub preheader_flags: u64,
    /// Has `PyRefTracer_SetTracer` (3.13+).
    pub reftracer: bool,
    /// Immortal objects exist (3.12+).
    pub immortal: bool,
    /// Offset of `ht_slots` in `PyHeapTypeObject`, between `ht_name` and `ht_qualname`.
    pub ht_slots: usize,
    /// `sizeof(PyASCIIObject)` and `sizeof(PyCompactUnicodeObject)`: a compact str is one of
    /// these headers and its characters, often fewer bytes than `tp_basicsize` (the legacy
    /// `PyUnicodeObject`).
    pub ascii_size: usize,
    pub compact_size: usize,
    /// 3.12+: `PyCodeObject._co_cached`, a C struct of four objects made on demand
    /// (`co_code`, `co_varnames`, `co_cellvars`, `co_freevars`) that no traversal visits.
    pub code_cached: Option<usize>,
    /// `PyCoroObject.cr_origin` (3.11+: `cr_origin_or_finalizer`): where a coroutine made
    /// while origin tracking is on keeps its origin, which its traversal leaves out.
    pub coro_origin: usize,
    /// `[start, end)` offsets in `PyInterpreterState` of the freelists (3.11+, whose main
    /// interpreter is static data). Their arrays keep stale pointers past their count, to
    /// memory that now holds other objects: not references.
    pub freelists: Option<(usize, usize)>,
    /// `[start, end)` offsets in `PyInterpreterState` of the type attribute cache (3.11+), an
    /// array of entries of `TYPE_CACHE_ENTRY` bytes: each holds its name, but its value is
    /// borrowed and outlives what it named, so a dead value's memory, reused by a new
    /// object, looks held by the interpreter's static data.
    pub type_cache: Option<(usize, usize)>,
    /// 3.11+: `_PyInterpreterFrame.localsplus` and `PyCodeObject.co_nlocalsplus`: a running
    /// frame's locals, which no traversal visits (the frame is not an object).
    pub frame_locals: Option<(usize, usize)>,
    /// 3.11+: `_PyInterpreterFrame.frame_obj`, the frame object once one was made (by a
    /// traceback, say), which a running frame holds where no traversal looks.
    pub frame_obj: Option<usize>,
    /// 3.9-3.10: `PyFrameObject.f_gen`, the generator that owns the frame, if one does.
    pub frame_gen: Option<usize>,
    /// 3.10: `bytes.characters` and `unicode.latin1` in `PyInterpreterState`, 256 references
    /// each to the single-character bytes and strs made so far. 3.10 allocates the state
    /// on the heap, where no scan of static data reads them (3.9 keeps them static, 3.11+
    /// the state itself).
    pub interp_caches: Option<[usize; 2]>,
    /// 3.9-3.10: `PyDictKeysObject.dk_lookup`, the keys' lookup function: only the generic
    /// one (`Api::lookdict`) goes with a traversal that visits the keys. The struct is not in
    /// the installed headers; `Api::find_lookdict` checks the offset where it runs.
    pub dict_lookup: Option<usize>,
    /// 3.14+: a frame's code and locals are tagged `_PyStackRef`s, not plain pointers.
    pub stackrefs: bool,
    /// `PyTupleObject.ob_item` (3.14 caches the hash before it).
    pub tuple_items: usize,
    pub module: ModuleLayout,
    /// The object fields of `PyCodeObject`, which no traversal visits; its other words are
    /// ints and C pointers, one of which (3.15's `_co_unique_id`) held a freed object's
    /// address.
    pub code_objects: &'static [usize],
    /// `co_filename`, `co_name` and (3.11+) `co_qualname`: read as fields, since a lookup
    /// by name replaces an entry of the type attribute cache, which 3.12+ keeps a reference
    /// to its name in, and can free a str in the middle of a snapshot.
    pub code_names: CodeNames,
    /// 3.13+: where the runtime's table of offsets keeps those checked at start.
    pub debug_offsets: Option<debug_offsets::Positions>,
}

/// `co_code`, `co_consts`, `co_names`, `co_varnames`, `co_freevars`, `co_cellvars`,
/// `co_filename`, `co_name`, `co_lnotab` (3.10: `co_linetable`).
const CODE_OBJECTS_UP_TO_3_10: &[usize] = &[48, 56, 64, 72, 80, 88, 104, 112, 120];
/// `co_consts`, `co_names`, `co_exceptiontable`, `co_localsplusnames`, `co_localspluskinds`,
/// `co_filename`, `co_name`, `co_qualname`, `co_linetable`.
const CODE_OBJECTS: &[usize] = &[24, 32, 40, 96, 104, 112, 120, 128, 136];

/// Where a code object keeps its names (see [`Layout::code_names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeNames {
    pub filename: usize,
    pub name: usize,
    pub qualname: Option<usize>,
}

const CODE_NAMES_UP_TO_3_10: CodeNames = CodeNames {
    filename: 104,
    name: 112,
    qualname: None,
};
const CODE_NAMES: CodeNames = CodeNames {
    filename: 112,
    name: 120,
    qualname: Some(128),
};

/// Where a `PyModuleObject` keeps its name and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleLayout {
    pub name: usize,
    pub state: usize,
    pub state_size: StateSize,
}

/// Where a module's state size is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSize {
    /// Up to 3.14: `m_size` of the `PyModuleDef` at this offset (`md_def`).
    InDef(usize),
    /// 3.15+: `md_state_size`, in the module itself.
    InModule(usize),
}

impl Layout {
    /// The layout of the running interpreter, whose `sys.hexversion` is given, or why it is
    /// not supported.
    ///
    /// # Safety
    /// Runs inside a CPython process.
    pub unsafe fn for_interpreter(hexversion: u32) -> Result<Layout, String> {
        let (major, minor) = (hexversion >> 24, (hexversion >> 16) & 0xff);
        let layout = Layout::for_version(minor)
            .filter(|_| major == 3)
            .ok_or_else(|| format!("CPython {major}.{minor} is not supported (3.9 to 3.15 are)"))?;
        // Only free-threaded builds export it (`Py_GIL_DISABLED`, refcount.h): their objects
        // have two refcounts and no GIL orders the hooks.
        // SAFETY: only whether the symbol exists is used, never its address.
        if unsafe { sym(c"_Py_MergeZeroLocalRefcount") }.is_some() {
            return Err(format!(
                "free-threaded CPython (python3.{minor}t) is not supported; use the default \
                 build, python3.{minor}"
            ));
        }
        Ok(layout)
    }

    pub fn for_version(minor: u32) -> Option<Layout> {
        let old = |minor, lasti, units| Layout {
            minor,
            tstate_frame: 24,
            cframe_current: None,
            frame_code: 32,
            frame_previous: 24,
            frame_instr: lasti,
            frame_owner: None,
            lasti_in_units: units,
            preheader_flags: 0,
            reftracer: false,
            immortal: false,
            ht_slots: if minor == 9 { 848 } else { 856 },
            ascii_size: 48,
            compact_size: 72,
            code_cached: None,
            coro_origin: if minor == 9 { 96 } else { 88 },
            freelists: None,
            type_cache: None,
            frame_locals: None,
            frame_obj: None,
            frame_gen: Some(if minor == 9 { 96 } else { 88 }),
            interp_caches: (minor == 10).then_some([5616, 7672]),
            dict_lookup: Some(16),
            stackrefs: false,
            tuple_items: 24,
            module: MODULE_UP_TO_3_14,
            code_objects: CODE_OBJECTS_UP_TO_3_10,
            code_names: CODE_NAMES_UP_TO_3_10,
            debug_offsets: None,
        };
        Some(match minor {
            9 => old(9, 104, false),
            10 => old(10, 96, true),
            11 => Layout {
                minor,
                tstate_frame: 56,
                cframe_current: Some(8),
                frame_code: 32,
                frame_previous: 48,
                frame_instr: 56,
                frame_owner: Some(69),
                lasti_in_units: true,
                preheader_flags: TPFLAGS_MANAGED_DICT,
                reftracer: false,
                immortal: false,
                ht_slots: 856,
                ascii_size: 48,
                compact_size: 72,
                code_cached: None,
                coro_origin: 64,
                freelists: Some((3608, 7128)),
                type_cache: Some((9056, 107360)),
                frame_locals: Some((72, 76)),
                frame_obj: Some(40),
                frame_gen: None,
                interp_caches: None,
                dict_lookup: None,
                stackrefs: false,
                tuple_items: 24,
                module: MODULE_UP_TO_3_14,
                code_objects: CODE_OBJECTS,
                code_names: CODE_NAMES,
                debug_offsets: None,
            },
            12 | 13 => Layout {
                minor,
                tstate_frame: if minor == 12 { 56 } else { 72 },
                cframe_current: if minor == 12 { Some(0) } else { None },
                frame_code: 0,
                frame_previous: 8,
                frame_instr: 56,
                frame_owner: Some(70),
                lasti_in_units: true,
                preheader_flags: TPFLAGS_MANAGED_DICT | TPFLAGS_MANAGED_WEAKREF,
                reftracer: minor >= 13,
                immortal: true,
                ht_slots: 864,
                ascii_size: 40,
                compact_size: 56,
                code_cached: Some(if minor == 12 { 152 } else { 160 }),
                coro_origin: 56,
                freelists: Some(if minor == 12 {
                    (267408, 273400)
                } else {
                    (10952, 14488)
                }),
                type_cache: Some(if minor == 12 {
                    (275392, 373696)
                } else {
                    (84656, 182960)
                }),
                frame_locals: Some((72, 72)),
                frame_obj: Some(48),
                frame_gen: None,
                interp_caches: None,
                dict_lookup: None,
                stackrefs: false,
                tuple_items: 24,
                module: MODULE_UP_TO_3_14,
                code_objects: CODE_OBJECTS,
                code_names: CODE_NAMES,
                debug_offsets: (minor == 13).then_some(debug_offsets::V3_13),
            },
            14 | 15 => Layout {
                minor,
                tstate_frame: 72,
                cframe_current: None,
                frame_code: 0,
                frame_previous: 8,
                frame_instr: 56,
                frame_owner: Some(74),
                lasti_in_units: true,
                preheader_flags: TPFLAGS_MANAGED_DICT | TPFLAGS_MANAGED_WEAKREF,
                reftracer: true,
                immortal: true,
                ht_slots: if minor == 14 { 864 } else { 872 },
                ascii_size: 40,
                compact_size: 56,
                code_cached: Some(160),
                coro_origin: 56,
                freelists: Some(if minor == 14 {
                    (11120, 11744)
                } else {
                    (11096, 11752)
                }),
                type_cache: Some(if minor == 14 {
                    (81928, 180232)
                } else {
                    (81952, 180256)
                }),
                frame_locals: Some((80, 72)),
                frame_obj: Some(48),
                frame_gen: None,
                interp_caches: None,
                dict_lookup: None,
                stackrefs: true,
                tuple_items: 32,
                module: if minor == 14 {
                    MODULE_UP_TO_3_14
                } else {
                    ModuleLayout {
                        name: 40,
                        state: 24,
                        state_size: StateSize::InModule(56),
                    }
                },
                code_objects: CODE_OBJECTS,
                code_names: CODE_NAMES,
                debug_offsets: Some(if minor == 14 {
                    debug_offsets::V3_14
                } else {
                    debug_offsets::V3_15
                }),
            },
            _ => return None,
        })
    }

    /// `[start, end)` of the freelists of the interpreter state at `interp`, or an empty range.
    pub fn freelists_at(&self, interp: usize) -> (usize, usize) {
        self.freelists
            .map_or((0, 0), |(start, end)| (interp + start, interp + end))
    }

    /// The borrowed words of the interpreter state at `interp`, which hold no reference:
    /// its freelists' (stale past their counts), and its type cache's values.
    pub fn borrowed_at(&self, interp: usize) -> [Borrowed; 2] {
        let (start, end) = self.freelists_at(interp);
        let cache = self
            .type_cache
            .map_or((0, 0), |(start, end)| (interp + start, interp + end));
        [
            Borrowed {
                start,
                end,
                stride: 8,
                at: 0,
            },
            Borrowed {
                start: cache.0,
                end: cache.1,
                stride: TYPE_CACHE_ENTRY,
                at: TYPE_CACHE_VALUE,
            },
        ]
    }

    /// The sizes of a compact str's two possible headers (ASCII and compact), after which its
    /// characters start.
    pub fn str_headers(&self) -> [usize; 2] {
        [self.ascii_size, self.compact_size]
    }

    /// 3.13+: an object may keep its attributes inline and still own a `__dict__`.
    pub fn inline_values(&self) -> bool {
        self.minor >= 13
    }

    /// The object a frame's field holds: a plain pointer, or (3.14+) a `_PyStackRef` whose
    /// tag bits are masked off; 0 for none or a tagged int.
    pub(super) fn frame_object(&self, word: usize) -> usize {
        if !self.stackrefs {
            word
        } else if word & STACKREF_TAG_BITS == STACKREF_TAG_BITS {
            0
        } else {
            word & !STACKREF_TAG_BITS
        }
    }

    /// Bytes between the start of an object's memory block and the object itself.
    pub(super) fn preheader(&self, tp_flags: u64) -> usize {
        let gc = if tp_flags & TPFLAGS_HAVE_GC != 0 {
            GC_HEAD
        } else {
            0
        };
        let managed = if tp_flags & self.preheader_flags != 0 {
            16
        } else {
            0
        };
        gc + managed
    }
}
