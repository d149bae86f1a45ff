//! The hooks: a wrapper around Python's object allocator, and a creation event for every
//! object, freelist reuse included, where the interpreter offers one.
//!
//! An object's creation is seen in one of three ways ([`Creations`]). From 3.13 a
//! `PyRefTracer` CREATE event. Up to 3.12, calls to `_Py_NewReference` redirected in
//! libpython's GOT (see [`crate::got`]): every object, fresh or from a freelist, passes there,
//! which is where tracemalloc itself follows freelist reuse. Where neither exists (another
//! tracer owns 3.13's slot, or a statically linked interpreter calls `_Py_NewReference`
//! directly), the stack is taken at the allocation, and a freelist's reuse of memory from
//! before the window goes unseen. With creation events, the allocator hook only records which
//! blocks are live, because DESTROY events are missing for some frees on 3.13.0; DESTROY
//! events are not followed at all: an object destroyed onto a freelist keeps a refcount of 0,
//! which the snapshot does not count, so following them would only add work to every
//! object's end.

use crate::census::Census;
use crate::cpython::{self, read_usize, type_flags, type_of, Allocator, Api, Layout, PyObject};
use crate::holds::Holds;
use crate::live::{Block, LiveTable, ALLOCATED, BEFORE, BUFFER, LIVE, NO_STACK};
use crate::lock::SpinLock;
use crate::pyframes::{self, PyFrameRef};
use crate::sampler::{self, Kind, Sampler};
use crate::stacks::StackTable;
use crate::unwind::{here, Regs, Unwinder};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering::Relaxed};

const MAX_NATIVE: usize = 48;
const MAX_PYTHON: usize = 64;

pub struct State {
    pub api: Api,
    pub layout: Layout,
    /// Offset of the instruction array in a code object (3.11+).
    pub code_start: usize,
    pub unwinder: Unwinder,
    pub stacks: StackTable,
    pub live: LiveTable,
    /// Code objects referenced by stored stacks; the agent holds a reference to each.
    pub codes: FxHashSet<usize>,
    /// How creations are seen.
    pub creations: Creations,
    sampler: Sampler,
    /// Set when an object of this window took a sampled stack: the one in how many.
    pub sampled_every: Option<u32>,
    /// The objects tracked when the window began are marked [`BEFORE`].
    pub marked_before: bool,
    /// Watched refcounts and their writers.
    pub holds: Holds,
    /// Creation sites that the last snapshot wants watched in a holder run, with their
    /// group's stack in its capture.
    pub holder_sites: FxHashMap<u64, u32>,
    /// Old objects whose unexplained references the last snapshot wants watched.
    pub holder_objects: Vec<crate::snapshot::HolderObject>,
    /// Those the holder run under way watches.
    pub holder_chunk: Vec<crate::snapshot::HolderObject>,
    /// References found to every object when the window began.
    pub census: Option<Census>,
    /// Scratch for one capture, kept here so a capture does not clear 1.4 KB of stack.
    native: [u64; MAX_NATIVE],
    python: [PyFrameRef; MAX_PYTHON],
}

/// Where the agent learns that an object was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creations {
    /// Its block's allocation: the object's place in the block is inferred at the snapshot.
    Allocations,
    /// `PyRefTracer` CREATE events (3.13+).
    RefTracer,
    /// `_Py_NewReference`, redirected in libpython's GOT (up to 3.12).
    NewReference,
}

impl Creations {
    /// Each live block records where its object starts.
    pub fn seen(self) -> bool {
        self != Creations::Allocations
    }
}

pub static STATE: SpinLock<Option<State>> = SpinLock::new(None);
/// New objects are recorded only while this is set.
pub static TRACKING: AtomicBool = AtomicBool::new(false);
/// The measured run under way, part of each creation stack taken; 0 outside repetition.
pub static EPOCH: AtomicU16 = AtomicU16::new(0);

