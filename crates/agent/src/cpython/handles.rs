//! Typed handles on the interpreter's objects and structures. Each is made by one `unsafe`
//! constructor that states what makes its reads sound; its accessors are then safe to call,
//! and they are the only readers of CPython's offsets outside this module.
//!
//! A handle is a checked promise, not a reference: it does not keep what it names alive. The
//! constructor's contract holds for as long as the handle is used.

use super::*;

/// What an object's fixed part is scanned up to at most: a C struct larger than this is rare,
/// and its tail is not worth the reads.
const FIXED_PART_SCANNED: usize = 4096;

/// The header of what may be an object: its refcount and type word can be read, nothing more.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header(usize);

impl Header {
    /// # Safety
    /// The 16 bytes at `word` (`ob_refcnt` and `ob_type`) are mapped readable, and `word` is
    /// 8-aligned, while the handle is used.
    pub unsafe fn new(word: usize) -> Header {
        Header(word)
    }

    pub fn refcnt(self) -> isize {
        // SAFETY: the header is readable (constructor's contract).
        unsafe { read_usize(self.0 + OB_REFCNT) as isize }
    }

    pub fn type_addr(self) -> usize {
        // SAFETY: the header is readable (constructor's contract).
        unsafe { read_usize(self.0 + OB_TYPE) }
    }

    /// 3.12+: an immortal object, whose count means nothing (3.14 starts at `3 << 30`).
    pub fn immortal(self, layout: &Layout) -> bool {
        layout.immortal && (self.refcnt() as i32) < 0
    }

    /// A count too high to mean anything: 3.11's statically allocated objects (see
    /// [`STATIC_REFCNT`]), or an immortal one's.
    pub fn static_count(self) -> bool {
        self.refcnt() as usize >= STATIC_REFCNT
    }

    /// The first word as the next member of a 3.14+ freelist (see [`FREELIST_NEXT`]).
    pub fn freelist_next(self) -> usize {
        // SAFETY: the header is readable (constructor's contract).
        unsafe { read_usize(self.0 + FREELIST_NEXT) }
    }
}

/// An object, or what has been checked to have one's shape.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Object(usize);

impl Object {
    /// # Safety
    /// While the handle is used, `op`'s header and fixed part (up to its type's
    /// `tp_basicsize`; a compact str's header and characters) are readable and its type word
    /// is a live type. A live object is such; so is a block checked to hold one's shape, which
    /// is not yet enough for the methods that call into the interpreter.
    pub unsafe fn new(op: usize) -> Object {
        Object(op)
    }

    pub fn addr(self) -> usize {
        self.0
    }

    pub fn header(self) -> Header {
        // SAFETY: a live object's header is readable (constructor's contract).
        unsafe { Header::new(self.0) }
    }

    pub fn refcnt(self) -> isize {
        self.header().refcnt()
    }

    /// `Py_TYPE(op)`.
    pub fn tp(self) -> Type {
        // SAFETY: a live object's type is a live type (constructor's contract).
        unsafe { Type::new(self.header().type_addr()) }
    }

    /// `ob_size`, for an object whose type has an item size (a `PyVarObject`).
    pub fn var_size(self) -> Option<isize> {
        // SAFETY: an object whose type has an item size is a `PyVarObject`, whose header holds
        // `ob_size`.
        (self.tp().itemsize() != 0).then(|| unsafe { read_usize(self.0 + OB_SIZE) as isize })
    }

    /// The words of the fixed part after its header (and after `ob_size` for a variable-size
    /// object), up to `tp_basicsize` or [`FIXED_PART_SCANNED`] bytes; none for a compact str,
    /// which ends before `tp_basicsize`.
    pub fn fixed_words(self) -> impl Iterator<Item = usize> {
        let tp = self.tp();
        let first = if tp.itemsize() == 0 {
            OB_SIZE
        } else {
            OB_SIZE + 8
        };
        self.words_from(first, tp)
    }

