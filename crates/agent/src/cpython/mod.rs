//! Everything that depends on the CPython version: the functions the agent calls, found with
//! `dlsym` at start, and the internal layouts it reads, chosen by `sys.hexversion`.
//!
//! No other module reads a raw offset or asks for a version.
//!
//! The layouts come from each version's headers on x86_64 (default, non-free-threaded builds).
//! `layout_probe.c` (beside Cargo.toml) prints the same numbers from the installed headers, and
//! the test in `probe.rs` compares them with [`Layout::for_version`], so a table can't drift
//! unseen.

// dlsym results are typed by the Api field they are stored in.
#![allow(clippy::missing_transmute_annotations)]

use std::ffi::{c_char, c_int, c_void, CStr};

pub mod debug_offsets;
mod handles;
mod layout;
#[cfg(test)]
mod probe;

pub use handles::{interpreter_caches, Frame, Header, Object, ThreadState, Type};
pub use layout::{Borrowed, Layout, StateSize};

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
const TPFLAGS_MANAGED_WEAKREF: u64 = 1 << 3;
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
/// 3.13+: instance attributes live inline, after `tp_basicsize`, in a `PyDictValues`.
const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
/// `PyDictValues.valid` (3.13): whether the inline values are still the attributes.
const INLINE_VALUES_VALID: usize = 3;
/// The managed `__dict__` pointer sits this far before the object (3.12+).
const MANAGED_DICT_BEFORE: usize = 24;
const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
const TPFLAGS_HAVE_GC: u64 = 1 << 14;
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
const TPFLAGS_LIST_SUBCLASS: u64 = 1 << 25;
const TPFLAGS_TUPLE_SUBCLASS: u64 = 1 << 26;
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;

// PyDictObject and PyDictKeysObject (3.11+, default builds).
const DICT_USED: usize = 16;
const DICT_KEYS: usize = 32;
const DICT_VALUES: usize = 40;
const DICT_KEYS_KIND: usize = 10;
const DICT_KEYS_UNICODE: u8 = 1;
const DICT_KEYS_LOG2_INDEX_BYTES: usize = 9;
const DICT_KEYS_NENTRIES: usize = 24;
/// `dk_indices`; the entries follow them, a key and a value each in a table whose keys are
/// all strings (`PyDictUnicodeEntry`).
const DICT_KEYS_INDICES: usize = 32;
const DICT_UNICODE_ENTRY: usize = 16;
/// `PyHeapTypeObject.ht_cached_keys` after `ht_slots` and `ht_qualname`: the keys its
/// instances' split dicts share, which hold a reference to each.
const HT_CACHED_KEYS_AFTER_SLOTS: usize = 16;

/// `PyDict_Next`.
pub type DictNext = unsafe extern "C" fn(
    *mut PyObject,
    *mut isize,
    *mut *mut PyObject,
    *mut *mut PyObject,
) -> c_int;

// `_PyInterpreterFrame.owner` (3.11+).
/// A frame that its thread runs, neither a generator's nor a frame object's (whose
/// traversals visit their locals).
const FRAME_OWNED_BY_THREAD: u8 = 0;
/// 3.12+: owners from this one on are shim frames, pushed by C code or by the interpreter,
/// with no Python code of their own (`FRAME_OWNED_BY_CSTACK` up to 3.13;
/// `FRAME_OWNED_BY_INTERPRETER`, then `FRAME_OWNED_BY_CSTACK` in 3.14).
const FRAME_FIRST_SHIM_OWNER: u8 = 3;
/// 3.14+: the tag bits of a `_PyStackRef` (default builds): bit 0 says the reference is not
/// counted, both bits set a tagged int, which is no object.
const STACKREF_TAG_BITS: usize = 3;
/// `struct type_cache_entry` (3.11+): its size, and where its borrowed `value` is.
const TYPE_CACHE_ENTRY: usize = 24;
const TYPE_CACHE_VALUE: usize = 16;
/// `_PyCoCached` (3.12+): `_co_code`, `_co_varnames`, `_co_cellvars`, `_co_freevars`.
const CODE_CACHED_OBJECTS: usize = 4;

