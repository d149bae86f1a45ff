//! The malloc family, redirected in the GOT of every loaded module (see [`crate::got`]) and of
//! every module loaded later (`dlopen` is redirected too): C code's own blocks, C++'s
//! `operator new` and Rust's global allocator, which all end in these.
//!
//! libc's own calls go through its GOT as well (`strdup`'s malloc), so they are seen, and
//! charged to their caller at the snapshot. The interpreter's module gets only `free` and
//! `realloc`, which follow blocks already recorded: what it allocates for itself through
//! malloc is its own, and would cost a stack walk on every large object. The agent's own
//! calls are never redirected.
//!
//! Redirecting the GOT serves `refhunt run`, the API and the pytest plugin alike, all of which
//! load the agent into a running interpreter; an `LD_PRELOAD`ed malloc would serve only the
//! first, and would pass to every child the program runs.

use crate::got::{self, Redirect};
use crate::hooks::{on_free, record_native, resize, with_state, TRACKING};
use crate::libc_fns;
use crate::native::Alloc;
use crate::unwind::{here, Regs};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The load bias of the interpreter's module.
static INTERPRETER_BIAS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Redirects the malloc family in every module loaded now; `interpreter` is the span of the
/// interpreter's module.
///
/// # Safety
/// The hooks are installed, so that a block recorded is freed through them.
pub unsafe fn install(interpreter: (usize, usize)) {
    let bias = crate::modules::loaded()
        .into_iter()
        .find(|m| m.start == interpreter.0)
        .map_or(usize::MAX, |m| m.bias);
    INTERPRETER_BIAS.store(bias, Relaxed);
    INSTALLED.store(true, Relaxed);
    redirect_loaded();
}

/// Redirects the malloc family in the modules loaded since the last call (slots already
/// redirected are left as they are).
pub fn redirect_loaded() {
    if !INSTALLED.load(Relaxed) {
        return;
    }
    let all = [
        redirect(c"malloc", hook_malloc as *const ()),
        redirect(c"calloc", hook_calloc as *const ()),
        redirect(c"realloc", hook_realloc as *const ()),
        redirect(c"free", hook_free as *const ()),
        redirect(c"posix_memalign", hook_posix_memalign as *const ()),
        redirect(c"aligned_alloc", hook_aligned_alloc as *const ()),
        redirect(c"memalign", hook_memalign as *const ()),
        redirect(c"valloc", hook_valloc as *const ()),
        redirect(c"reallocarray", hook_reallocarray as *const ()),
    ];
    let follow = [
        redirect(c"realloc", hook_realloc_follow as *const ()),
        redirect(c"free", hook_free as *const ()),
    ];
    let interpreter = INTERPRETER_BIAS.load(Relaxed);
    // SAFETY: each hook has its function's signature and calls the real one.
    unsafe {
        got::redirect_each(&|bias| {
            if bias == interpreter {
                &follow
            } else {
                &all
            }
        })
    };
}

fn redirect(symbol: &'static std::ffi::CStr, target: *const ()) -> Redirect {
    Redirect {
        symbol,
        target: target as usize,
    }
}

/// Records a block that C code allocated.
#[inline(never)]
fn on_alloc(block: *mut c_void, size: usize, alloc: Alloc) {
    if block.is_null() || !TRACKING.load(Relaxed) {
        return;
    }
    let regs: Regs = here!();
    with_state(|s| {
        // SAFETY: PyGILState_Check may be called on any thread.
        let gil = unsafe { (s.api.gil_check)() } != 0;
        // SAFETY: the registers are this thread's, inside the hook.
        unsafe { record_native(s, regs, block as usize, size, alloc, gil) };
    });
}

/// `malloc` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `malloc` is, with its arguments.
unsafe extern "C" fn hook_malloc(size: usize) -> *mut c_void {
    // SAFETY: the caller's call, passed on.
    let p = unsafe { (libc_fns::get().malloc)(size) };
    on_alloc(p, size, Alloc::Malloc);
    p
}