    /// The words of the fixed part after `ob_type`, `ob_size` included (none for a compact
    /// str, as for [`Object::fixed_words`]).
    pub fn fields(self) -> impl Iterator<Item = usize> {
        self.words_from(OB_TYPE + 8, self.tp())
    }

    fn words_from(self, first: usize, tp: Type) -> impl Iterator<Item = usize> {
        let compact = self.as_str().is_some_and(|s| s.is_compact());
        let end = if compact {
            0
        } else {
            tp.basicsize().min(FIXED_PART_SCANNED)
        };
        let op = self.0;
        (first..end.max(first))
            .step_by(8)
            .take_while(move |at| at + 8 <= end)
            // SAFETY: `at + 8` stays within `tp_basicsize`, inside the live object's fixed part.
            .map(move |at| unsafe { read_usize(op + at) })
    }

    /// `PyObject_IS_GC`: a container the collector may traverse. Static types carry the GC
    /// flag but say no through `tp_is_gc`, and traversing one aborts the interpreter.
    ///
    /// # Safety
    /// The object is live and the GIL is held (`tp_is_gc` may be called).
    pub unsafe fn is_gc(self) -> bool {
        let tp = self.tp();
        if !tp.has_gc() {
            return false;
        }
        match tp.slot(TP_IS_GC) {
            0 => true,
            // SAFETY: a non-null `tp_is_gc` is an `inquiry`, called on a live object of its
            // type with the GIL held (caller's contract).
            f => unsafe {
                std::mem::transmute::<usize, unsafe extern "C" fn(*mut PyObject) -> c_int>(f)(
                    self.0 as *mut PyObject,
                ) != 0
            },
        }
    }

    /// Calls the type's `tp_traverse` with `visit` and `arg`, if it has one.
    ///
    /// # Safety
    /// The object is a live container (`is_gc`); `visit` accepts `arg`; the GIL is held.
    pub unsafe fn traverse(self, visit: VisitProc, arg: *mut c_void) {
        let traverse = self.tp().slot(TP_TRAVERSE);
        if traverse != 0 {
            // SAFETY: a non-null `tp_traverse` is a `traverseproc`, called on a live container
            // of its type with the GIL held and a `visit` that accepts `arg` (caller's contract).
            unsafe {
                let traverse: TraverseProc = std::mem::transmute(traverse);
                traverse(self.0 as *mut PyObject, visit, arg);
            }
        }
    }

    /// 3.13+: the `__dict__` of an object whose attributes still live inline, where one was
    /// made: it owns it, but `PyObject_VisitManagedDict` then visits only the inline values.
    ///
    /// # Safety
    /// The object is live: its inline values, past `tp_basicsize`, are allocated with it.
    pub unsafe fn materialized_dict(self, layout: &Layout) -> Option<usize> {
        let tp = self.tp();
        let inline = TPFLAGS_MANAGED_DICT | TPFLAGS_INLINE_VALUES;
        if !layout.inline_values() || tp.flags() & inline != inline {
            return None;
        }
        // SAFETY: a type with inline values keeps a `PyDictValues` right after
        // `tp_basicsize` and the managed dict pointer before the object, both in its block.
        unsafe {
            let valid = *((self.0 + tp.basicsize() + INLINE_VALUES_VALID) as *const u8);
            (valid != 0).then(|| read_usize(self.0 - MANAGED_DICT_BEFORE))
        }
    }

    /// The object as a dict, if its type is `dict` or a subclass.
    pub fn as_dict(self) -> Option<Dict> {
        (self.tp().flags() & TPFLAGS_DICT_SUBCLASS != 0).then_some(Dict(self))
    }

    /// The object as a list, if its type is `list` or a subclass.
    pub fn as_list(self) -> Option<List> {
        (self.tp().flags() & TPFLAGS_LIST_SUBCLASS != 0).then_some(List(self))
    }