impl State {
    pub fn new(
        api: Api,
        layout: Layout,
        code_start: usize,
        unwinder: Unwinder,
        creations: Creations,
        holds: Holds,
    ) -> State {
        State {
            api,
            layout,
            code_start,
            unwinder,
            stacks: StackTable::default(),
            live: LiveTable::default(),
            codes: FxHashSet::default(),
            creations,
            sampler: Sampler::default(),
            sampled_every: None,
            marked_before: false,
            holds,
            holder_sites: FxHashMap::default(),
            holder_objects: Vec::new(),
            holder_chunk: Vec::new(),
            census: None,
            native: [0; MAX_NATIVE],
            python: [PyFrameRef::default(); MAX_PYTHON],
        }
    }

    /// The creation stack of an object of `shape` (its size or type), walked from `regs`
    /// unless sampling lets it take the last one walked for its kind.
    unsafe fn stack_for(&mut self, regs: Regs, shape: usize) -> u32 {
        let every = sampler::every();
        if every <= 1 {
            return self.capture(regs);
        }
        let top = &mut self.python[..1];
        top[0] = PyFrameRef::default();
        pyframes::walk(&self.api, &self.layout, self.code_start, top);
        let key = Kind {
            code: top[0].code,
            offset: top[0].offset,
            epoch: EPOCH.load(Relaxed),
            shape,
            depth: regs.sp,
        }
        .key();
        if let Some(stack) = self.sampler.reuse(key) {
            self.sampled_every = Some(every);
            return stack;
        }
        let stack = self.capture(regs);
        self.sampler.remember(key, stack, every);
        stack
    }

    /// Interns the stack of a trapped write, from its signal handler: nothing is allocated
    /// (the thread may be inside malloc), so a new stack takes the room reserved for it (see
    /// [`State::reserve_for_traps`]), or is not kept. Also says whether the write came from
    /// inside the measured call (see `StackTable::call_code`).
    unsafe fn capture_in_signal(&mut self, regs: Regs) -> (u32, bool) {
        let n = self.unwinder.walk_in_signal(regs, &mut self.native);
        let m = pyframes::walk(&self.api, &self.layout, self.code_start, &mut self.python);
        let call = self.stacks.call_code;
        let in_call = call == 0 || self.python[..m].iter().any(|f| f.code == call);
        // The Python frames end at the first code object the agent does not hold already:
        // taking a reference here could be lost, since the interrupted code may be in the
        // middle of changing that same refcount (a load and a store around the trapped one),
        // and a code object freed early would be read at the snapshot. Any code that ran in
        // the window made objects, so the agent holds nearly all.
        let codes = &self.codes;
        let m = self.python[..m]
            .iter()
            .position(|f| !codes.contains(&f.code))
            .unwrap_or(m);
        let mut is_new = false;
        let id = match self.stacks.intern_in_signal(
            &self.native[..n],
            &self.python[..m],
            EPOCH.load(Relaxed),
            &mut is_new,
        ) {
            Some(id) if id < BUFFER => id,
            _ => NO_STACK,
        };
        (id, in_call)
    }

    /// Room for the stacks that trapped writes may add while objects are watched.
    pub fn reserve_for_traps(&mut self) {
        self.stacks.reserve(1024, 64 * 1024);
    }

    /// Interns the stack that starts at `regs`.
    unsafe fn capture(&mut self, regs: Regs) -> u32 {
        let n = self.unwinder.walk(regs, &mut self.native);
        let m = pyframes::walk(&self.api, &self.layout, self.code_start, &mut self.python);
        let mut is_new = false;
        let id = self.stacks.intern(
            &self.native[..n],
            &self.python[..m],
            EPOCH.load(Relaxed),
            &mut is_new,
        );
        if id >= BUFFER {
            return NO_STACK;
        }
        if is_new {
            for f in &self.python[..m] {
                if self.codes.insert(f.code) {
                    (self.api.incref)(f.code as *mut PyObject);
                }
            }
        }
        id
    }
}

