//! Everything that depends on the CPython version: the functions the agent calls, found with
//! `dlsym` at start, and the internal layouts it reads, chosen by `sys.hexversion`.
//!
//! The layouts come from each version's headers on x86_64 (default, non-free-threaded builds).
//! `layout_probe.c` (beside Cargo.toml) prints the same numbers from the installed headers, and
//! the test below compares them with [`Layout::for_version`], so a table can't drift unseen.

// dlsym results are typed by the Api field they are stored in.
#![allow(clippy::missing_transmute_annotations)]

use std::ffi::{c_char, c_int, c_void, CStr};

pub type PyObject = c_void;
pub type VisitProc = unsafe extern "C" fn(*mut PyObject, *mut c_void) -> c_int;
pub type TraverseProc = unsafe extern "C" fn(*mut PyObject, VisitProc, *mut c_void) -> c_int;
pub type RefTracer = unsafe extern "C" fn(*mut PyObject, c_int, *mut c_void) -> c_int;

pub const REFTRACER_CREATE: c_int = 0;

/// `PyMemAllocatorEx`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Allocator {
    pub ctx: *mut c_void,
    pub malloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    pub calloc: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    pub realloc: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void, *mut c_void),
}

pub const DOMAIN_RAW: c_int = 0;
pub const DOMAIN_MEM: c_int = 1;
pub const DOMAIN_OBJ: c_int = 2;

// Type flags (Include/object.h).
pub const TPFLAGS_MANAGED_WEAKREF: u64 = 1 << 3;
pub const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
/// 3.13+: instance attributes live inline, after `tp_basicsize`, in a `PyDictValues`.
pub const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
/// `PyDictValues.valid` (3.13): whether the inline values are still the attributes.
pub const INLINE_VALUES_VALID: usize = 3;
/// The managed `__dict__` pointer sits this far before the object (3.12+).
pub const MANAGED_DICT_BEFORE: usize = 24;
pub const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
pub const TPFLAGS_HAVE_GC: u64 = 1 << 14;
pub const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
pub const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;

// PyDictObject and PyDictKeysObject (3.11+, default builds).
pub const DICT_KEYS: usize = 32;
pub const DICT_VALUES: usize = 40;
pub const DICT_KEYS_KIND: usize = 10;
pub const DICT_KEYS_UNICODE: u8 = 1;
pub const DICT_KEYS_LOG2_INDEX_BYTES: usize = 9;
pub const DICT_KEYS_NENTRIES: usize = 24;
/// `dk_indices`; the entries follow them, a key and a value each in a table whose keys are
/// all strings (`PyDictUnicodeEntry`).
pub const DICT_KEYS_INDICES: usize = 32;
pub const DICT_UNICODE_ENTRY: usize = 16;
/// `PyHeapTypeObject.ht_cached_keys` after `ht_slots` and `ht_qualname`: the keys its
/// instances' split dicts share, which hold a reference to each.
pub const HT_CACHED_KEYS_AFTER_SLOTS: usize = 16;

/// Calls `f` with each key of a dict whose combined table holds only string keys (3.11+),
/// which `dict_traverse` does not visit since a string cannot form a cycle. A split table's
/// keys are its type's, held once there (see [`cached_keys`]).
///
/// # Safety
/// `op` is a live dict; the GIL is held; `dict_next` is `PyDict_Next` (`Api::dict_next`).
pub unsafe fn unicode_keys(op: usize, dict_next: DictNext, mut f: impl FnMut(usize)) {
    let keys = read_usize(op + DICT_KEYS);
    if keys == 0 || read_usize(op + DICT_VALUES) != 0 {
        return;
    }
    if *((keys + DICT_KEYS_KIND) as *const u8) != DICT_KEYS_UNICODE {
        return;
    }
    let mut pos: isize = 0;
    let mut key: *mut PyObject = std::ptr::null_mut();
    let mut value: *mut PyObject = std::ptr::null_mut();
    while dict_next(op as *mut PyObject, &mut pos, &mut key, &mut value) != 0 {
        f(key as usize);
    }
}

/// Calls the type's `tp_traverse` on `op` with `visit` and `arg`, if it has one.
///
/// # Safety
/// `op` is a live container; `visit` accepts `arg`; the GIL is held.
pub unsafe fn traverse(op: usize, visit: VisitProc, arg: *mut c_void) {
    let traverse = read_usize(type_of(op) + TP_TRAVERSE);
    if traverse != 0 {
        let traverse: TraverseProc = std::mem::transmute(traverse);
        traverse(op as *mut PyObject, visit, arg);
    }
}