    /// The object as a tuple, if its type is `tuple` or a subclass.
    pub fn as_tuple(self) -> Option<Tuple> {
        (self.tp().flags() & TPFLAGS_TUPLE_SUBCLASS != 0).then_some(Tuple(self))
    }

    /// The object as a str, if its type is `str` or a subclass.
    pub fn as_str(self) -> Option<Str> {
        (self.tp().flags() & TPFLAGS_UNICODE_SUBCLASS != 0).then_some(Str(self))
    }

    /// The object as a type, if it is one.
    pub fn as_type(self) -> Option<Type> {
        // SAFETY: a live object whose type derives from `type` is a live type object.
        self.tp()
            .is_metatype()
            .then(|| unsafe { Type::new(self.0) })
    }

    /// The object as a code object, if its type is exactly `code_type` (`Api::code_type`).
    pub fn as_code(self, code_type: usize) -> Option<Code> {
        (self.tp().0 == code_type).then_some(Code(self))
    }

    /// A descriptor's name and qualified name, which its traversal leaves out, if its type is
    /// one of `descr_types` (`Api::descr_types`).
    pub fn descr_names(self, descr_types: &[usize; 5]) -> Option<[usize; 2]> {
        let tp = self.tp().0;
        // SAFETY: an object of a descriptor type is a live `PyDescrObject`.
        descr_types
            .contains(&tp)
            .then(|| DESCR_NAMES.map(|at| unsafe { read_usize(self.0 + at) }))
    }

    /// Whether the object's fixed part is an interpreter frame's header, or room for one: a
    /// generator's, a coroutine's, an async generator's or a frame object's (`frame_types`,
    /// `Api::frame_types`). Its words are borrowed (globals, builtins), stale once the frame
    /// is cleared (its function), or never written (a frame object's copy while its frame
    /// runs, and 3.11+ plain generators' `gi_origin_or_finalizer`: 5 in 2,000 held an old
    /// word, which once pointed at a list leaked later at that address).
    pub fn holds_frame(self, frame_types: &[usize; 4]) -> bool {
        frame_types.contains(&self.tp().0)
    }

    /// A coroutine's origin, which its traversal leaves out, if it is a coroutine
    /// (`frame_types[1]`, `Api::frame_types`) and has one.
    pub fn coroutine_origin(self, frame_types: &[usize; 4], layout: &Layout) -> Option<usize> {
        // SAFETY: a live object of the coroutine type is a live `PyCoroObject`.
        let origin = (self.tp().0 == frame_types[1])
            .then(|| unsafe { read_usize(self.0 + layout.coro_origin) })?;
        (origin != 0).then_some(origin)
    }

    /// The object as a module, if its type is exactly `module_type` (`Api::module_type`).
    pub fn as_module(self, module_type: usize) -> Option<Module> {
        (self.tp().0 == module_type).then_some(Module(self))
    }
}

/// A live type object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Type(usize);

impl Type {
    /// # Safety
    /// `tp` is a live type object while the handle is used (`PyHeapTypeObject`'s fields too
    /// where its flags say it is a heap type).
    pub unsafe fn new(tp: usize) -> Type {
        Type(tp)
    }

    pub fn addr(self) -> usize {
        self.0
    }

    fn slot(self, at: usize) -> usize {
        // SAFETY: `at` is one of `PyTypeObject`'s fields, readable in a live type.
        unsafe { read_usize(self.0 + at) }
    }

    pub fn flags(self) -> u64 {
        self.slot(TP_FLAGS) as u64
    }

    pub fn basicsize(self) -> usize {
        self.slot(TP_BASICSIZE)
    }

    pub fn itemsize(self) -> usize {
        self.slot(TP_ITEMSIZE)
    }

    /// `tp_free`: where its objects' memory goes back (see `Api::standard_frees`).
    pub fn free(self) -> usize {
        self.slot(TP_FREE)
    }