// PyTypeObject and PyObject offsets, the same on every supported version.
/// `PyDescrObject`'s `d_name` and `d_qualname`, after the header and `d_type`
/// (Include/descrobject.h, alike in every version).
const DESCR_NAMES: [usize; 2] = [24, 32];
const OB_REFCNT: usize = 0;
/// 3.14+ links its object freelists through their members' first word (`_PyFreeList_Push`
/// writes the next member over `ob_refcnt`): a freed dict kept there still has its type and
/// reads as a positive count, the address of the next member (0 for the last).
const FREELIST_NEXT: usize = OB_REFCNT;
const OB_TYPE: usize = 8;
/// `PyVarObject.ob_size`.
const OB_SIZE: usize = 16;
/// 3.11 starts its statically allocated strings and objects at 999,999,999 references
/// (`_PyObject_IMMORTAL_INIT`), so that none is ever freed: a count this high means nothing.
pub const STATIC_REFCNT: usize = 500_000_000;
const TP_NAME: usize = 24;
const TP_BASICSIZE: usize = 32;
const TP_ITEMSIZE: usize = 40;
const TP_FLAGS: usize = 168;
const TP_TRAVERSE: usize = 184;
const TP_BASE: usize = 256;
/// `tp_free`: where an object's memory goes back (see `Api::frees_through_hooks`).
const TP_FREE: usize = 320;
const TP_IS_GC: usize = 328;
const TP_SUBCLASSES: usize = 360;
/// Where the fields of `PyTypeObject` that the agent reads end (`tp_subclasses` is the last).
pub const TYPE_FIELDS_END: usize = TP_SUBCLASSES + 8;
/// `PyListObject.ob_item`.
const LIST_ITEMS: usize = 24;

/// `PyModuleDef.m_size`.
const MODULEDEF_SIZE: usize = 56;
const UNICODE_STATE: usize = 32;
/// `sizeof(PyGC_Head)`, before every object of a type with the GC flag.
pub const GC_HEAD: usize = 16;

/// `PyASCIIObject.length`, and the bits of its `state`: interned (2), kind (3), compact, ascii.
const UNICODE_LENGTH: usize = 16;
const UNICODE_INTERNED: u32 = 3;
const UNICODE_COMPACT: u32 = 1 << 5;
const UNICODE_ASCII: u32 = 1 << 6;
const UNICODE_KIND_SHIFT: u32 = 2;

/// The bytes a compact str takes, from its `state` and `length`: its header and its characters
/// with their terminator; `None` for a legacy (non-compact) str, whose characters live in a
/// block of their own.
fn compact_str_size(state: u32, length: usize, layout: &Layout) -> Option<usize> {
    let header = str_text_offset(state, layout)?;
    let width = if state & UNICODE_ASCII != 0 {
        1
    } else {
        ((state >> UNICODE_KIND_SHIFT) & 7) as usize
    };
    length
        .checked_add(1)?
        .checked_mul(width)?
        .checked_add(header)
}

/// The bytes a compact str at `op` takes (see [`Str::compact_size`]), where `op` starts a
/// block of `room` bytes that may hold one: its header is read only if the block holds it.
///
/// # Safety
/// The `room` bytes from `op` are readable.
pub unsafe fn compact_str_size_in(op: usize, room: usize, layout: &Layout) -> Option<usize> {
    if room < UNICODE_STATE + 4 {
        return None;
    }
    // SAFETY: `length` and `state` lie in the first `room` bytes, readable (caller's contract).
    let (state, length) = unsafe {
        (
            *((op + UNICODE_STATE) as *const u32),
            read_usize(op + UNICODE_LENGTH),
        )
    };
    compact_str_size(state, length, layout)
}

