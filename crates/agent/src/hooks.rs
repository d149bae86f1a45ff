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

use crate::cpython::{self, Allocator, Api, Layout, Object, PyObject, Type};
use crate::holds::{Arming, Holds};
use crate::live::{Block, LiveTable, BEFORE, BUFFER, LIVE, NATIVE, NO_STACK};
use crate::lock::{Hooked, SpinLock};
use crate::native::Alloc;
use crate::pyframes::{self, PyFrameRef};
use crate::sampler::{self, Kind, Sampler};
use crate::stacks::{StackTable, Stamp};
use crate::unwind::{here, Regs, Unwinder};
use crate::windows::{Resume, Windows};
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering::Relaxed};

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
    /// The open windows, innermost last, each with its census of references.
    pub windows: Windows,
    /// The last screen's word lists, emptied: a pass of the next reuses their memory rather
    /// than fault in megabytes of fresh pages.
    pub screen_spare: crate::screen::Baseline,
    /// `[start, end)` of the module that holds the interpreter: what it allocates for itself
    /// is not C code's own memory.
    pub interpreter: (usize, usize),
    /// Native blocks recorded and not freed, about: the snapshot skips their analysis at 0.
    pub native_blocks: usize,
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
/// The innermost open window's serial (see [`crate::windows`]), part of each stack taken.
pub static WINDOW: AtomicU32 = AtomicU32::new(0);

/// The window and run a stack taken now belongs to.
fn stamp() -> Stamp {
    Stamp {
        run: EPOCH.load(Relaxed),
        window: WINDOW.load(Relaxed),
    }
}

impl State {
    pub fn new(
        api: Api,
        layout: Layout,
        code_start: usize,
        unwinder: Unwinder,
        creations: Creations,
        holds: Holds,
        interpreter: (usize, usize),
    ) -> State {
        State {
            interpreter,
            native_blocks: 0,
            api,
            layout,
            code_start,
            unwinder,
            stacks: StackTable::new(interpreter),
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
            screen_spare: Default::default(),
            windows: Windows::default(),
            native: [0; MAX_NATIVE],
            python: [PyFrameRef::default(); MAX_PYTHON],
        }
    }

    /// The creation stack of an object of `shape` (its size or type), or of a native block
    /// of that size from allocator `alloc`, walked from `regs` unless sampling lets it take
    /// the last one walked for its kind. Python frames are read only on a thread that holds
    /// the GIL (`gil`): on another, the frame list may change under the walk.
    ///
    /// # Safety
    /// `gil` is true only on a thread that holds the GIL; `regs` are this thread's, taken by
    /// `here!()` in a caller that is still running.
    unsafe fn stack_for(&mut self, regs: Regs, shape: usize, alloc: Alloc, gil: bool) -> u32 {
        let every = sampler::every();
        if every <= 1 {
            // SAFETY: the caller's contract is `capture`'s.
            return unsafe { self.capture(regs, alloc, gil) };
        }
        let top = &mut self.python[..1];
        top[0] = PyFrameRef::default();
        if gil {
            // SAFETY: this thread holds the GIL (caller's contract).
            unsafe { pyframes::walk(&self.api, &self.layout, self.code_start, top) };
        }
        let key = Kind {
            code: top[0].code,
            offset: top[0].offset,
            // The sampler is emptied when the window changes (`enter`).
            epoch: EPOCH.load(Relaxed),
            shape: shape ^ (alloc as usize) << 56,
            depth: regs.sp,
        }
        .key();
        if let Some(stack) = self.sampler.reuse(key) {
            self.sampled_every = Some(every);
            return stack;
        }
        // SAFETY: the caller's contract is `capture`'s.
        let stack = unsafe { self.capture(regs, alloc, gil) };
        self.sampler.remember(key, stack, every);
        stack
    }