    /// The word `tp_subclasses` holds: a dict of weak references to its subclasses, or null.
    pub fn subclasses(self) -> usize {
        self.slot(TP_SUBCLASSES)
    }

    /// Whether its instances are types (`type` or a metaclass).
    pub fn is_metatype(self) -> bool {
        self.flags() & TPFLAGS_TYPE_SUBCLASS != 0
    }

    /// Whether its objects carry a GC head (`Py_TPFLAGS_HAVE_GC`).
    pub fn has_gc(self) -> bool {
        self.flags() & TPFLAGS_HAVE_GC != 0
    }

    pub fn is_heap(self) -> bool {
        self.flags() & TPFLAGS_HEAPTYPE != 0
    }

    /// The bytes before an object of this type that its block holds (`Layout::preheader`).
    pub fn preheader(self, layout: &Layout) -> usize {
        layout.preheader(self.flags())
    }

    /// `tp_name`, or `?` where it is null.
    pub fn name(self) -> String {
        let p = self.slot(TP_NAME) as *const c_char;
        if p.is_null() {
            return "?".into();
        }
        // SAFETY: a type's non-null `tp_name` is a NUL-terminated string that lives as long
        // as the type.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Whether this type is `base` or derives from it, along `tp_base`.
    pub fn derives_from(self, base: usize) -> bool {
        let mut tp = self.0;
        while tp != 0 {
            if tp == base {
                return true;
            }
            // SAFETY: `tp` is a live type (the handle's, then each live type's `tp_base`, which
            // it holds a reference to, is a live type or null).
            tp = unsafe { Type::new(tp) }.slot(TP_BASE);
        }
        false
    }

    /// A heap type's name, `__slots__` tuple and qualified name (`ht_name`, `ht_slots`,
    /// `ht_qualname`, side by side), which its traversal does not visit.
    pub fn heap_names(self, layout: &Layout) -> Option<[usize; 3]> {
        let slots = layout.ht_slots;
        // SAFETY: a heap type is a `PyHeapTypeObject` (constructor's contract), whose three
        // name fields sit around `ht_slots`.
        self.is_heap()
            .then(|| [slots - 8, slots, slots + 8].map(|at| unsafe { read_usize(self.0 + at) }))
    }

    /// The keys of a heap type's shared instance keys (3.11+), which no traversal visits: a
    /// string-keyed split table holds a reference to each.
    pub fn cached_keys(self, layout: &Layout) -> impl Iterator<Item = usize> {
        // SAFETY: a heap type of a 3.11+ interpreter keeps `ht_cached_keys` after `ht_slots`;
        // when non-null it is a live keys object, whose header fields are read.
        let (n, entries) = unsafe {
            // 3.9-3.10 keys objects (those with `dk_lookup`) are laid out otherwise.
            let keys = if self.is_heap() && layout.dict_lookup.is_none() {
                read_usize(self.0 + layout.ht_slots + HT_CACHED_KEYS_AFTER_SLOTS)
            } else {
                0
            };
            // None, or a general table (not a string-keyed split one): no entries to read.
            if keys == 0 || *((keys + DICT_KEYS_KIND) as *const u8) == 0 {
                (0, 0)
            } else {
                let indices = 1usize << *((keys + DICT_KEYS_LOG2_INDEX_BYTES) as *const u8);
                (
                    read_usize(keys + DICT_KEYS_NENTRIES),
                    keys + DICT_KEYS_INDICES + indices,
                )
            }
        };
        (0..n)
            // SAFETY: the first `dk_nentries` entries of a string-keyed table follow its
            // indices, inside the keys object, which the type keeps alive while the handle is.
            .map(move |i| unsafe { read_usize(entries + i * DICT_UNICODE_ENTRY) })
            .filter(|&key| key != 0)
    }
}

/// A live dict (or an instance of a dict subclass).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Dict(Object);

impl Dict {
    /// The word `ma_keys` holds.
    pub fn keys_word(self) -> usize {
        // SAFETY: `ma_keys` is a field of a dict's fixed part, readable (`Object`'s contract).
        unsafe { read_usize(self.0 .0 + DICT_KEYS) }
    }