/// Installs the hooks around the OBJ and MEM domains, and the creation events that
/// `state.creations` asks for; the state records what took (a GOT redirect can find no slot).
///
/// # Safety
/// Called once, with the GIL held, inside a CPython process whose `Api` is `state.api`.
pub unsafe fn install(mut state: State) {
    let api_get = state.api.get_allocator;
    let api_set = state.api.set_allocator;
    let tracer = state.api.set_reftracer;
    let new_reference = state.api.new_reference;
    let wanted = state.creations;
    // Until a redirect has taken, the allocator hook takes the stacks.
    if wanted != Creations::RefTracer {
        state.creations = Creations::Allocations;
    }
    *STATE.lock() = Some(state);
    OWNER_PID.store(libc::getpid() as usize, Relaxed);
    // SAFETY: the hook has `sigaction`'s signature and calls it.
    unsafe { crate::got::redirect(c"sigaction", hook_sigaction as *const () as usize) };
    wrap_domain::<false>(cpython::DOMAIN_OBJ, api_get, api_set);
    wrap_domain::<true>(cpython::DOMAIN_MEM, api_get, api_set);
    match (wanted, tracer, new_reference) {
        (Creations::RefTracer, Some(set), _) => {
            set(Some(hook_reftracer), std::ptr::null_mut());
        }
        (Creations::NewReference, _, Some(original)) => {
            ORIGINAL_NEW_REFERENCE.store(original as usize, Relaxed);
            // With the GIL held, no object is created between the redirect and the switch.
            if redirect_new_reference() > 0 {
                // Extensions imported later, such as `_datetime`, call it from their own GOT.
                crate::got::redirect(c"dlopen", hook_dlopen as *const () as usize);
                if let Some(s) = STATE.lock().as_mut() {
                    s.creations = Creations::NewReference;
                }
            }
        }
        _ => {}
    }
}

/// The process the hooks were installed in.
static OWNER_PID: AtomicUsize = AtomicUsize::new(0);

/// `sigaction` for the interpreter (`signal.signal`): a program that takes SIGTRAP for itself
/// gets it with no breakpoint left, so none of refhunt's traps reaches its handler.
unsafe extern "C" fn hook_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // A child made with vfork (subprocess's) resets every handler while it shares this
    // process's memory, and must touch none of it: only the tracked process acts.
    // SAFETY: getpid has no preconditions.
    let ours = unsafe { libc::getpid() } as usize == OWNER_PID.load(Relaxed);
    if sig == libc::SIGTRAP && !act.is_null() && ours {
        if let Some(s) = STATE.try_lock().as_mut().and_then(|g| g.as_mut()) {
            s.holds.remove(crate::holds::OWN_HANDLER);
        }
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { libc::sigaction(sig, act, old) }
}

/// The interpreter's own `_Py_NewReference`, which the redirected calls still run first.
static ORIGINAL_NEW_REFERENCE: AtomicUsize = AtomicUsize::new(0);

/// Puts the hooks around one allocator domain; its original allocator becomes their context.
/// `BUFFERS`: the MEM domain, whose blocks are no objects (a list's items, a module's state,
/// an extension's own buffers) and are recorded without a stack.
///
/// # Safety
/// `get` and `set` are the interpreter's `PyMem_GetAllocator` and `PyMem_SetAllocator`, called
/// with the GIL held before any thread allocates from `domain` without it.
unsafe fn wrap_domain<const BUFFERS: bool>(
    domain: c_int,
    get: unsafe extern "C" fn(c_int, *mut Allocator),
    set: unsafe extern "C" fn(c_int, *mut Allocator),
) {
    let mut current = std::mem::MaybeUninit::<Allocator>::uninit();
    get(domain, current.as_mut_ptr());
    let original = Box::leak(Box::new(current.assume_init()));
    let mut ours = Allocator {
        ctx: original as *mut Allocator as *mut c_void,
        malloc: hook_malloc::<BUFFERS>,
        calloc: hook_calloc::<BUFFERS>,
        realloc: hook_realloc::<BUFFERS>,
        free: hook_free,
    };
    set(domain, &mut ours);
}

unsafe fn original<'a>(ctx: *mut c_void) -> &'a Allocator {
    &*(ctx as *const Allocator)
}

unsafe extern "C" fn hook_malloc<const BUFFERS: bool>(
    ctx: *mut c_void,
    size: usize,
) -> *mut c_void {
    let a = original(ctx);
    let p = (a.malloc)(a.ctx, size);
    if !p.is_null() && TRACKING.load(Relaxed) {
        on_alloc(p as usize, size, BUFFERS);
    }
    p
}