/// `PyDict_Next`.
pub type DictNext = unsafe extern "C" fn(
    *mut PyObject,
    *mut isize,
    *mut *mut PyObject,
    *mut *mut PyObject,
) -> c_int;

/// The keys of a heap type's shared instance keys (3.11+), which no traversal visits.
///
/// # Safety
/// `tp` is a live heap type; `layout` is its interpreter's, 3.11 or newer.
pub unsafe fn cached_keys(tp: usize, layout: &Layout) -> impl Iterator<Item = usize> {
    let keys = read_usize(tp + layout.ht_slots + HT_CACHED_KEYS_AFTER_SLOTS);
    // None, or a general table (not a string-keyed split one): no entries to read.
    let (n, entries) = if keys == 0 || *((keys + DICT_KEYS_KIND) as *const u8) == 0 {
        (0, 0)
    } else {
        let indices = 1usize << *((keys + DICT_KEYS_LOG2_INDEX_BYTES) as *const u8);
        (
            read_usize(keys + DICT_KEYS_NENTRIES),
            keys + DICT_KEYS_INDICES + indices,
        )
    };
    (0..n)
        .map(move |i| read_usize(entries + i * DICT_UNICODE_ENTRY))
        .filter(|&key| key != 0)
}

// `_PyInterpreterFrame.owner` (3.11+).
/// A frame that its thread runs, neither a generator's nor a frame object's (whose
/// traversals visit their locals).
pub const FRAME_OWNED_BY_THREAD: u8 = 0;
/// 3.12+: owners from this one on are shim frames, pushed by C code or by the interpreter,
/// with no Python code of their own (`FRAME_OWNED_BY_CSTACK` up to 3.13;
/// `FRAME_OWNED_BY_INTERPRETER`, then `FRAME_OWNED_BY_CSTACK` in 3.14).
pub const FRAME_FIRST_SHIM_OWNER: u8 = 3;
/// 3.14+: the tag bits of a `_PyStackRef` (default builds): bit 0 says the reference is not
/// counted, both bits set a tagged int, which is no object.
const STACKREF_TAG_BITS: usize = 3;
/// `_PyCoCached` (3.12+): `_co_code`, `_co_varnames`, `_co_cellvars`, `_co_freevars`.
pub const CODE_CACHED_OBJECTS: usize = 4;

// PyTypeObject and PyObject offsets, the same on every supported version.
pub const OB_REFCNT: usize = 0;
pub const OB_TYPE: usize = 8;
/// `PyVarObject.ob_size`.
pub const OB_SIZE: usize = 16;
/// 3.11 starts its statically allocated strings and objects at 999,999,999 references
/// (`_PyObject_IMMORTAL_INIT`), so that none is ever freed: a count this high means nothing.
pub const STATIC_REFCNT: usize = 500_000_000;
pub const TP_NAME: usize = 24;
pub const TP_BASICSIZE: usize = 32;
pub const TP_ITEMSIZE: usize = 40;
pub const TP_FLAGS: usize = 168;
pub const TP_TRAVERSE: usize = 184;
pub const TP_BASE: usize = 256;
/// `tp_free`: where an object's memory goes back (see `Api::frees_through_hooks`).
pub const TP_FREE: usize = 320;
pub const TP_IS_GC: usize = 328;
pub const TP_SUBCLASSES: usize = 360;
/// `PyListObject.ob_item`.
const LIST_ITEMS: usize = 24;

/// The items of a list.
///
/// # Safety
/// `list` is a live list; the GIL is held.
pub unsafe fn list_items(list: usize) -> Vec<usize> {
    let n = read_usize(list + OB_SIZE);
    let items = read_usize(list + LIST_ITEMS) as *const usize;
    (0..n).map(|i| *items.add(i)).collect()
}

/// `PyModuleDef.m_size`.
const MODULEDEF_SIZE: usize = 56;
pub const UNICODE_STATE: usize = 32;
pub const GC_HEAD: usize = 16;