    /// `ma_used`, its number of items.
    pub fn used(self) -> isize {
        // SAFETY: `ma_used` is a field of a dict's fixed part, readable (`Object`'s contract).
        unsafe { read_usize(self.0 .0 + DICT_USED) as isize }
    }

    /// Whether its keys object is one: aligned, mapped (as `readable` says of a range) and
    /// with a positive refcount. A dead dict's keys were freed.
    pub fn keys_look_live(self, readable: impl Fn(usize, usize) -> bool) -> bool {
        let keys = self.keys_word();
        keys.is_multiple_of(8)
            && readable(keys, DICT_KEYS_INDICES)
            // SAFETY: `dk_refcnt`, the keys object's first word, was just found mapped.
            && unsafe { read_usize(keys) as isize } > 0
    }

    /// Calls `f` with each key of a dict whose combined table holds only string keys, which
    /// `dict_traverse` does not visit since a string cannot form a cycle: 3.11+ says so in
    /// the keys' kind, 3.9-3.10 in a lookup function other than the generic one. A split
    /// table's keys are its type's, held once there (see [`Type::cached_keys`]).
    ///
    /// # Safety
    /// The dict is live and the GIL is held; `api` is this interpreter's, laid out as
    /// `layout`.
    pub unsafe fn unicode_keys(self, api: &Api, layout: &Layout, mut f: impl FnMut(usize)) {
        let keys = self.keys_word();
        // SAFETY: `ma_values` is a field of a live dict, and a non-null `ma_keys` is its live
        // keys object, whose `dk_kind` (3.11+) or `dk_lookup` (3.9-3.10) is readable.
        unsafe {
            if keys == 0 || read_usize(self.0 .0 + DICT_VALUES) != 0 {
                return;
            }
            let unicode = match layout.dict_lookup {
                Some(at) => api.lookdict != 0 && read_usize(keys + at) != api.lookdict,
                None => *((keys + DICT_KEYS_KIND) as *const u8) == DICT_KEYS_UNICODE,
            };
            if !unicode {
                return;
            }
        }
        let dict_next = api.dict_next;
        let mut pos: isize = 0;
        let mut key: *mut PyObject = std::ptr::null_mut();
        let mut value: *mut PyObject = std::ptr::null_mut();
        // SAFETY: `dict_next` is `PyDict_Next` (caller's contract), called with the GIL held on
        // a live dict, with pointers to these locals.
        while unsafe { dict_next(self.0 .0 as *mut PyObject, &mut pos, &mut key, &mut value) } != 0
        {
            f(key as usize);
        }
    }
}

/// A live list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct List(Object);

impl List {
    /// Its items.
    ///
    /// # Safety
    /// The list is live and the GIL is held, so no item changes while they are read.
    pub unsafe fn items(self) -> Vec<usize> {
        // SAFETY: a live list's `ob_size` and `ob_item` are readable, and with the GIL held
        // (caller's contract) `ob_item` holds `ob_size` item pointers.
        unsafe {
            let n = read_usize(self.0 .0 + OB_SIZE);
            let items = read_usize(self.0 .0 + LIST_ITEMS) as *const usize;
            (0..n).map(|i| *items.add(i)).collect()
        }
    }
}

/// A live tuple.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Tuple(Object);

impl Tuple {
    pub fn len(self) -> usize {
        // SAFETY: a live tuple is a `PyVarObject`, whose `ob_size` is readable.
        unsafe { read_usize(self.0 .0 + OB_SIZE) }
    }