unsafe extern "C" fn hook_calloc<const BUFFERS: bool>(
    ctx: *mut c_void,
    n: usize,
    size: usize,
) -> *mut c_void {
    let a = original(ctx);
    let p = (a.calloc)(a.ctx, n, size);
    if !p.is_null() && TRACKING.load(Relaxed) {
        on_alloc(p as usize, n.saturating_mul(size), BUFFERS);
    }
    p
}

unsafe extern "C" fn hook_realloc<const BUFFERS: bool>(
    ctx: *mut c_void,
    old: *mut c_void,
    size: usize,
) -> *mut c_void {
    let a = original(ctx);
    let p = (a.realloc)(a.ctx, old, size);
    if p.is_null() {
        return p;
    }
    if old.is_null() {
        if TRACKING.load(Relaxed) {
            on_alloc(p as usize, size, BUFFERS);
        }
    } else {
        on_realloc(old as usize, p as usize, size);
    }
    p
}

unsafe extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    if !p.is_null() {
        on_free(p as usize);
    }
    let a = original(ctx);
    (a.free)(a.ctx, p)
}

/// Sends every module's calls to `_Py_NewReference` through the hook.
fn redirect_new_reference() -> usize {
    // SAFETY: the hook has `_Py_NewReference`'s signature and runs its original first.
    unsafe {
        crate::got::redirect(
            c"_Py_NewReference",
            hook_new_reference as *const () as usize,
        )
    }
}

/// `dlopen` for the interpreter's imports: the new module's calls to `_Py_NewReference` are
/// redirected before its init function runs.
unsafe extern "C" fn hook_dlopen(file: *const std::ffi::c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller's arguments, passed on unchanged.
    let handle = unsafe { libc::dlopen(file, flags) };
    if !handle.is_null() {
        redirect_new_reference();
    }
    handle
}

unsafe extern "C" fn hook_new_reference(op: *mut PyObject) {
    // SAFETY: set to the interpreter's `_Py_NewReference` before any call was redirected here.
    let original: unsafe extern "C" fn(*mut PyObject) =
        unsafe { std::mem::transmute(ORIGINAL_NEW_REFERENCE.load(Relaxed)) };
    // SAFETY: the interpreter called us as it would have called the original, GIL held.
    unsafe { original(op) };
    if TRACKING.load(Relaxed) {
        // SAFETY: `op` has its type set and its refcount initialized: a live object.
        unsafe { on_create(op as usize) };
    }
}

unsafe extern "C" fn hook_reftracer(op: *mut PyObject, event: c_int, _: *mut c_void) -> c_int {
    if event == cpython::REFTRACER_CREATE && TRACKING.load(Relaxed) {
        on_create(op as usize);
    }
    0
}

#[inline(never)]
unsafe fn on_alloc(block: usize, size: usize, buffer: bool) {
    let regs = here!();
    let Some(mut guard) = STATE.try_lock() else {
        return;
    };
    let Some(s) = guard.as_mut() else { return };
    let stack = if buffer {
        BUFFER
    } else if s.creations.seen() {
        NO_STACK
    } else {
        s.stack_for(regs, size)
    };
    s.live.insert(
        block,
        Block {
            stack,
            size: size.min(u32::MAX as usize) as u32,
            state: ALLOCATED,
            object_offset: 0,
        },
    );
}

unsafe fn on_realloc(old: usize, new: usize, size: usize) {
    let Some(mut guard) = STATE.try_lock() else {
        return;
    };
    let Some(s) = guard.as_mut() else { return };
    s.holds.forget(old);
    // A resized block keeps the site that first allocated it.
    if let Some(mut b) = s.live.remove(old) {
        b.size = size.min(u32::MAX as usize) as u32;
        s.live.insert(new, b);
    }
}

unsafe fn on_free(block: usize) {
    if let Some(s) = STATE.try_lock().as_mut().and_then(|g| g.as_mut()) {
        s.live.remove(block);
        s.holds.forget(block);
    }
}

/// Writes to a watched refcount that found the agent busy, and went unrecorded.
pub static LOST_WRITES: AtomicUsize = AtomicUsize::new(0);