    /// Interns the stack of a trapped write, from its signal handler: nothing is allocated
    /// (the thread may be inside malloc), so a new stack takes the room reserved for it (see
    /// [`State::reserve_for_traps`]), or is not kept. Also says whether the write came from
    /// inside the measured call (see `StackTable::call_code`).
    ///
    /// # Safety
    /// Called from the SIGTRAP handler of a thread that holds the GIL, with the registers of
    /// its interrupted code, whose stack stays put while the walk runs.
    unsafe fn capture_in_signal(&mut self, regs: Regs) -> (u32, bool) {
        let n = self.unwinder.walk_in_signal(regs, &mut self.native);
        // SAFETY: this thread holds the GIL (caller's contract), so its frame list stays put.
        let m =
            unsafe { pyframes::walk(&self.api, &self.layout, self.code_start, &mut self.python) };
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
            stamp(),
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

    /// Interns the stack that starts at `regs`, with its Python frames if `gil`.
    ///
    /// # Safety
    /// As for [`State::stack_for`].
    unsafe fn capture(&mut self, regs: Regs, alloc: Alloc, gil: bool) -> u32 {
        let n = self.unwinder.walk(regs, &mut self.native);
        let m = if gil {
            // SAFETY: this thread holds the GIL (caller's contract), so its frame list stays put.
            unsafe { pyframes::walk(&self.api, &self.layout, self.code_start, &mut self.python) }
        } else {
            0
        };
        let mut is_new = false;
        let id = self.stacks.intern(
            &self.native[..n],
            &self.python[..m],
            stamp(),
            alloc as u8,
            &mut is_new,
        );
        if id >= BUFFER {
            return NO_STACK;
        }
        if is_new {
            for f in &self.python[..m] {
                if self.codes.insert(f.code) {
                    // SAFETY: `f.code` is the code object of a frame this thread runs, live,
                    // and the GIL is held (`m` is 0 without it).
                    unsafe { (self.api.incref)(f.code as *mut PyObject) };
                }
            }
        }
        id
    }
}

/// Installs the hooks around the allocator domains and the malloc family, and the creation
/// events that `state.creations` asks for; the state records what took (a GOT redirect can
/// find no slot).
///
/// # Safety
/// Called once, with the GIL held, inside a CPython process whose `Api` is `state.api`.
pub unsafe fn install(mut state: State, native: bool) {
    let api_get = state.api.get_allocator;
    let api_set = state.api.set_allocator;
    let tracer = state.api.set_reftracer;
    let new_reference = state.api.new_reference;
    let wanted = state.creations;
    // Until a redirect has taken, the allocator hook takes the stacks.
    if wanted != Creations::RefTracer {
        state.creations = Creations::Allocations;
    }
    let interpreter = state.interpreter;
    INTERPRETER.0.store(interpreter.0, Relaxed);
    INTERPRETER.1.store(interpreter.1, Relaxed);
    *STATE.lock() = Some(state);
    STATE_STARTED.store(true, Relaxed);
    // SAFETY: getpid has no preconditions.
    OWNER_PID.store(unsafe { libc::getpid() } as usize, Relaxed);
    // SAFETY: the hook has `sigaction`'s signature and calls it.
    unsafe { crate::got::redirect(c"sigaction", hook_sigaction as *const () as usize) };
    // SAFETY: `api_get` and `api_set` are this interpreter's `PyMem_GetAllocator` and
    // `PyMem_SetAllocator` (the state's `Api`), called with the GIL held (caller's contract);
    // the state the hooks record into is in place.
    unsafe {
        wrap_domain(cpython::DOMAIN_OBJ, Domain::Obj, api_get, api_set);
        wrap_domain(cpython::DOMAIN_MEM, Domain::Mem, api_get, api_set);
    }
    if native {
        // SAFETY: `api_get` and `api_set` are this interpreter's, called with the GIL held, as
        // for the OBJ and MEM domains; the RAW domain is wrapped before the malloc family is
        // redirected, so that the hooks `malloc::install` needs are installed.
        unsafe {
            wrap_domain(cpython::DOMAIN_RAW, Domain::Raw, api_get, api_set);
            crate::malloc::install(interpreter);
        }
    }
    match (wanted, tracer, new_reference) {
        (Creations::RefTracer, Some(set), _) => {
            // SAFETY: `set` is `PyRefTracer_SetTracer`, called with the GIL held; the tracer
            // needs no data.
            unsafe { set(Some(hook_reftracer), std::ptr::null_mut()) };
        }
        (Creations::NewReference, _, Some(original)) => {
            ORIGINAL_NEW_REFERENCE.store(original as usize, Relaxed);
            // With the GIL held, no object is created between the redirect and the switch.
            if redirect_new_reference() > 0 {
                if let Some(s) = STATE.lock().as_mut() {
                    s.creations = Creations::NewReference;
                }
            }
        }
        _ => {}
    }
    // Extensions imported later, such as `_datetime`, call these from their own GOT.
    // SAFETY: the hook has `dlopen`'s signature and calls it, from any thread.
    unsafe { crate::got::redirect(c"dlopen", hook_dlopen as *const () as usize) };
}

/// `State::interpreter`, where the hooks read it without the lock.
static INTERPRETER: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));