    /// Item `i`, below `len()`: a live object the tuple holds.
    ///
    /// # Safety
    /// The tuple is live, so its items are.
    pub unsafe fn item(self, i: usize, layout: &Layout) -> Option<Object> {
        // SAFETY: `i` is below the tuple's size, so `ob_item[i]` lies inside the live tuple
        // and holds a live item, which the tuple keeps alive.
        (i < self.len())
            .then(|| unsafe { Object::new(read_usize(self.0 .0 + layout.tuple_items + 8 * i)) })
    }
}

/// A live str.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Str(Object);

impl Str {
    fn state(self) -> u32 {
        // SAFETY: `state` is in a live str's `PyASCIIObject` header.
        unsafe { *((self.0 .0 + UNICODE_STATE) as *const u32) }
    }

    /// Whether its characters follow its header (every exact str from 3.12).
    pub fn is_compact(self) -> bool {
        self.state() & UNICODE_COMPACT != 0
    }

    /// Whether the interpreter interned it (interned strings are the interpreter's).
    pub fn interned(self) -> bool {
        self.state() & UNICODE_INTERNED != 0
    }

    /// Where a compact str's characters start: after the ASCII header, or the compact one.
    pub fn text_offset(self, layout: &Layout) -> Option<usize> {
        str_text_offset(self.state(), layout)
    }
}

/// A live code object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Code(Object);

impl Code {
    pub fn object(self) -> Object {
        self.0
    }

    /// The objects its fields hold (names, constants, file...), which no traversal visits:
    /// it is no container to the collector. Null fields are left out.
    pub fn object_fields(self, layout: &Layout) -> impl Iterator<Item = usize> + '_ {
        let op = self.0 .0;
        layout
            .code_objects
            .iter()
            // SAFETY: the layout's code fields lie in a live code object's fixed part.
            .map(move |&at| unsafe { read_usize(op + at) })
            .filter(|&word| word != 0)
    }

    /// 3.12+: the objects of `_co_cached`, a C struct made on demand that no traversal visits.
    pub fn cached_objects(self, layout: &Layout) -> impl Iterator<Item = usize> {
        let cached = layout
            .code_cached
            // SAFETY: `_co_cached` is a field of a live 3.12+ code object.
            .map_or(0, |at| unsafe { read_usize(self.0 .0 + at) });
        (0..if cached == 0 { 0 } else { CODE_CACHED_OBJECTS })
            // SAFETY: a non-null `_co_cached` is the code object's live struct of four object
            // pointers.
            .map(move |i| unsafe { read_usize(cached + 8 * i) })
    }

    /// Its file name, as a str object (`co_filename`).
    pub fn filename(self, layout: &Layout) -> usize {
        self.field(layout.code_names.filename)
    }

    /// Its qualified name (3.11+), else its name.
    pub fn qualname(self, layout: &Layout) -> usize {
        self.field(layout.code_names.qualname.unwrap_or(layout.code_names.name))
    }

    fn field(self, at: usize) -> usize {
        // SAFETY: `at` is one of the layout's code object fields, in a live code object.
        unsafe { read_usize(self.0 .0 + at) }
    }

    /// `co_nlocalsplus` (3.11+), 0 before.
    fn nlocalsplus(self, layout: &Layout) -> usize {
        layout.frame_locals.map_or(0, |(_, at)| {
            // SAFETY: `co_nlocalsplus` is an `int` field of a live 3.11+ code object.
            unsafe { *((self.0 .0 + at) as *const i32) }.max(0) as usize
        })
    }
}

/// A live module object (exactly `PyModule_Type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Module(Object);

impl Module {
    /// The word `md_name` holds: its name, kept apart from its dict.
    pub fn name_word(self, layout: &Layout) -> usize {
        // SAFETY: `md_name` is a field of a live module.
        unsafe { read_usize(self.0 .0 + layout.module.name) }
    }