/// A write of `delta` to the refcount that breakpoint `slot` watches, reported from the
/// SIGTRAP handler of the thread that wrote it, with the registers after the write.
///
/// # Safety
/// Called from the signal handler only: the registers are the interrupted thread's, whose
/// stack stays put while the walk runs.
pub unsafe fn on_refcount_write(slot: usize, delta: isize, pc: usize, sp: usize, bp: usize) {
    // Held: the write came from the agent itself, which never holds a reference it watches.
    let Some(mut guard) = STATE.try_lock() else {
        LOST_WRITES.fetch_add(1, Relaxed);
        return;
    };
    let Some(s) = guard.as_mut() else { return };
    // SAFETY: the caller's registers, of a thread that holds the GIL (it wrote a refcount).
    let (stack, in_call) = unsafe { s.capture_in_signal(Regs { pc, sp, bp }) };
    s.holds.on_write(slot, delta, stack, in_call);
}

#[inline(never)]
unsafe fn on_create(op: usize) {
    let regs = here!();
    let Some(mut guard) = STATE.try_lock() else {
        return;
    };
    let Some(s) = guard.as_mut() else { return };
    let tp = type_of(op);
    let offset = s.layout.preheader(type_flags(tp));
    let stack = s.stack_for(regs, tp);
    // A fresh block, or one handed out again by a freelist: either way, created here. A
    // block from before the window, reused from a freelist, is sized from its type.
    let mut allocated = false;
    s.live.upsert(op - offset, |old| Block {
        stack,
        size: match old {
            Some(b) if b.state != BEFORE => {
                allocated = true;
                b.size
            }
            _ => sized_from_type(tp, offset),
        },
        state: LIVE,
        object_offset: offset as u8,
    });
    // Only an object whose memory goes back through the hooks is watched (its block came
    // through them, or its type frees through the object allocator, as a freelist's objects
    // do in the end): its free is seen, so no breakpoint outlives it on memory that malloc
    // reuses.
    let frees = s.api.standard_frees;
    let watchable = || allocated || frees.contains(&read_usize(tp + cpython::TP_FREE));
    let (holds, stacks) = (&mut s.holds, &s.stacks);
    if holds.on_create(op - offset, op, stack, watchable, || {
        stacks.site_hash(stack)
    }) {
        s.reserve_for_traps();
    }
}

/// The bytes of an object whose allocation was not seen: its headers and its type's size.
unsafe fn sized_from_type(tp: usize, offset: usize) -> u32 {
    (offset + *((tp + cpython::TP_BASICSIZE) as *const isize) as usize) as u32
}

/// Whether refhunt's reference tracer is still the installed one.
pub unsafe fn tracer_is_ours(api: &Api) -> bool {
    match api.get_reftracer {
        Some(get) => {
            get(std::ptr::null_mut()).map(|f| f as *const () as usize)
                == Some(hook_reftracer as *const () as usize)
        }
        None => false,
    }
}

/// Records the objects the collector tracks as there before the window, unless a block is
/// recorded at their place already, for the self-check at the snapshot.
///
/// # Safety
/// `objects` are live objects; the GIL is held.
pub unsafe fn mark_before(objects: &[usize]) {
    let mut guard = STATE.lock();
    let Some(s) = guard.as_mut() else {
        return;
    };
    for &op in objects {
        let offset = s.layout.preheader(type_flags(type_of(op)));
        s.live.upsert(op - offset, |old| {
            old.unwrap_or(Block {
                stack: NO_STACK,
                size: sized_from_type(type_of(op), offset),
                state: BEFORE,
                object_offset: offset as u8,
            })
        });
    }
    s.marked_before = true;
}

/// Drops every recorded block: the start of a new window, in which objects are watched as
/// they are made (see [`crate::holds`]).
pub fn clear_window() {
    if let Some(s) = STATE.lock().as_mut() {
        s.live = LiveTable::default();
        s.sampled_every = None;
        s.marked_before = false;
        s.holds.clear(crate::holds::Arming::Creations);
        s.census = None;
        LOST_WRITES.store(0, Relaxed);
    }
}