/// Where a compact str's characters start, from its `state`: after the ASCII header, or the
/// compact one.
fn str_text_offset(state: u32, layout: &Layout) -> Option<usize> {
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
    /// `PyModule_GetName`: a module's name from its dict, with no attribute lookup (one by
    /// name replaces an entry of the type attribute cache, see [`Layout::code_names`]).
    pub module_name: unsafe extern "C" fn(*mut PyObject) -> *const c_char,
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
    /// The descriptor types, whose traversal leaves out their names.
    pub descr_types: [usize; 5],
    /// The generator, coroutine, async generator and frame types, whose fixed part is an
    /// interpreter frame's header or room for one (see [`Object::holds_frame`]).
    pub frame_types: [usize; 4],
    /// `[start, end)` of `_PyEval_EvalFrameDefault`, where native unwinding stops.
    pub eval_loop: (usize, usize),
    /// 3.9-3.10: `lookdict`, the generic lookup of a dict's keys (a static function), found by
    /// [`Api::find_lookdict`]; 0 on 3.11+ and until then.
    pub lookdict: usize,
}

/// The address of the global symbol `name`, if the process has one.
///
/// # Safety
/// `dlsym` only needs a NUL-terminated name, which `&CStr` is; the caller must use the
/// address only as what the symbol is in the CPython it runs in (a function of a known
/// signature, or a static object).
unsafe fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is NUL-terminated; `RTLD_DEFAULT` searches the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Used only inside `Api::resolve`'s body, which is one unsafe block: the transmute gives the
/// symbol the type of the `Api` field it is stored in, which is its C signature.
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
        // SAFETY: the whole body relies on the contract above: in a CPython process each
        // symbol named here is the CPython function or type object of that name, so each
        // transmute gives a function the C signature of the `Api` field it goes in, and each
        // type's address is its static type object.
        unsafe {
            let thread_state = match sym(c"PyThreadState_GetUnchecked")
                .or_else(|| sym(c"_PyThreadState_UncheckedGet"))
            {
                Some(p) => {
                    std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *mut c_void>(p)
                }
                None => return Err("missing CPython symbol PyThreadState_GetUnchecked"),
            };
            let eval =
                sym(c"_PyEval_EvalFrameDefault").ok_or("missing _PyEval_EvalFrameDefault")?;
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
                module_name: func!(c"PyModule_GetName"),
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
                descr_types: [
                    c"PyMethodDescr_Type",
                    c"PyClassMethodDescr_Type",
                    c"PyGetSetDescr_Type",
                    c"PyMemberDescr_Type",
                    c"PyWrapperDescr_Type",
                ]
                .map(|name| sym(name).map_or(0, |p| p as usize)),
                frame_types: [
                    c"PyGen_Type",
                    c"PyCoro_Type",
                    c"PyAsyncGen_Type",
                    c"PyFrame_Type",
                ]
                .map(|name| sym(name).map_or(0, |p| p as usize)),
                eval_loop: symbol_extent(eval),
                lookdict: 0,
            })
        }
    }
}