/// The process the hooks were installed in.
static OWNER_PID: AtomicUsize = AtomicUsize::new(0);

/// `sigaction` for the interpreter (`signal.signal`): a program that takes SIGTRAP for itself
/// gets it with no breakpoint left, so none of refhunt's traps reaches its handler.
///
/// # Safety
/// Called as `sigaction` is, with its arguments.
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
    unsafe { (crate::libc_fns::get().sigaction)(sig, act, old) }
}

/// The interpreter's own `_Py_NewReference`, which the redirected calls still run first.
static ORIGINAL_NEW_REFERENCE: AtomicUsize = AtomicUsize::new(0);

/// Python's three allocator domains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// `PyMem_RawMalloc`: callable without the GIL; only C code's own calls are recorded.
    Raw,
    /// `PyMem_Malloc`: the interpreter's buffers (a list's items, a dict's keys), which
    /// hold no object, and C code's own.
    Mem,
    /// `PyObject_Malloc`: objects, and C code's own blocks.
    Obj,
}

/// A domain's hook: its original allocator, and which domain it is.
#[repr(C)]
struct DomainHook {
    original: Allocator,
    domain: Domain,
}

/// Puts the hooks around one allocator domain; the original allocator goes in their context.
///
/// # Safety
/// `get` and `set` are the interpreter's `PyMem_GetAllocator` and `PyMem_SetAllocator`, called
/// with the GIL held; the hooks are thread-safe, as the RAW domain needs.
unsafe fn wrap_domain(
    id: c_int,
    domain: Domain,
    get: unsafe extern "C" fn(c_int, *mut Allocator),
    set: unsafe extern "C" fn(c_int, *mut Allocator),
) {
    let mut current = std::mem::MaybeUninit::<Allocator>::uninit();
    // SAFETY: `get` fills the allocator of a valid domain.
    let original = unsafe {
        get(id, current.as_mut_ptr());
        current.assume_init()
    };
    let hook = Box::leak(Box::new(DomainHook { original, domain }));
    if domain == Domain::Raw {
        RAW_HOOK.store(hook, Relaxed);
    }
    let mut ours = Allocator {
        ctx: hook as *mut DomainHook as *mut c_void,
        malloc: refhunt_domain_malloc,
        calloc: refhunt_domain_calloc,
        realloc: refhunt_domain_realloc,
        free: domain_free,
    };
    // SAFETY: `set` installs an allocator for a valid domain (caller's contract); the hook it
    // points to is leaked, so it lives for the process.
    unsafe { set(id, &mut ours) };
}

// The domain hooks' entry points. `PyMem_Malloc` and its kin end in a tail call to the hook,
// so the return address on entry is their caller's: each entry passes it on as one more
// argument, in the next argument register, and jumps to its hook with the stack untouched,
// so that the hook returns straight to that caller.
core::arch::global_asm!(
    ".pushsection .text.refhunt_domain_entries,\"ax\",@progbits",
    ".p2align 4",
    ".hidden refhunt_domain_malloc",
    ".globl refhunt_domain_malloc",
    ".type refhunt_domain_malloc,@function",
    "refhunt_domain_malloc:",
    ".cfi_startproc",
    "mov rdx, [rsp]",
    "jmp {malloc}",
    ".cfi_endproc",
    ".size refhunt_domain_malloc, . - refhunt_domain_malloc",
    ".p2align 4",
    ".hidden refhunt_domain_calloc",
    ".globl refhunt_domain_calloc",
    ".type refhunt_domain_calloc,@function",
    "refhunt_domain_calloc:",
    ".cfi_startproc",
    "mov rcx, [rsp]",
    "jmp {calloc}",
    ".cfi_endproc",
    ".size refhunt_domain_calloc, . - refhunt_domain_calloc",
    ".p2align 4",
    ".hidden refhunt_domain_realloc",
    ".globl refhunt_domain_realloc",
    ".type refhunt_domain_realloc,@function",
    "refhunt_domain_realloc:",
    ".cfi_startproc",
    "mov rcx, [rsp]",
    "jmp {realloc}",
    ".cfi_endproc",
    ".size refhunt_domain_realloc, . - refhunt_domain_realloc",
    ".popsection",
    malloc = sym domain_malloc,
    calloc = sym domain_calloc,
    realloc = sym domain_realloc,
);