const MODULE_UP_TO_3_14: ModuleLayout = ModuleLayout {
    name: 48,
    state: 32,
    state_size: StateSize::InDef(24),
};

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
    /// `[start, end)` offsets in `PyInterpreterState` of the freelists (3.11+, whose main
    /// interpreter is static data). Their arrays keep stale pointers past their count, to
    /// memory that now holds other objects: not references.
    pub freelists: Option<(usize, usize)>,
    /// 3.11+: `_PyInterpreterFrame.localsplus` and `PyCodeObject.co_nlocalsplus`: a running
    /// frame's locals, which no traversal visits (the frame is not an object).
    pub frame_locals: Option<(usize, usize)>,
    /// 3.14+: a frame's code and locals are tagged `_PyStackRef`s, not plain pointers.
    pub stackrefs: bool,
    /// `PyTupleObject.ob_item` (3.14 caches the hash before it).
    pub tuple_items: usize,
    pub module: ModuleLayout,
    /// The object fields of `PyCodeObject`, which no traversal visits; its other words are
    /// ints and C pointers, one of which (3.15's `_co_unique_id`) held a freed object's
    /// address.
    pub code_objects: &'static [usize],
}

/// `co_code`, `co_consts`, `co_names`, `co_varnames`, `co_freevars`, `co_cellvars`,
/// `co_filename`, `co_name`, `co_lnotab` (3.10: `co_linetable`).
const CODE_OBJECTS_UP_TO_3_10: &[usize] = &[48, 56, 64, 72, 80, 88, 104, 112, 120];
/// `co_consts`, `co_names`, `co_exceptiontable`, `co_localsplusnames`, `co_localspluskinds`,
/// `co_filename`, `co_name`, `co_qualname`, `co_linetable`.
const CODE_OBJECTS: &[usize] = &[24, 32, 40, 96, 104, 112, 120, 128, 136];

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
        if sym(c"_Py_MergeZeroLocalRefcount").is_some() {
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
            freelists: None,
            frame_locals: None,
            stackrefs: false,
            tuple_items: 24,
            module: MODULE_UP_TO_3_14,
            code_objects: CODE_OBJECTS_UP_TO_3_10,
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
                freelists: Some((3608, 7128)),
                frame_locals: Some((72, 76)),
                stackrefs: false,
                tuple_items: 24,
                module: MODULE_UP_TO_3_14,
                code_objects: CODE_OBJECTS,
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
                freelists: Some(if minor == 12 {
                    (267408, 273400)
                } else {
                    (10952, 14488)
                }),
                frame_locals: Some((72, 72)),
                stackrefs: false,
                tuple_items: 24,
                module: MODULE_UP_TO_3_14,
                code_objects: CODE_OBJECTS,
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
                freelists: Some(if minor == 14 {
                    (11120, 11744)
                } else {
                    (11096, 11752)
                }),
                frame_locals: Some((80, 72)),
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
            },
            _ => return None,
        })
    }

    /// 3.11+: a dict whose keys are all strings does not visit its keys.
    pub fn unicode_dicts(&self) -> bool {
        self.minor >= 11
    }

    /// 3.13+: an object may keep its attributes inline and still own a `__dict__`.
    pub fn inline_values(&self) -> bool {
        self.minor >= 13
    }

    /// The object a frame's field holds: a plain pointer, or (3.14+) a `_PyStackRef` whose
    /// tag bits are masked off; 0 for none or a tagged int.
    pub fn frame_object(&self, word: usize) -> usize {
        if !self.stackrefs {
            word
        } else if word & STACKREF_TAG_BITS == STACKREF_TAG_BITS {
            0
        } else {
            word & !STACKREF_TAG_BITS
        }
    }

    /// Bytes between the start of an object's memory block and the object itself.
    pub fn preheader(&self, tp_flags: u64) -> usize {
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

/// `PyASCIIObject.length`, and the bits of its `state`: interned (2), kind (3), compact, ascii.
const UNICODE_LENGTH: usize = 16;
const UNICODE_COMPACT: u32 = 1 << 5;
const UNICODE_ASCII: u32 = 1 << 6;
const UNICODE_KIND_SHIFT: u32 = 2;

/// The bytes a compact str takes: its header and its characters with their terminator;
/// `None` for a legacy (non-compact) str, whose characters live in a block of their own.
///
/// # Safety
/// `op` is a readable str object.
pub unsafe fn compact_str_size(op: usize, layout: &Layout) -> Option<usize> {
    let state = *((op + UNICODE_STATE) as *const u32);
    if state & UNICODE_COMPACT == 0 {
        return None;
    }
    let length = read_usize(op + UNICODE_LENGTH);
    let kind = ((state >> UNICODE_KIND_SHIFT) & 7) as usize;
    let (header, width) = if state & UNICODE_ASCII != 0 {
        (layout.ascii_size, 1)
    } else {
        (layout.compact_size, kind)
    };
    length
        .checked_add(1)?
        .checked_mul(width)?
        .checked_add(header)
}

/// The state block of a module object whose state size is positive, and its size.
///
/// # Safety
/// `op` is a live object of exactly `PyModule_Type`; `layout` is its interpreter's.
pub unsafe fn module_state(op: usize, layout: &Layout) -> Option<(usize, usize)> {
    let state = read_usize(op + layout.module.state);
    let size = match layout.module.state_size {
        StateSize::InDef(def) => match read_usize(op + def) {
            0 => return None,
            def => read_usize(def + MODULEDEF_SIZE),
        },
        StateSize::InModule(at) => read_usize(op + at),
    } as isize;
    (state != 0 && size > 0).then_some((state, size as usize))
}

/// Where a compact str's characters start: after the ASCII header, or the compact one.
///
/// # Safety
/// `op` is a readable str object.
pub unsafe fn str_text_offset(op: usize, layout: &Layout) -> Option<usize> {
    let state = *((op + UNICODE_STATE) as *const u32);
    if state & UNICODE_COMPACT == 0 {
        None
    } else if state & UNICODE_ASCII != 0 {
        Some(layout.ascii_size)
    } else {
        Some(layout.compact_size)
    }
}

/// CPython functions, resolved once with `dlsym`.
pub struct Api {
    pub get_allocator: unsafe extern "C" fn(c_int, *mut Allocator),
    pub set_allocator: unsafe extern "C" fn(c_int, *mut Allocator),
    pub set_reftracer: Option<unsafe extern "C" fn(Option<RefTracer>, *mut c_void) -> c_int>,
    pub get_reftracer: Option<unsafe extern "C" fn(*mut *mut c_void) -> Option<RefTracer>>,
    pub thread_state: unsafe extern "C" fn() -> *mut c_void,
    /// `PyGILState_Check`: whether this thread holds the GIL. Up to 3.11 `thread_state`
    /// answers with the GIL's holder even on another thread.
    pub gil_check: unsafe extern "C" fn() -> c_int,
    /// `PyInterpreterState_ThreadHead` and `PyThreadState_Next`.
    pub thread_head: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    pub thread_next: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    /// `PyInterpreterState_Main`.
    pub main_interpreter: unsafe extern "C" fn() -> *mut c_void,
    /// `_Py_NewReference`, which every object's creation passes through.
    pub new_reference: Option<unsafe extern "C" fn(*mut PyObject)>,
    pub code_addr2line: unsafe extern "C" fn(*mut PyObject, c_int) -> c_int,
    pub incref: unsafe extern "C" fn(*mut PyObject),
    pub decref: unsafe extern "C" fn(*mut PyObject),
    pub getattr: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject,
    pub repr: unsafe extern "C" fn(*mut PyObject) -> *mut PyObject,
    pub unicode_utf8: unsafe extern "C" fn(*mut PyObject) -> *const c_char,
    pub err_clear: unsafe extern "C" fn(),
    pub dict_next: DictNext,
    pub type_type: usize,
    pub code_type: usize,
    pub unicode_type: usize,
    pub dict_type: usize,
    pub module_type: usize,
    pub long_type: usize,
    pub tuple_type: usize,
    /// `PyObject_Free` and `PyObject_GC_Del`: a type whose `tp_free` is one of them gives
    /// its objects' memory back through the object allocator, which the hooks wrap.
    pub standard_frees: [usize; 2],
    /// The weak reference types, whose referent field is no reference.
    pub weakref_types: [usize; 3],
    /// `[start, end)` of `_PyEval_EvalFrameDefault`, where native unwinding stops.
    pub eval_loop: (usize, usize),
}

unsafe fn sym(name: &CStr) -> Option<*mut c_void> {
    let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
    (!p.is_null()).then_some(p)
}

macro_rules! func {
    ($name:literal) => {
        match sym($name) {
            Some(p) => std::mem::transmute::<*mut c_void, _>(p),
            None => return Err(concat!("missing CPython symbol ", stringify!($name))),
        }
    };
}

impl Api {
    /// # Safety
    /// Must run inside a CPython process.
    pub unsafe fn resolve() -> Result<Api, &'static str> {
        let thread_state = match sym(c"PyThreadState_GetUnchecked")
            .or_else(|| sym(c"_PyThreadState_UncheckedGet"))
        {
            Some(p) => std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *mut c_void>(p),
            None => return Err("missing CPython symbol PyThreadState_GetUnchecked"),
        };
        let eval = sym(c"_PyEval_EvalFrameDefault").ok_or("missing _PyEval_EvalFrameDefault")?;
        Ok(Api {
            get_allocator: func!(c"PyMem_GetAllocator"),
            set_allocator: func!(c"PyMem_SetAllocator"),
            set_reftracer: sym(c"PyRefTracer_SetTracer").map(|p| std::mem::transmute(p)),
            get_reftracer: sym(c"PyRefTracer_GetTracer").map(|p| std::mem::transmute(p)),
            thread_state,
            gil_check: func!(c"PyGILState_Check"),
            main_interpreter: func!(c"PyInterpreterState_Main"),
            thread_head: func!(c"PyInterpreterState_ThreadHead"),
            thread_next: func!(c"PyThreadState_Next"),
            new_reference: sym(c"_Py_NewReference").map(|p| std::mem::transmute(p)),
            code_addr2line: func!(c"PyCode_Addr2Line"),
            incref: func!(c"Py_IncRef"),
            decref: func!(c"Py_DecRef"),
            getattr: func!(c"PyObject_GetAttrString"),
            repr: func!(c"PyObject_Repr"),
            unicode_utf8: func!(c"PyUnicode_AsUTF8"),
            err_clear: func!(c"PyErr_Clear"),
            dict_next: func!(c"PyDict_Next"),
            type_type: sym(c"PyType_Type").ok_or("missing PyType_Type")? as usize,
            code_type: sym(c"PyCode_Type").ok_or("missing PyCode_Type")? as usize,
            unicode_type: sym(c"PyUnicode_Type").ok_or("missing PyUnicode_Type")? as usize,
            dict_type: sym(c"PyDict_Type").ok_or("missing PyDict_Type")? as usize,
            module_type: sym(c"PyModule_Type").ok_or("missing PyModule_Type")? as usize,
            long_type: sym(c"PyLong_Type").ok_or("missing PyLong_Type")? as usize,
            tuple_type: sym(c"PyTuple_Type").ok_or("missing PyTuple_Type")? as usize,
            standard_frees: [c"PyObject_Free", c"PyObject_GC_Del"]
                .map(|name| sym(name).map_or(0, |p| p as usize)),
            weakref_types: [
                c"_PyWeakref_RefType",
                c"_PyWeakref_ProxyType",
                c"_PyWeakref_CallableProxyType",
            ]
            .map(|name| sym(name).map_or(0, |p| p as usize)),
            eval_loop: symbol_extent(eval),
        })
    }
}

