//! Redirecting a shared library's calls to an imported function by rewriting its global
//! offset table (GOT), the way memray interposes allocators in libraries already loaded.
//!
//! A library built with `-fPIC` and without `-fno-semantic-interposition` calls even its own
//! exported functions through the PLT, so its GOT slot for a function is the one place all
//! those calls read the target from. pyenv's `libpython3.11.so` calls `_Py_NewReference`
//! from 68 places, all through the PLT; a statically linked interpreter (Debian's
//! `python3.X`) calls it directly and has no slot to rewrite.

use std::ffi::CStr;

// ELF constants and layouts (<elf.h>, x86_64).
const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_JUMP_SLOT: u32 = 7;
const PT_GNU_RELRO: u32 = 0x6474_e552;

#[repr(C)]
struct Dyn {
    tag: i64,
    value: u64,
}

#[repr(C)]
struct Rela {
    offset: u64,
    info: u64,
    _addend: i64,
}

#[repr(C)]
struct Sym {
    name: u32,
    _info: u8,
    _other: u8,
    _shndx: u16,
    _value: u64,
    _size: u64,
}

/// A function to call in place of an imported one.
#[derive(Clone, Copy)]
pub struct Redirect {
    pub symbol: &'static CStr,
    pub target: usize,
}

struct Request<'a> {
    /// The redirects for the module loaded at a bias.
    plan: &'a dyn Fn(usize) -> &'a [Redirect],
    /// Slots rewritten so far.
    rewritten: usize,
}

/// Points every GOT slot for `symbol`, in every loaded module but the agent, at `target`.
/// Returns how many slots were rewritten; 0 when no module calls `symbol` through its GOT.
/// Slots already pointing at `target` are rewritten alike, so it can run again after more
/// modules are loaded.
///
/// # Safety
/// `target` must be a function with the same signature as `symbol`, callable from any thread
/// at any time (a call in flight on another thread may still reach the old target).
pub unsafe fn redirect(symbol: &'static CStr, target: usize) -> usize {
    let one = [Redirect { symbol, target }];
    // SAFETY: the one redirect is the caller's, whose `target` has `symbol`'s signature and
    // may be called from any thread at any time (caller's contract).
    unsafe { redirect_each(&|_| &one) }
}

/// As [`redirect`], for the redirects that `plan` gives each module by its load bias.
///
/// # Safety
/// As for [`redirect`], for each redirect.
pub unsafe fn redirect_each<'a>(plan: &'a dyn Fn(usize) -> &'a [Redirect]) -> usize {
    // Two threads may load libraries at once (ctypes releases the GIL around `dlopen`): one
    // restoring a page's protection while the other writes to it would crash.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut request = Request { plan, rewritten: 0 };
    // SAFETY: the callback only reads the loader's own tables for the modules it lists.
    unsafe {
        libc::dl_iterate_phdr(
            Some(visit),
            &mut request as *mut Request as *mut libc::c_void,
        )
    };
    request.rewritten
}