extern "C" {
    fn refhunt_domain_malloc(ctx: *mut c_void, size: usize) -> *mut c_void;
    fn refhunt_domain_calloc(ctx: *mut c_void, n: usize, size: usize) -> *mut c_void;
    fn refhunt_domain_realloc(ctx: *mut c_void, old: *mut c_void, size: usize) -> *mut c_void;
}

/// The RAW domain's hook. That domain is called without the GIL, so a thread may read the
/// new allocator's functions with the old context, which is null for CPython's own.
static RAW_HOOK: std::sync::atomic::AtomicPtr<DomainHook> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// # Safety
/// `ctx` is a [`DomainHook`] that [`wrap_domain`] made, or null while the RAW domain's is
/// being installed.
unsafe fn hook_of<'a>(ctx: *mut c_void) -> &'a DomainHook {
    let ctx = if ctx.is_null() {
        RAW_HOOK.load(Relaxed) as *mut c_void
    } else {
        ctx
    };
    // SAFETY: `ctx` is a `DomainHook` that `wrap_domain` made (caller's contract), or null,
    // replaced by RAW_HOOK, which is set before the RAW domain's hooks are installed; hooks
    // are leaked, never freed.
    unsafe { &*(ctx as *const DomainHook) }
}

/// The domain hooks' `malloc`, reached through `refhunt_domain_malloc`.
///
/// # Safety
/// Called by the interpreter as a domain's `malloc`, with the context [`wrap_domain`]
/// installed (or null, for the RAW domain while it is installed); `caller` is the return
/// address the entry passes on.
unsafe extern "C" fn domain_malloc(ctx: *mut c_void, size: usize, caller: usize) -> *mut c_void {
    // SAFETY: the interpreter calls us with the context we installed.
    let h = unsafe { hook_of(ctx) };
    // SAFETY: the original allocator, called as the interpreter would.
    let p = unsafe { (h.original.malloc)(h.original.ctx, size) };
    // SAFETY: `p` was just allocated, or is null.
    unsafe { allocated(h, p, size, caller, 0) }
}

/// The domain hooks' `calloc`, reached through `refhunt_domain_calloc`.
///
/// # Safety
/// As for [`domain_malloc`], as a domain's `calloc`.
unsafe extern "C" fn domain_calloc(
    ctx: *mut c_void,
    n: usize,
    size: usize,
    caller: usize,
) -> *mut c_void {
    // SAFETY: the interpreter calls us with the context we installed (caller's contract).
    let h = unsafe { hook_of(ctx) };
    // SAFETY: the original allocator, called with its own context as the interpreter would.
    let p = unsafe { (h.original.calloc)(h.original.ctx, n, size) };
    // SAFETY: `p` was just allocated, for `n * size` bytes, or is null.
    unsafe { allocated(h, p, n.saturating_mul(size), caller, 1) }
}

/// The domain hooks' `realloc`, reached through `refhunt_domain_realloc`.
///
/// # Safety
/// As for [`domain_malloc`], as a domain's `realloc`: `old` is null or a live block of the
/// domain.
unsafe extern "C" fn domain_realloc(
    ctx: *mut c_void,
    old: *mut c_void,
    size: usize,
    caller: usize,
) -> *mut c_void {
    // SAFETY: the interpreter calls us with the context we installed (caller's contract).
    let h = unsafe { hook_of(ctx) };
    if old.is_null() {
        // SAFETY: the original allocator, called with its own context as the interpreter
        // would; with a null `old` it allocates.
        let p = unsafe { (h.original.realloc)(h.original.ctx, old, size) };
        // SAFETY: `p` was just allocated, or is null.
        return unsafe { allocated(h, p, size, caller, 2) };
    }
    // SAFETY: `old` is a live block of this domain, resized by its own allocator.
    unsafe {
        resize(old as usize, size, || {
            (h.original.realloc)(h.original.ctx, old, size)
        })
    }
}