/// `dladdr1` flag for the symbol's ELF entry (glibc `<dlfcn.h>`).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// The address range of the function at `p`, from its ELF symbol's size.
unsafe fn symbol_extent(p: *mut c_void) -> (usize, usize) {
    let mut info: libc::Dl_info = std::mem::zeroed();
    let mut sym: *const libc::Elf64_Sym = std::ptr::null();
    let ok = libc::dladdr1(
        p,
        &mut info,
        &mut sym as *mut _ as *mut *mut c_void,
        RTLD_DL_SYMENT,
    );
    let size = if ok != 0 && !sym.is_null() {
        (*sym).st_size as usize
    } else {
        0
    };
    // Without a size, a generous bound still stops the walk inside the eval loop.
    let size = if size == 0 { 64 * 1024 } else { size };
    (p as usize, p as usize + size)
}

/// Whether a word handed to a traversal's visit function can be an object: some are not
/// (3.15's ctypes types visited the word 1 at a window's start, one start in seven).
#[inline(always)]
pub fn may_be_object(word: usize) -> bool {
    word >= 4096 && word.is_multiple_of(8)
}

/// Raw reads of interpreter memory. Callers guarantee the address is a live object or struct.
#[inline(always)]
pub unsafe fn read_usize(addr: usize) -> usize {
    *(addr as *const usize)
}