impl Api {
    /// 3.9-3.10: finds `lookdict`, which no symbol names, in dicts made and freed here: a
    /// dict takes the generic lookup once a key is no str. Two dicts with an int key must
    /// share it and one with a str key must not, or the offset is wrong and it stays 0 (the
    /// keys of str-keyed dicts then go uncounted, as before).
    ///
    /// # Safety
    /// In the CPython process, with the GIL held, before the hooks are installed (the dicts
    /// are not the program's and must not be recorded).
    pub unsafe fn find_lookdict(&mut self, layout: &Layout) {
        type New = unsafe extern "C" fn() -> *mut PyObject;
        type FromLong = unsafe extern "C" fn(std::ffi::c_long) -> *mut PyObject;
        type FromStr = unsafe extern "C" fn(*const std::ffi::c_char) -> *mut PyObject;
        type SetItem = unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> c_int;
        let Some(at) = layout.dict_lookup else {
            return;
        };
        // SAFETY: in a CPython process these symbols are the functions of these signatures
        // (the caller's contract), called with the GIL held; every object made is a new
        // reference, given back once; a live dict's `ma_keys` is its live keys object, at
        // least `at + 8` bytes.
        unsafe {
            let (Some(new), Some(from_long), Some(from_str), Some(set_item)) = (
                sym(c"PyDict_New"),
                sym(c"PyLong_FromLong"),
                sym(c"PyUnicode_FromString"),
                sym(c"PyDict_SetItem"),
            ) else {
                return;
            };
            let new: New = std::mem::transmute(new);
            let from_long: FromLong = std::mem::transmute(from_long);
            let from_str: FromStr = std::mem::transmute(from_str);
            let set_item: SetItem = std::mem::transmute(set_item);
            let keys = [from_long(1), from_long(2), from_str(c"key".as_ptr())];
            let dicts = [new(), new(), new()];
            let mut lookups = [0usize; 3];
            for i in 0..3 {
                let (d, k) = (dicts[i], keys[i]);
                if !d.is_null() && !k.is_null() && set_item(d, k, k) == 0 {
                    lookups[i] = read_usize(read_usize(d as usize + DICT_KEYS) + at);
                }
            }
            if lookups[0] != 0 && lookups[0] == lookups[1] && lookups[2] != lookups[0] {
                self.lookdict = lookups[0];
            }
            for op in dicts.into_iter().chain(keys).filter(|op| !op.is_null()) {
                (self.decref)(op);
            }
            (self.err_clear)();
        }
    }
}

/// `dladdr1` flag for the symbol's ELF entry (glibc `<dlfcn.h>`).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// The address range of the function at `p`, from its ELF symbol's size.
///
/// # Safety
/// `p` is an address inside a loaded object (a symbol `dlsym` returned), which stays loaded.
unsafe fn symbol_extent(p: *mut c_void) -> (usize, usize) {
    // SAFETY: `Dl_info` is pointers and integers, for which all zeroes is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut sym: *const libc::Elf64_Sym = std::ptr::null();
    // SAFETY: `dladdr1` only writes through the two pointers to these locals, and with
    // `RTLD_DL_SYMENT` it stores in `sym` a pointer to an `Elf64_Sym`.
    let ok = unsafe {
        libc::dladdr1(
            p,
            &mut info,
            &mut sym as *mut _ as *mut *mut c_void,
            RTLD_DL_SYMENT,
        )
    };
    let size = if ok != 0 && !sym.is_null() {
        // SAFETY: on success `sym` points into the symbol table of the object holding `p`,
        // which stays loaded (caller's contract).
        unsafe { (*sym).st_size as usize }
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
///
/// # Safety
/// `addr` is 8-aligned and readable for 8 bytes: a field of a live object or struct.
#[inline(always)]
pub unsafe fn read_usize(addr: usize) -> usize {
    // SAFETY: `addr` is aligned and readable (caller's contract).
    unsafe { *(addr as *const usize) }
}

/// The items of `list`, a live object: none if it is no list.
///
/// # Safety
/// `list` is a live object; the GIL is held.
pub unsafe fn list_items(list: usize) -> Vec<usize> {
    // SAFETY: `list` is a live object, and a live list with the GIL held (caller's contract).
    unsafe {
        Object::new(list)
            .as_list()
            .map_or_else(Vec::new, |l| l.items())
    }
}

/// Whether the GC head before `op` says the collector does not track it (`_gc_next` is 0).
///
/// # Safety
/// The [`GC_HEAD`] bytes before `op` are readable.
pub unsafe fn gc_untracked(op: usize) -> bool {
    // SAFETY: `_gc_next` is the GC head's first word, readable (caller's contract).
    unsafe { read_usize(op - GC_HEAD) == 0 }
}