/// Records block `p` of `size` bytes that hook `h` allocated for `caller` with the `op`th of
/// malloc, calloc and realloc; returns `p`.
///
/// # Safety
/// `p` is null or a block just allocated.
unsafe fn allocated(
    h: &DomainHook,
    p: *mut c_void,
    size: usize,
    caller: usize,
    op: usize,
) -> *mut c_void {
    if !p.is_null() && TRACKING.load(Relaxed) {
        let alloc = Alloc::of_domain(h.domain as usize, op);
        // SAFETY: `p` is a block just allocated for `size` bytes by `h`'s domain (caller's
        // contract).
        unsafe { on_domain_alloc(h.domain, p as usize, size, caller, alloc) };
    }
    p
}

/// The domain hooks' `free`.
///
/// # Safety
/// As for [`domain_malloc`], as a domain's `free`: `p` is null or a live block of the domain.
unsafe extern "C" fn domain_free(ctx: *mut c_void, p: *mut c_void) {
    if !p.is_null() {
        on_free(p as usize);
    }
    // SAFETY: the interpreter calls us with the context we installed (caller's contract).
    let h = unsafe { hook_of(ctx) };
    // SAFETY: the original allocator frees its own block.
    unsafe { (h.original.free)(h.original.ctx, p) }
}

/// Resizes the live block `old` with `realloc`, which returns the new block or null (`old`
/// kept). Its record is taken out before and put back after, so that no other thread's
/// block at `old`, once freed, is mistaken for it; it keeps the site that first allocated it.
///
/// # Safety
/// `realloc` resizes `old` as C's `realloc` does.
pub unsafe fn resize(
    old: usize,
    size: usize,
    realloc: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    let record = with_state(|s| {
        s.holds.forget(old);
        s.live.remove(old)
    })
    .flatten();
    let p = realloc();
    if let Some(mut b) = record {
        let at = if p.is_null() { old } else { p as usize };
        if !p.is_null() || size == 0 {
            b.size = size.min(u32::MAX as usize) as u32;
        }
        // glibc's realloc(p, 0) frees p and returns null.
        if !(p.is_null() && size == 0) {
            with_state(|s| s.live.insert(at, b));
        }
    }
    p
}

/// Runs `f` on the state under its lock, after the frees deferred while this thread held it;
/// None when this thread holds it already, or tracking never started.
#[inline]
pub fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    match STATE.lock_for_hook() {
        Hooked::Locked(mut guard) => {
            let s = guard.as_mut()?;
            DEFERRED.apply(&mut s.live);
            Some(f(s))
        }
        Hooked::Reentered => None,
    }
}

/// Frees that came while their own thread held the state (the agent releasing memory, a
/// snapshot's decref), applied by the next hook that takes the lock. Only a holder of the
/// state's lock touches it.
struct Deferred {
    frees: std::cell::UnsafeCell<(*mut usize, usize)>,
}

// SAFETY: only the holder of `STATE`'s lock reads or writes `frees`.
unsafe impl Sync for Deferred {}

/// Room for this many deferred frees; more are counted in [`LOST_FREES`].
const DEFERRED_FREES: usize = 1 << 20;

static DEFERRED: Deferred = Deferred {
    frees: std::cell::UnsafeCell::new((std::ptr::null_mut(), 0)),
};

/// Frees that could not be deferred: their blocks may be reported as still allocated.
pub static LOST_FREES: AtomicUsize = AtomicUsize::new(0);

impl Deferred {
    /// # Safety
    /// This thread holds `STATE`'s lock.
    unsafe fn push(&self, block: usize) {
        // SAFETY: the caller holds the lock, so no other access is under way.
        let (slots, len) = unsafe { &mut *self.frees.get() };
        if slots.is_null() {
            *slots = crate::live::map(DEFERRED_FREES * 8);
        }
        if slots.is_null() || *len == DEFERRED_FREES {
            LOST_FREES.fetch_add(1, Relaxed);
            return;
        }
        // SAFETY: `*len` is below the room mapped.
        unsafe { *slots.add(*len) = block };
        *len += 1;
    }

    /// Forgets the deferred frees: the live table they would apply to is gone.
    ///
    /// # Safety
    /// This thread holds `STATE`'s lock.
    unsafe fn clear(&self) {
        // SAFETY: this thread holds `STATE`'s lock (caller's contract), so no other access
        // to `frees` is under way.
        unsafe { (*self.frees.get()).1 = 0 };
    }

