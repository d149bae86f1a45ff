//! The C library's own functions, looked up in libc itself, for the hooks to call.
//!
//! A call through the agent's own GOT may land in a hook: a non-PIE executable that takes a
//! function's address (Debian's `python3.11d` takes `free`'s) makes its own PLT entry that
//! function's address for every module, a canonical PLT entry, and the hooks redirect the
//! executable's slot behind it. `hook_free` calling `free` would then call itself.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

pub struct Libc {
    pub malloc: unsafe extern "C" fn(usize) -> *mut c_void,
    pub calloc: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    pub realloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub posix_memalign: unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int,
    pub aligned_alloc: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    pub memalign: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    pub valloc: unsafe extern "C" fn(usize) -> *mut c_void,
    pub reallocarray: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    pub sigaction:
        unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int,
    pub dlopen: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void,
}

static LIBC: OnceLock<Libc> = OnceLock::new();

/// Looks the functions up; call before any hook is installed, since `dlopen` itself may be
/// redirected later. False if libc does not have them all.
pub fn init() -> bool {
    if LIBC.get().is_none() {
        match resolve() {
            Some(found) => {
                let _ = LIBC.set(found);
            }
            None => return false,
        }
    }
    true
}

/// The functions; only called from hooks, which are installed after a successful [`init`].
pub fn get() -> &'static Libc {
    LIBC.get().unwrap_or(&LINKED)
}

/// The functions as the agent was linked to them: only for a hook called before [`init`].
static LINKED: Libc = Libc {
    malloc: libc::malloc,
    calloc: libc::calloc,
    realloc: libc::realloc,
    free: libc::free,
    posix_memalign: libc::posix_memalign,
    aligned_alloc: libc::aligned_alloc,
    memalign: libc::memalign,
    valloc: valloc_linked,
    reallocarray: reallocarray_linked,
    sigaction: libc::sigaction,
    dlopen: libc::dlopen,
};

extern "C" {
    #[link_name = "valloc"]
    fn valloc_linked(size: usize) -> *mut c_void;
    #[link_name = "reallocarray"]
    fn reallocarray_linked(old: *mut c_void, n: usize, size: usize) -> *mut c_void;
}

/// The function pointer of type `F` at `p`.
///
/// # Safety
/// `F` is a function pointer type, of the signature of the function at `p`.
unsafe fn func<F: Copy>(p: *mut c_void) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>()) };
    // SAFETY: `F` is a function pointer type of the signature of the function at `p`
    // (caller's contract), and both are one pointer wide (asserted above).
    unsafe { std::mem::transmute_copy(&p) }
}

fn resolve() -> Option<Libc> {
    // SAFETY: dlopen with RTLD_NOLOAD only returns a module already loaded, and dlsym looks
    // in libc's own scope, where each name is libc's function of that signature.
    unsafe {
        let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        if handle.is_null() {
            return None;
        }
        let f = |name: &std::ffi::CStr| {
            let p = libc::dlsym(handle, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(Libc {
            malloc: func(f(c"malloc")?),
            calloc: func(f(c"calloc")?),
            realloc: func(f(c"realloc")?),
            free: func(f(c"free")?),
            posix_memalign: func(f(c"posix_memalign")?),
            aligned_alloc: func(f(c"aligned_alloc")?),
            memalign: func(f(c"memalign")?),
            valloc: func(f(c"valloc")?),
            reallocarray: func(f(c"reallocarray")?),
            sigaction: func(f(c"sigaction")?),
            dlopen: func(f(c"dlopen")?),
        })
    }
}