    /// Its state block, where its state size is positive, and that size.
    ///
    /// # Safety
    /// The module is live, so its `md_def` (up to 3.14) is its definition or null.
    pub unsafe fn state(self, layout: &Layout) -> Option<(usize, usize)> {
        let op = self.0 .0;
        // SAFETY: `md_state` and `md_def` (or the module's own state size) are fields of a
        // live module, and a non-null `md_def` is its `PyModuleDef`, which outlives it.
        let (state, size) = unsafe {
            let state = read_usize(op + layout.module.state);
            let size = match layout.module.state_size {
                StateSize::InDef(def) => match read_usize(op + def) {
                    0 => return None,
                    def => read_usize(def + MODULEDEF_SIZE),
                },
                StateSize::InModule(at) => read_usize(op + at),
            } as isize;
            (state, size)
        };
        (state != 0 && size > 0).then_some((state, size as usize))
    }

    /// The words of its state block, up to `limit` bytes.
    ///
    /// # Safety
    /// As for [`Module::state`].
    pub unsafe fn state_words(self, layout: &Layout, limit: usize) -> impl Iterator<Item = usize> {
        // SAFETY: the module is live (caller's contract).
        let (state, size) = unsafe { self.state(layout) }.unwrap_or((0, 0));
        (0..size.min(limit) / 8)
            // SAFETY: the state block is `size` bytes, allocated for the live module.
            .map(move |i| unsafe { read_usize(state + 8 * i) })
    }
}

/// Calls `f` with each reference that the interpreter state at `interp` keeps in its caches
/// of single-character bytes and strs (3.10, see `Layout::interp_caches`; nothing on other
/// versions). Empty slots are 0 and skipped.
///
/// # Safety
/// `interp` is a live interpreter state laid out as `layout`, and the GIL is held.
pub unsafe fn interpreter_caches(layout: &Layout, interp: usize, mut f: impl FnMut(usize)) {
    for at in layout.interp_caches.into_iter().flatten() {
        for i in 0..256 {
            // SAFETY: the caches are arrays of 256 object pointers in the live state.
            let word = unsafe { read_usize(interp + at + 8 * i) };
            if word != 0 {
                f(word);
            }
        }
    }
}

/// A live thread state of the interpreter whose layout is `layout`.
#[derive(Clone, Copy)]
pub struct ThreadState<'l> {
    tstate: usize,
    layout: &'l Layout,
}

impl<'l> ThreadState<'l> {
    /// # Safety
    /// `tstate` is a live thread state of an interpreter laid out as `layout`, and the GIL is
    /// held while the handle (and any frame reached from it) is used, so its frame list stays
    /// as it is.
    pub unsafe fn new(tstate: usize, layout: &'l Layout) -> ThreadState<'l> {
        ThreadState { tstate, layout }
    }

    /// Its innermost frame.
    pub fn innermost(self) -> Option<Frame<'l>> {
        let l = self.layout;
        // SAFETY: the frame field (3.11's: its `cframe`, live while the thread runs) is a field
        // of the live thread state.
        let frame = unsafe {
            let frame = read_usize(self.tstate + l.tstate_frame);
            match l.cframe_current {
                Some(current) if frame != 0 => read_usize(frame + current),
                Some(_) => 0,
                None => frame,
            }
        };
        // SAFETY: a live thread's innermost frame is live while the GIL is held (constructor's
        // contract).
        (frame != 0).then(|| unsafe { Frame::new(frame, l) })
    }
}

/// A frame of a live thread: `_PyInterpreterFrame` from 3.11, a frame object before.
#[derive(Clone, Copy)]
pub struct Frame<'l> {
    frame: usize,
    layout: &'l Layout,
}