    /// Takes the deferred frees' blocks out of `live`; called under the lock.
    fn apply(&self, live: &mut LiveTable) {
        // SAFETY: `with_state`, the only caller, holds the lock.
        let (slots, len) = unsafe { &mut *self.frees.get() };
        for i in 0..std::mem::take(len) {
            // SAFETY: the first `len` slots were written.
            live.remove(unsafe { *slots.add(i) });
        }
    }
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

/// `dlopen` for the interpreter's imports and ctypes: the new modules' calls to
/// `_Py_NewReference` and to the malloc family are redirected before their init runs.
///
/// # Safety
/// Called as `dlopen` is, with its arguments.
unsafe extern "C" fn hook_dlopen(file: *const std::ffi::c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller's arguments, passed on unchanged.
    let handle = unsafe { (crate::libc_fns::get().dlopen)(file, flags) };
    if !handle.is_null() {
        if ORIGINAL_NEW_REFERENCE.load(Relaxed) != 0 {
            redirect_new_reference();
        }
        crate::malloc::redirect_loaded();
    }
    handle
}

/// `_Py_NewReference`, as the redirected GOT slots call it.
///
/// # Safety
/// Called as `_Py_NewReference` is: `op` is a new object whose type is set, and the GIL is
/// held.
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

/// The reference tracer (3.13+).
///
/// # Safety
/// Called by the interpreter as a `PyRefTracer`, with the GIL held: a CREATE event's `op` is
/// a new, live object.
unsafe extern "C" fn hook_reftracer(op: *mut PyObject, event: c_int, _: *mut c_void) -> c_int {
    if event == cpython::REFTRACER_CREATE && TRACKING.load(Relaxed) {
        // SAFETY: a CREATE event's `op` is a new, live object, and the GIL is held (caller's
        // contract).
        unsafe { on_create(op as usize) };
    }
    let passed_on = PASSED_ON.load(Relaxed);
    if passed_on != 0 {
        // SAFETY: tracemalloc's tracer (see `reclaim_tracer`), called as the interpreter would
        // call it, GIL held; it takes no data.
        unsafe {
            let tracer: cpython::RefTracer = std::mem::transmute(passed_on);
            tracer(op, event, std::ptr::null_mut());
        }
    }
    0
}

/// A block from one of Python's domains, allocated for `caller`: the interpreter's own
/// buffers and objects as before, C code's own blocks as native ones.
///
/// # Safety
/// `block` was just allocated, for `size` bytes, by `domain`'s original allocator; for the
/// MEM and OBJ domains the GIL is held.
#[inline(never)]
unsafe fn on_domain_alloc(domain: Domain, block: usize, size: usize, caller: usize, alloc: Alloc) {
    let own = (INTERPRETER.0.load(Relaxed)..INTERPRETER.1.load(Relaxed)).contains(&caller);
    // The interpreter's raw blocks are its own, and not recorded: no need for the lock.
    if domain == Domain::Raw && own {
        return;
    }
    let regs = here!();
    with_state(|s| {
        let stack = match domain {
            Domain::Mem if own => BUFFER,
            // Without creation events, every block of the object domain may hold an object.
            Domain::Obj if own || !s.creations.seen() => {
                if s.creations.seen() {
                    NO_STACK
                } else {
                    // SAFETY: the OBJ domain is called with the GIL held (caller's contract);
                    // `regs` are this thread's, from `here!()` above.
                    unsafe { s.stack_for(regs, size, Alloc::Object, true) }
                }
            }
            _ => {
                // The RAW domain may be called without the GIL, as a C thread's
                // `PyMem_RawMalloc` is: its Python frames are read only if it holds it.
                // SAFETY: `PyGILState_Check` may be called on any thread.
                let gil = domain != Domain::Raw || unsafe { (s.api.gil_check)() } != 0;
                // SAFETY: the MEM and OBJ domains are called with the GIL held (caller's
                // contract), and `gil` says whether a RAW caller holds it; `regs` are this
                // thread's, from `here!()` above.
                return unsafe { record_native(s, regs, block, size, alloc, gil) };
            }
        };
        s.live.insert(block, Block::allocated(stack, size, 0));
    });
}

/// A native block: C code's own memory, recorded with its stack.
///
/// # Safety
/// As for [`State::stack_for`]: `gil` is true only on a thread that holds the GIL, and `regs`
/// are this thread's, taken by `here!()` in a caller that is still running.
pub unsafe fn record_native(
    s: &mut State,
    regs: Regs,
    block: usize,
    size: usize,
    alloc: Alloc,
    gil: bool,
) {
    // SAFETY: the caller's contract is `stack_for`'s.
    let stack = unsafe { s.stack_for(regs, size, alloc, gil) };
    s.native_blocks += 1;
    s.live.insert(block, Block::allocated(stack, size, NATIVE));
}

/// A freed block: never lost, even when another thread holds the state (it is waited for)
/// or this one does (it is deferred).
pub fn on_free(block: usize) {
    let done = with_state(|s| {
        if s.live.remove(block).is_some_and(|b| b.is_native()) {
            s.native_blocks = s.native_blocks.saturating_sub(1);
        }
        s.holds.forget(block);
    });
    if done.is_none() && STATE_STARTED.load(Relaxed) {
        // SAFETY: `with_state` found this thread holding the lock.
        unsafe { DEFERRED.push(block) };
    }
}

/// Set once the state exists: before that, nothing is recorded that a free must remove.
pub static STATE_STARTED: AtomicBool = AtomicBool::new(false);

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

/// A new object: its record and creation stack, and a watch if one is wanted.
///
/// # Safety
/// `op` is a new, live object whose type is set; the GIL is held.
#[inline(never)]
unsafe fn on_create(op: usize) {
    let regs = here!();
    // SAFETY: the caller's contract is `create`'s; `regs` are this thread's, from here.
    with_state(|s| unsafe { create(s, regs, op) });
}

/// The body of [`on_create`], under the state's lock.
///
/// # Safety
/// As for [`on_create`]; `regs` are this thread's, taken by `here!()` in a caller that is
/// still running.
unsafe fn create(s: &mut State, regs: Regs, op: usize) {
    // SAFETY: `op` is a live object (caller's contract).
    let tp = unsafe { Object::new(op) }.tp();
    let offset = tp.preheader(&s.layout);
    // SAFETY: the GIL is held and `regs` are this thread's (caller's contract).
    let stack = unsafe { s.stack_for(regs, tp.addr(), Alloc::Object, true) };
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
    let watchable = || allocated || frees.contains(&tp.free());
    let (holds, stacks) = (&mut s.holds, &s.stacks);
    // SAFETY: `op` is the new, live object (caller's contract).
    if unsafe {
        holds.on_create(op - offset, op, stack, watchable, || {
            stacks.site_hash(stack)
        })
    } {
        s.reserve_for_traps();
    }
}

/// The bytes of an object whose allocation was not seen: its headers and its type's size.
fn sized_from_type(tp: Type, offset: usize) -> u32 {
    (offset + tp.basicsize()) as u32
}

/// Whether refhunt's reference tracer is still the installed one.
///
/// # Safety
/// The GIL is held.
pub unsafe fn tracer_is_ours(api: &Api) -> bool {
    match api.get_reftracer {
        Some(get) => {
            // SAFETY: `get` is `PyRefTracer_GetTracer`, called with the GIL held (caller's
            // contract); it may be passed null for the data it would hand back.
            unsafe { get(std::ptr::null_mut()) }.map(|f| f as *const () as usize)
                == Some(hook_reftracer as *const () as usize)
        }
        None => false,
    }
}

/// Puts refhunt's reference tracer back where tracemalloc took it, as a tracked run starts.
/// `tracemalloc.start()` puts its own in place of refhunt's; from 3.14 `stop()` leaves none,
/// and 3.13.0 to 3.13.2 leave theirs, inert. Either way every run after a test that used
/// tracemalloc saw no object made (msgpack's suite showed it: Unpackers made unseen, their
/// buffers reported as native leaks). tracemalloc's tracer, known by its name in the
/// interpreter's full symbol table, gets every event refhunt's does (see [`hook_reftracer`]),
/// so tracemalloc loses nothing while it traces. Another tool's tracer is left to it; the
/// window's capture says so.
///
/// The state's lock is not held here: finding tracemalloc's tracer walks the loader's list
/// of modules, whose lock a thread in `dlopen` may hold while its frees wait for the state.
///
/// # Safety
/// The GIL is held.
pub unsafe fn reclaim_tracer() {
    let facts = STATE.lock().as_ref().and_then(|s| {
        let by_tracer = s.creations == Creations::RefTracer;
        Some((s.api.get_reftracer?, s.api.set_reftracer?, s.interpreter.0)).filter(|_| by_tracer)
    });
    let Some((get, set, interpreter)) = facts else {
        return;
    };
    // SAFETY: `PyRefTracer_GetTracer`, called with the GIL held (caller's contract); it may
    // be passed null for the data it would hand back.
    let current = unsafe { get(std::ptr::null_mut()) }.map_or(0, |f| f as *const () as usize);
    if current == hook_reftracer as *const () as usize {
        return;
    }
    if current != 0 {
        let tracemalloc = *TRACEMALLOC_TRACER.get_or_init(|| {
            crate::modules::loaded()
                .iter()
                .find(|m| m.start == interpreter)
                .and_then(|m| crate::elf_symbols::local_function(m, "_PyTraceMalloc_TraceRef"))
                .unwrap_or(0)
        });
        if current != tracemalloc {
            return;
        }
    }
    PASSED_ON.store(current, Relaxed);
    // SAFETY: `PyRefTracer_SetTracer`, called with the GIL held (caller's contract); refhunt's
    // tracer needs no data.
    unsafe { set(Some(hook_reftracer), std::ptr::null_mut()) };
}

/// `_PyTraceMalloc_TraceRef`, tracemalloc's tracer, where the interpreter's symbol table names
/// it (0 otherwise).
static TRACEMALLOC_TRACER: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// tracemalloc's tracer while refhunt's stands in its place (0: none). It is a function of the
/// interpreter's own, which needs no data and checks whether tracemalloc traces.
static PASSED_ON: AtomicUsize = AtomicUsize::new(0);

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
        // SAFETY: `op` is a live object (caller's contract).
        let tp = unsafe { Object::new(op) }.tp();
        let offset = tp.preheader(&s.layout);
        s.live.upsert(op - offset, |old| {
            old.unwrap_or(Block {
                stack: NO_STACK,
                size: sized_from_type(tp, offset),
                state: BEFORE,
                object_offset: offset as u8,
            })
        });
    }
    s.marked_before = true;
}