/// `calloc` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `calloc` is, with its arguments.
unsafe extern "C" fn hook_calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller's call, passed on.
    let p = unsafe { (libc_fns::get().calloc)(n, size) };
    on_alloc(p, n.saturating_mul(size), Alloc::Calloc);
    p
}

/// `realloc` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `realloc` is, with its arguments.
unsafe extern "C" fn hook_realloc(old: *mut c_void, size: usize) -> *mut c_void {
    if old.is_null() {
        // SAFETY: the caller's call, passed on.
        let p = unsafe { (libc_fns::get().realloc)(old, size) };
        on_alloc(p, size, Alloc::Realloc);
        return p;
    }
    // SAFETY: `old` is the caller's live block, resized by libc.
    unsafe { resize(old as usize, size, || (libc_fns::get().realloc)(old, size)) }
}

/// `realloc` for the interpreter: a block already recorded keeps its record, and nothing
/// new is recorded.
///
/// # Safety
/// Called as `realloc` is, with its arguments.
unsafe extern "C" fn hook_realloc_follow(old: *mut c_void, size: usize) -> *mut c_void {
    if old.is_null() {
        // SAFETY: the caller's call, passed on.
        return unsafe { (libc_fns::get().realloc)(old, size) };
    }
    // SAFETY: `old` is the caller's live block, resized by libc.
    unsafe { resize(old as usize, size, || (libc_fns::get().realloc)(old, size)) }
}

/// `free` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `free` is, with its arguments.
unsafe extern "C" fn hook_free(p: *mut c_void) {
    if !p.is_null() {
        on_free(p as usize);
    }
    // SAFETY: the caller's call, passed on.
    unsafe { (libc_fns::get().free)(p) }
}

/// `posix_memalign` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `posix_memalign` is, with its arguments.
unsafe extern "C" fn hook_posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    // SAFETY: the caller's call, passed on.
    let r = unsafe { (libc_fns::get().posix_memalign)(out, align, size) };
    if r == 0 {
        // SAFETY: on success libc stored the block in `*out`.
        on_alloc(unsafe { *out }, size, Alloc::PosixMemalign);
    }
    r
}

/// `aligned_alloc` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `aligned_alloc` is, with its arguments.
unsafe extern "C" fn hook_aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller's call, passed on.
    let p = unsafe { (libc_fns::get().aligned_alloc)(align, size) };
    on_alloc(p, size, Alloc::Aligned);
    p
}

/// `memalign` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `memalign` is, with its arguments.
unsafe extern "C" fn hook_memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller's call, passed on.
    let p = unsafe { (libc_fns::get().memalign)(align, size) };
    on_alloc(p, size, Alloc::Memalign);
    p
}

/// `valloc` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `valloc` is, with its arguments.
unsafe extern "C" fn hook_valloc(size: usize) -> *mut c_void {
    // SAFETY: the caller's call, passed on.
    let p = unsafe { (libc_fns::get().valloc)(size) };
    on_alloc(p, size, Alloc::Valloc);
    p
}

/// `reallocarray` for the modules whose GOT is redirected.
///
/// # Safety
/// Called as `reallocarray` is, with its arguments.
unsafe extern "C" fn hook_reallocarray(old: *mut c_void, n: usize, size: usize) -> *mut c_void {
    if old.is_null() {
        // SAFETY: the caller's call, passed on.
        let p = unsafe { (libc_fns::get().reallocarray)(old, n, size) };
        on_alloc(p, n.saturating_mul(size), Alloc::Reallocarray);
        return p;
    }
    // SAFETY: `old` is the caller's live block, resized by libc.
    unsafe {
        resize(old as usize, n.saturating_mul(size), || {
            (libc_fns::get().reallocarray)(old, n, size)
        })
    }
}