impl<'l> Frame<'l> {
    /// # Safety
    /// `frame` is a live frame of an interpreter laid out as `layout`, on a thread's frame
    /// list, and the GIL is held while the handle is used.
    unsafe fn new(frame: usize, layout: &'l Layout) -> Frame<'l> {
        Frame { frame, layout }
    }

    fn word(self, at: usize) -> usize {
        // SAFETY: `at` is one of the layout's frame fields, readable in a live frame.
        unsafe { read_usize(self.frame + at) }
    }

    /// The frame it was called from.
    pub fn previous(self) -> Option<Frame<'l>> {
        match self.word(self.layout.frame_previous) {
            0 => None,
            // SAFETY: a live frame's caller is live on the same frame list.
            previous => Some(unsafe { Frame::new(previous, self.layout) }),
        }
    }

    fn owner(self) -> Option<u8> {
        self.layout.frame_owner.map(|at| {
            // SAFETY: `owner` is a byte field of a live 3.11+ frame.
            unsafe { *((self.frame + at) as *const u8) }
        })
    }

    /// A shim frame (3.12+), pushed by C code or the interpreter, with no Python code of its own.
    pub fn is_shim(self) -> bool {
        self.owner().is_some_and(|o| o >= FRAME_FIRST_SHIM_OWNER)
    }

    /// The code object it runs, if it runs one (`code_type` is `Api::code_type`).
    pub fn code(self, code_type: usize) -> Option<Code> {
        match self.layout.frame_object(self.word(self.layout.frame_code)) {
            0 => None,
            // SAFETY: a live frame's executable (`f_code`, `f_executable`) is a live object that
            // the frame holds.
            word => unsafe { Object::new(word) }.as_code(code_type),
        }
    }

    /// What a frame its thread runs refers to where no traversal looks. 3.11+: its locals and
    /// its frame object if one was made (the frame is not an object); nothing for a
    /// generator's or a frame object's frame, whose traversals visit their locals. 3.9-3.10:
    /// the frame object itself, which the C call that runs it holds (`_PyEval_EvalCode`'s
    /// `f`), unless a generator owns it. `code` is the code it runs.
    pub fn running_references(self, code: Code) -> impl Iterator<Item = usize> + 'l {
        let l = self.layout;
        // A generator holds its frame, and `gen_send_ex` runs it with no reference of its own.
        let held_by_call = l
            .frame_gen
            .filter(|&at| self.word(at) == 0)
            .map(|_| self.frame);
        let running = self.owner() == Some(FRAME_OWNED_BY_THREAD);
        let (localsplus, n) = match l.frame_locals {
            Some((localsplus, _)) if running => (localsplus, code.nlocalsplus(l)),
            _ => (0, 0),
        };
        let frame_obj = match l.frame_obj {
            // `frame_obj` is a plain pointer field of a live 3.11+ frame.
            Some(at) if running => self.word(at),
            _ => 0,
        };
        let frame = self.frame;
        (0..n)
            // SAFETY: a running frame holds `co_nlocalsplus` locals from `localsplus`.
            .map(move |i| l.frame_object(unsafe { read_usize(frame + localsplus + 8 * i) }))
            .chain([frame_obj, held_by_call.unwrap_or(0)])
            .filter(|&word| word != 0)
    }

    /// The byte offset of its current instruction in `code`, the code it runs; `code_start`
    /// is where a code object's instructions start (`PyCode_Type.tp_basicsize`).
    pub fn instruction_offset(self, code: Code, code_start: usize) -> i32 {
        let l = self.layout;
        if l.frame_owner.is_some() {
            // 3.11+: a pointer into the code's instruction array (`co_code_adaptive`).
            let instr = self.word(l.frame_instr) as isize;
            let first = (code.0 .0 + code_start) as isize;
            (instr - first).max(0) as i32
        } else {
            // SAFETY: `f_lasti` is an `int` field of a live frame object.
            let lasti = unsafe { *((self.frame + l.frame_instr) as *const i32) };
            if l.lasti_in_units {
                lasti.max(0) * 2
            } else {
                lasti.max(0)
            }
        }
    }
}