/// Opens a window inside the innermost one (see [`crate::windows`]) and pauses tracking. An
/// outermost window starts with nothing recorded; in every window, objects are watched as
/// they are made (see [`crate::holds`]), so an enclosing one loses what it watched.
pub fn open_window() {
    let mut guard = STATE.lock();
    let Some(s) = guard.as_mut() else {
        return;
    };
    let resume = Resume {
        run: EPOCH.load(Relaxed),
        tracking: TRACKING.swap(false, Relaxed),
        watching: matches!(s.holds.arming, Arming::Creations),
    };
    let (serial, nested) = s.windows.open(resume);
    if !nested {
        forget_recorded(s);
    }
    s.holds.clear(Arming::Creations);
    s.marked_before = false;
    EPOCH.store(0, Relaxed);
    enter(s, serial);
}

/// Closes the innermost window: the enclosing one, if any, goes on as it was when this one
/// opened.
pub fn close_window() {
    let mut guard = STATE.lock();
    let Some(s) = guard.as_mut() else {
        return;
    };
    let Some((outer, resume)) = s.windows.close() else {
        return;
    };
    s.holds.clear(if resume.watching {
        Arming::Creations
    } else {
        Arming::Off
    });
    EPOCH.store(resume.run, Relaxed);
    enter(s, outer);
    TRACKING.store(resume.tracking, Relaxed);
}

/// Stacks are stamped with `serial` from here; a kind's last stack may be another window's,
/// so the sampler starts empty.
fn enter(s: &mut State, serial: u32) {
    s.sampler = Sampler::default();
    WINDOW.store(serial, Relaxed);
}

/// Drops every recorded block, and the stacks they were made at.
fn forget_recorded(s: &mut State) {
    // SAFETY: the lock is held.
    unsafe { DEFERRED.clear() };
    s.live = LiveTable::default();
    s.stacks.clear();
    s.native_blocks = 0;
    s.sampled_every = None;
    LOST_WRITES.store(0, Relaxed);
}

/// A forked child starts with nothing recorded and no window.
pub fn forget_in_child() {
    if let Some(s) = STATE.lock().as_mut() {
        s.holds.forget_in_child();
        s.windows.forget();
        forget_recorded(s);
        s.marked_before = false;
        enter(s, 0);
    }
    EPOCH.store(0, Relaxed);
}