/// Rewrites the slots of one module that `dl_iterate_phdr` lists.
///
/// # Safety
/// Called by `dl_iterate_phdr` with a valid `info`, and with `data` the `Request` that
/// `redirect_each` passed it, whose redirects meet [`redirect`]'s contract.
unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info`, and `data` is our `Request`.
    let (info, request) = unsafe { (&*info, &mut *(data as *mut Request)) };
    let bias = info.dlpi_addr as usize;
    // The agent calls the real functions.
    if bias == own_base() {
        return 0;
    }
    let mut dynamic = None;
    let mut relro = None;
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: the loader's program headers for this module, `dlpi_phnum` of them.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = bias + ph.p_vaddr as usize;
        match ph.p_type {
            libc::PT_DYNAMIC => dynamic = Some(start as *const Dyn),
            PT_GNU_RELRO => relro = Some((start, start + ph.p_memsz as usize)),
            _ => {}
        }
    }
    let redirects = (request.plan)(bias);
    if let (Some(dynamic), false) = (dynamic, redirects.is_empty()) {
        // SAFETY: a loaded module's dynamic section, and the tables it names, are mapped.
        request.rewritten += unsafe { rewrite_module(dynamic, bias, relro, redirects) };
    }
    0
}

/// The agent's own load address.
fn own_base() -> usize {
    // SAFETY: `Dl_info` is pointers and integers, for which all zeroes is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `dladdr` fills `info` for an address inside a loaded module.
    let found = unsafe { libc::dladdr(own_base as *const libc::c_void, &mut info) };
    if found == 0 {
        0
    } else {
        info.dli_fbase as usize
    }
}

/// Rewrites one module's slots for the redirects' symbols.
///
/// # Safety
/// `dynamic` is the mapped dynamic section of a module loaded at `bias`.
unsafe fn rewrite_module(
    dynamic: *const Dyn,
    bias: usize,
    relro: Option<(usize, usize)>,
    redirects: &[Redirect],
) -> usize {
    let (mut strtab, mut symtab) = (0, 0);
    let mut tables = [(0usize, 0usize); 2];
    let mut d = dynamic;
    // SAFETY: the dynamic section ends with a DT_NULL entry.
    unsafe {
        while (*d).tag != DT_NULL {
            let value = (*d).value as usize;
            match (*d).tag {
                DT_STRTAB => strtab = value,
                DT_SYMTAB => symtab = value,
                DT_JMPREL => tables[0].0 = value,
                DT_PLTRELSZ => tables[0].1 = value,
                DT_RELA => tables[1].0 = value,
                DT_RELASZ => tables[1].1 = value,
                _ => {}
            }
            d = d.add(1);
        }
    }
    // glibc relocates these entries in place; other loaders leave them as file addresses.
    let at = |p: usize| if p < bias { p + bias } else { p };
    if strtab == 0 || symtab == 0 {
        return 0;
    }
    let (strtab, symtab) = (at(strtab), at(symtab) as *const Sym);
    let mut rewritten = 0;
    for (table, bytes) in tables.into_iter().filter(|t| t.0 != 0) {
        let relas = at(table) as *const Rela;
        for i in 0..bytes / std::mem::size_of::<Rela>() {
            // SAFETY: `bytes` covers the table; symbol indices and names point into the
            // module's own symbol and string tables.
            unsafe {
                let r = &*relas.add(i);
                let kind = (r.info & 0xffff_ffff) as u32;
                if kind != R_X86_64_JUMP_SLOT && kind != R_X86_64_GLOB_DAT {
                    continue;
                }
                let sym = &*symtab.add((r.info >> 32) as usize);
                let name = CStr::from_ptr((strtab + sym.name as usize) as *const libc::c_char);
                let wanted = redirects.iter().find(|r| r.symbol == name);
                if wanted.is_some_and(|w| write_slot(bias + r.offset as usize, w.target, relro)) {
                    rewritten += 1;
                }
            }
        }
    }
    rewritten
}

/// Stores `value` in the pointer-sized slot at `slot`, making its page writable for the
/// store and read-only again if it lies in the module's RELRO segment.
///
/// # Safety
/// `slot` is an aligned GOT entry of a loaded module.
unsafe fn write_slot(slot: usize, value: usize, relro: Option<(usize, usize)>) -> bool {
    // SAFETY: a GOT entry of a loaded module is readable.
    if unsafe { std::ptr::read_volatile(slot as *const usize) } == value {
        return true; // redirected by an earlier call
    }
    let page = slot & !4095;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: the page belongs to a loaded module's data; only its protection changes.
    if unsafe { libc::mprotect(page as *mut libc::c_void, 4096, rw) } != 0 {
        return false;
    }
    // SAFETY: an aligned, now writable slot; an 8-byte store is atomic on x86_64, so a
    // thread calling through it sees the old target or the new one.
    unsafe { std::ptr::write_volatile(slot as *mut usize, value) };
    // The loader protects the whole pages of RELRO only (glibc's `_dl_protect_relro`): the
    // last partial page stays writable.
    if relro.is_some_and(|(lo, hi)| page >= lo & !4095 && page + 4096 <= hi & !4095) {
        // SAFETY: the page belongs to the module's RELRO segment, read-only before the store
        // made it writable; only its protection changes back.
        unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ) };
    }
    true
}
