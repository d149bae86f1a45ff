//! The hooks: a wrapper around Python's object allocator, and on 3.13+ a `PyRefTracer`.
//!
//! Up to 3.12 an object's creation is its block's allocation, so the stack is taken in the
//! allocator hook. From 3.13 the stack is taken at the tracer's CREATE event instead, which
//! also sees objects handed out again by a freelist; the allocator hook then only records
//! which blocks are live, because DESTROY events are missing for some frees on 3.13.0.
//! DESTROY events are not followed at all: an object destroyed onto a freelist keeps a
//! refcount of 0, which the snapshot does not count, so following them would only add work
//! to every object's end.

use crate::cpython::{self, type_flags, type_of, Allocator, Api, Layout, PyObject};
use crate::live::{Block, LiveTable, ALLOCATED, LIVE, NO_STACK};
use crate::lock::SpinLock;
use crate::pyframes::{self, PyFrameRef};
use crate::sampler::{self, Kind, Sampler};
use crate::stacks::StackTable;
use crate::unwind::{here, Regs, Unwinder};
use rustc_hash::FxHashSet;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::Relaxed};

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
    /// The tracer owns creation events (3.13+ and no other tracer installed).
    pub tracer_active: bool,
    sampler: Sampler,
    /// Set when an object of this window took a sampled stack: the one in how many.
    pub sampled_every: Option<u32>,
    /// Scratch for one capture, kept here so a capture does not clear 1.4 KB of stack.
    native: [u64; MAX_NATIVE],
    python: [PyFrameRef; MAX_PYTHON],
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
        tracer_active: bool,
    ) -> State {
        State {
            api,
            layout,
            code_start,
            unwinder,
            stacks: StackTable::default(),
            live: LiveTable::default(),
            codes: FxHashSet::default(),
            tracer_active,
            sampler: Sampler::default(),
            sampled_every: None,
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

/// Installs the hooks. The original allocator becomes the hooks' context.
pub unsafe fn install(state: State) {
    let api_get = state.api.get_allocator;
    let api_set = state.api.set_allocator;
    let tracer = if state.tracer_active {
        state.api.set_reftracer
    } else {
        None
    };
    *STATE.lock() = Some(state);
    let mut current = std::mem::MaybeUninit::<Allocator>::uninit();
    api_get(cpython::DOMAIN_OBJ, current.as_mut_ptr());
    let original = Box::leak(Box::new(current.assume_init()));
    let mut ours = Allocator {
        ctx: original as *mut Allocator as *mut c_void,
        malloc: hook_malloc,
        calloc: hook_calloc,
        realloc: hook_realloc,
        free: hook_free,
    };
    api_set(cpython::DOMAIN_OBJ, &mut ours);
    if let Some(set) = tracer {
        set(Some(hook_reftracer), std::ptr::null_mut());
    }
}

unsafe fn original<'a>(ctx: *mut c_void) -> &'a Allocator {
    &*(ctx as *const Allocator)
}

unsafe extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let a = original(ctx);
    let p = (a.malloc)(a.ctx, size);
    if !p.is_null() && TRACKING.load(Relaxed) {
        on_alloc(p as usize, size);
    }
    p
}

unsafe extern "C" fn hook_calloc(ctx: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let a = original(ctx);
    let p = (a.calloc)(a.ctx, n, size);
    if !p.is_null() && TRACKING.load(Relaxed) {
        on_alloc(p as usize, n.saturating_mul(size));
    }
    p
}

unsafe extern "C" fn hook_realloc(ctx: *mut c_void, old: *mut c_void, size: usize) -> *mut c_void {
    let a = original(ctx);
    let p = (a.realloc)(a.ctx, old, size);
    if p.is_null() {
        return p;
    }
    if old.is_null() {
        if TRACKING.load(Relaxed) {
            on_alloc(p as usize, size);
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

unsafe extern "C" fn hook_reftracer(op: *mut PyObject, event: c_int, _: *mut c_void) -> c_int {
    if event == cpython::REFTRACER_CREATE && TRACKING.load(Relaxed) {
        on_create(op as usize);
    }
    0
}

#[inline(never)]
unsafe fn on_alloc(block: usize, size: usize) {
    let regs = here!();
    let Some(mut guard) = STATE.try_lock() else {
        return;
    };
    let Some(s) = guard.as_mut() else { return };
    let stack = if s.tracer_active {
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
    // A resized block keeps the site that first allocated it.
    if let Some(mut b) = s.live.remove(old) {
        b.size = size.min(u32::MAX as usize) as u32;
        s.live.insert(new, b);
    }
}

unsafe fn on_free(block: usize) {
    if let Some(s) = STATE.try_lock().as_mut().and_then(|g| g.as_mut()) {
        s.live.remove(block);
    }
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
    s.live.upsert(op - offset, |old| Block {
        stack,
        size: old.map_or_else(
            || (offset + *((tp + cpython::TP_BASICSIZE) as *const isize) as usize) as u32,
            |b| b.size,
        ),
        state: LIVE,
        object_offset: offset as u8,
    });
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

/// Drops every recorded block: the start of a new window.
pub fn clear_window() {
    if let Some(s) = STATE.lock().as_mut() {
        s.live = LiveTable::default();
        s.sampled_every = None;
    }
}