#[inline(always)]
pub unsafe fn type_of(op: usize) -> usize {
    read_usize(op + OB_TYPE)
}

#[inline(always)]
pub unsafe fn type_flags(tp: usize) -> u64 {
    *((tp + TP_FLAGS) as *const u64)
}

/// `PyObject_IS_GC`: a container the collector may traverse. Static types carry the GC flag
/// but say no through `tp_is_gc`, and traversing one aborts the interpreter.
pub unsafe fn is_gc(op: usize) -> bool {
    let tp = type_of(op);
    if type_flags(tp) & TPFLAGS_HAVE_GC == 0 {
        return false;
    }
    match read_usize(tp + TP_IS_GC) {
        0 => true,
        f => {
            std::mem::transmute::<usize, unsafe extern "C" fn(*mut PyObject) -> c_int>(f)(
                op as *mut PyObject,
            ) != 0
        }
    }
}

/// Whether `tp` is `base` or derives from it, along `tp_base`.
///
/// # Safety
/// `tp` is a live type object.
pub unsafe fn derives_from(mut tp: usize, base: usize) -> bool {
    while tp != 0 {
        if tp == base {
            return true;
        }
        tp = read_usize(tp + TP_BASE);
    }
    false
}

pub unsafe fn type_name(tp: usize) -> String {
    let p = read_usize(tp + TP_NAME) as *const c_char;
    if p.is_null() {
        return "?".into();
    }
    CStr::from_ptr(p).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    //! The tables above against the headers of every CPython installed here (pyenv or PATH).

    use super::*;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// An interpreter whose headers are probed: `python` runs on this machine, or inside
    /// the folder `root` (Debian unstable's 3.13-3.15, see scripts/sid.sh) through chroot.
    struct Interpreter {
        minor: u32,
        python: PathBuf,
        root: Option<PathBuf>,
    }

    impl Interpreter {
        fn command(&self, program: &Path) -> Command {
            match &self.root {
                Some(root) => {
                    let mut c = Command::new("chroot");
                    c.arg(root).arg(program);
                    c
                }
                None => Command::new(program),
            }
        }
    }

    fn pyenv_python(minor: u32) -> Option<PathBuf> {
        let root = Command::new("pyenv").arg("root").output().ok()?;
        let root = PathBuf::from(String::from_utf8_lossy(&root.stdout).trim());
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let v = p.file_name().unwrap().to_string_lossy().into_owned();
                v.starts_with(&format!("3.{minor}."))
            })
            .collect();
        dirs.sort();
        dirs.pop()
            .map(|d| d.join("bin").join(format!("python3.{minor}")))
            .filter(|p| p.is_file())
    }

    /// The unstable folder: `REFHUNT_SID`, else the cache scripts/sid.sh builds; used only
    /// as root, who may chroot.
    fn sid_folder() -> Option<PathBuf> {
        let folder = std::env::var_os("REFHUNT_SID")
            .map(PathBuf::from)
            .or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(cache.join("refhunt").join("sid"))
            })?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        (root && folder.join("usr/bin").is_dir()).then_some(folder)
    }

    /// For each minor version, pyenv's newest or the one on PATH; where neither has one, the
    /// unstable folder's.
    fn interpreters() -> Vec<Interpreter> {
        let sid = sid_folder();
        (9..=15)
            .filter_map(|minor| {
                let name = format!("python3.{minor}");
                let from_path = || {
                    std::env::split_paths(&std::env::var_os("PATH")?)
                        .map(|d| d.join(&name))
                        .find(|p| p.is_file())
                };
                if let Some(python) = pyenv_python(minor).or_else(from_path) {
                    return Some(Interpreter {
                        minor,
                        python,
                        root: None,
                    });
                }
                let root = sid.clone()?;
                let python = Path::new("/usr/bin").join(&name);
                root.join(python.strip_prefix("/").unwrap())
                    .is_file()
                    .then_some(Interpreter {
                        minor,
                        python,
                        root: Some(root),
                    })
            })
            .collect()
    }

    /// Compiles and runs layout_probe.c against the headers of `python`; `dir` is a scratch
    /// directory on this machine (inside the folder for one of its interpreters).
    fn probe(python: &Interpreter, dir: &Path) -> HashMap<String, i64> {
        let include = python
            .command(&python.python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['include'])",
            ])
            .output()
            .expect("python runs");
        let include = String::from_utf8_lossy(&include.stdout).trim().to_string();
        // Paths as the compiler sees them, and where they are on this machine.
        let (seen, here) = match &python.root {
            Some(root) => {
                let seen = PathBuf::from(format!("/tmp/refhunt-layout-{}", std::process::id()));
                (seen.clone(), root.join(seen.strip_prefix("/").unwrap()))
            }
            None => (dir.to_path_buf(), dir.to_path_buf()),
        };
        std::fs::create_dir_all(&here).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("layout_probe.c");
        std::fs::copy(source, here.join("probe.c")).unwrap();
        let out = seen.join(format!("probe3{}", python.minor));
        let status = python
            .command(Path::new("gcc"))
            .arg(format!("-I{include}"))
            .arg(format!("-I{include}/internal"))
            .arg(seen.join("probe.c"))
            .arg("-o")
            .arg(&out)
            .status()
            .expect("gcc runs");
        assert!(
            status.success(),
            "layout probe does not compile for {:?}",
            python.python
        );
        let text = python.command(&out).output().expect("probe runs").stdout;
        if python.root.is_some() {
            let _ = std::fs::remove_dir_all(&here);
        }
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn layouts_match_the_installed_headers() {
        let found = interpreters();
        assert!(!found.is_empty(), "no CPython 3.9-3.15 found");
        // CI has every version: pyenv's 3.9-3.13 and the unstable folder's 3.14 and 3.15.
        if std::env::var_os("CI").is_some() {
            let minors: Vec<u32> = found.iter().map(|i| i.minor).collect();
            assert_eq!(minors, (9..=15).collect::<Vec<u32>>(), "versions probed");
        }
        let dir = std::env::temp_dir().join(format!("refhunt-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for python in found {
            let minor = python.minor;
            let h = probe(&python, &dir);
            let l = Layout::for_version(minor).unwrap();
            let at = |k: &str| h[k] as usize;
            let what = format!("3.{minor} ({:?} in {:?})", python.python, python.root);
            assert_eq!(l.tstate_frame, at("tstate_frame"), "{what}");
            assert_eq!(
                l.cframe_current,
                h.get("cframe_current").map(|&v| v as usize),
                "{what}"
            );
            assert_eq!(l.frame_code, at("frame_code"), "{what}");
            assert_eq!(l.ht_slots, at("ht_slots"), "{what}");
            assert_eq!(l.ht_slots - 8, at("ht_name"), "{what}");
            assert_eq!(l.ht_slots + 8, at("ht_qualname"), "{what}");
            assert_eq!(l.frame_previous, at("frame_previous"), "{what}");
            assert_eq!(l.ascii_size, at("ascii_size"), "{what}");
            assert_eq!(
                l.freelists,
                h.get("freelists_start")
                    .map(|&v| (v as usize, at("freelists_end"))),
                "{what}"
            );
            assert_eq!(
                l.frame_locals,
                h.get("frame_localsplus")
                    .map(|&v| (v as usize, at("code_nlocalsplus"))),
                "{what}"
            );
            if minor >= 11 {
                assert_eq!(
                    FRAME_OWNED_BY_THREAD as i64, h["frame_owned_by_thread"],
                    "{what}"
                );
            }
            if minor >= 12 {
                assert_eq!(
                    FRAME_FIRST_SHIM_OWNER as i64, h["frame_first_shim_owner"],
                    "{what}"
                );
                assert_eq!(
                    CODE_CACHED_OBJECTS as i64, h["code_cached_objects"],
                    "{what}"
                );
            }
            assert_eq!(
                l.code_cached,
                h.get("code_cached").map(|&v| v as usize),
                "{what}"
            );
            assert_eq!(l.compact_size, at("compact_size"), "{what}");
            assert_eq!(l.tuple_items, at("tuple_items"), "{what}");
            assert_eq!(
                (l.preheader_flags != 0).then_some(l.preheader_flags as i64),
                h.get("preheader_flags").copied(),
                "{what}"
            );
            if minor >= 12 {
                assert_eq!(MANAGED_DICT_BEFORE, at("managed_dict_before"), "{what}");
            }
            if minor >= 13 {
                assert_eq!(TPFLAGS_INLINE_VALUES, at("tpflags_inline_values") as u64);
                assert_eq!(INLINE_VALUES_VALID, at("inline_values_valid"), "{what}");
                assert_eq!(REFTRACER_CREATE as usize, at("reftracer_create"), "{what}");
            }
            assert_eq!(l.reftracer, h.contains_key("reftracer_create"), "{what}");
            let mut code_objects: Vec<usize> = h
                .iter()
                .filter(|(k, _)| k.starts_with("code_field_"))
                .map(|(_, &v)| v as usize)
                .collect();
            code_objects.sort();
            assert_eq!(l.code_objects, code_objects, "{what}");
            assert_eq!(
                l.stackrefs.then_some(STACKREF_TAG_BITS as i64),
                h.get("stackref_tag_bits").copied(),
                "{what}"
            );
            assert_eq!(UNICODE_LENGTH, at("unicode_length"), "{what}");
            assert_eq!(UNICODE_COMPACT, at("unicode_compact_bit") as u32, "{what}");
            assert_eq!(UNICODE_ASCII, at("unicode_ascii_bit") as u32, "{what}");
            assert_eq!(
                1 << UNICODE_KIND_SHIFT,
                at("unicode_kind_one") as u32,
                "{what}"
            );
            assert_eq!(l.frame_instr, at("frame_instr"), "{what}");
            assert_eq!(
                l.frame_owner,
                h.get("frame_owner").map(|&v| v as usize),
                "{what}"
            );
            if minor >= 11 {
                assert_eq!(DICT_KEYS_KIND, at("dict_keys_kind"), "{what}");
                assert_eq!(
                    DICT_KEYS_LOG2_INDEX_BYTES,
                    at("dict_keys_log2_index_bytes"),
                    "{what}"
                );
                assert_eq!(DICT_KEYS_NENTRIES, at("dict_keys_nentries"), "{what}");
                assert_eq!(DICT_KEYS_INDICES, at("dict_keys_indices"), "{what}");
                assert_eq!(DICT_UNICODE_ENTRY, at("dict_unicode_entry"), "{what}");
                assert_eq!(
                    l.ht_slots + HT_CACHED_KEYS_AFTER_SLOTS,
                    at("ht_cached_keys"),
                    "{what}"
                );
            }
            if minor >= 10 {
                assert_eq!(l.module.name, at("md_name"), "{what}");
                assert_eq!(l.module.state, at("md_state"), "{what}");
                let size = match l.module.state_size {
                    StateSize::InDef(def) => (def, "md_def"),
                    StateSize::InModule(at) => (at, "md_state_size"),
                };
                assert_eq!(size.0, at(size.1), "{what}");
            }
            assert_eq!(MODULEDEF_SIZE, at("moduledef_size"), "{what}");
            for (ours, key) in [
                (TP_NAME, "tp_name"),
                (TP_BASICSIZE, "tp_basicsize"),
                (TP_ITEMSIZE, "tp_itemsize"),
                (TP_FLAGS, "tp_flags"),
                (TP_TRAVERSE, "tp_traverse"),
                (TP_BASE, "tp_base"),
                (OB_SIZE, "ob_size"),
                (TP_FREE, "tp_free"),
                (TP_IS_GC, "tp_is_gc"),
                (TP_SUBCLASSES, "tp_subclasses"),
                (UNICODE_STATE, "unicode_state"),
                (DICT_KEYS, "dict_keys"),
                (DICT_VALUES, "dict_values"),
                (GC_HEAD, "gc_head"),
                (LIST_ITEMS, "list_items"),
                (OB_REFCNT, "ob_refcnt"),
                (OB_TYPE, "ob_type"),
                (TPFLAGS_HEAPTYPE as usize, "tpflags_heaptype"),
                (TPFLAGS_HAVE_GC as usize, "tpflags_have_gc"),
                (TPFLAGS_DICT_SUBCLASS as usize, "tpflags_dict_subclass"),
                (TPFLAGS_TYPE_SUBCLASS as usize, "tpflags_type_subclass"),
                (DOMAIN_RAW as usize, "domain_raw"),
                (DOMAIN_MEM as usize, "domain_mem"),
                (DOMAIN_OBJ as usize, "domain_obj"),
            ] {
                assert_eq!(ours, at(key), "{key} on {what}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
