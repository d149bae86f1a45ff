//! The ELF modules loaded in this process, read from the dynamic loader's program headers.

use crate::cpython::Borrowed;
use std::ffi::CStr;

#[derive(Debug, Clone)]
pub struct LoadedModule {
    pub path: String,
    /// Runtime address minus file address.
    pub bias: usize,
    /// Span of all `PT_LOAD` segments.
    pub start: usize,
    pub end: usize,
    /// `PT_GNU_EH_FRAME`: the `.eh_frame_hdr` section, address and size.
    pub eh_frame_hdr: Option<(usize, usize)>,
    /// Writable `PT_LOAD` segments (`.data`, `.bss`): where C statics live.
    pub writable: Vec<(usize, usize)>,
}

/// Every module the loader knows now, sorted by start address.
pub fn loaded() -> Vec<LoadedModule> {
    let mut out: Vec<LoadedModule> = Vec::new();
    // SAFETY: `visit` takes `data` as the `Vec<LoadedModule>` passed here, which outlives the
    // call and is borrowed by nothing else meanwhile.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), &mut out as *mut Vec<LoadedModule> as *mut _);
    }
    out.sort_by_key(|m| m.start);
    out
}

/// Adds the module that `dl_iterate_phdr` lists to the list.
///
/// # Safety
/// Called by `dl_iterate_phdr` with a valid `info`, and with `data` the `Vec<LoadedModule>`
/// that `loaded` passed it.
unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the caller's `Vec<LoadedModule>`, borrowed by nothing else now, and
    // `info` is valid for the call (caller's contract).
    let (out, info) = unsafe { (&mut *(data as *mut Vec<LoadedModule>), &*info) };
    let bias = info.dlpi_addr as usize;
    let mut module = LoadedModule {
        // SAFETY: the loader's `dlpi_name` is null or a NUL-terminated path.
        path: unsafe { module_path(info.dlpi_name) },
        bias,
        start: usize::MAX,
        end: 0,
        eh_frame_hdr: None,
        writable: Vec::new(),
    };
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: the loader's program headers for this module, `dlpi_phnum` of them.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = bias + ph.p_vaddr as usize;
        let end = start + ph.p_memsz as usize;
        match ph.p_type {
            libc::PT_LOAD => {
                module.start = module.start.min(start);
                module.end = module.end.max(end);
                if ph.p_flags & libc::PF_W != 0 {
                    module.writable.push((start, end));
                }
            }
            libc::PT_GNU_EH_FRAME => module.eh_frame_hdr = Some((start, ph.p_memsz as usize)),
            _ => {}
        }
    }
    if module.start < module.end {
        out.push(module);
    }
    0
}

/// The module's path: the loader's name, or the executable's for the main program.
///
/// # Safety
/// `name` is null or NUL-terminated.
unsafe fn module_path(name: *const libc::c_char) -> String {
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `name` is NUL-terminated (caller's contract).
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    if name.is_empty() {
        // The main executable has no name in the loader's list.
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    }
}

/// The module that holds `addr`, by binary search over a sorted list.
pub fn find(modules: &[LoadedModule], addr: usize) -> Option<usize> {
    let i = modules.partition_point(|m| m.start <= addr);
    (i > 0 && addr < modules[i - 1].end).then(|| i - 1)
}

impl LoadedModule {
    /// Calls `f` with the value of every aligned word of the module's static data, but the
    /// interpreter's borrowed words (`skip`).
    ///
    /// # Safety
    /// The module is still loaded, so its writable segments are mapped.
    pub unsafe fn static_words(&self, skip: &[Borrowed], mut f: impl FnMut(usize)) {
        for &(start, end) in &self.writable {
            let mut at = start.next_multiple_of(8);
            while at + 8 <= end {
                if skip.iter().any(|s| s.holds(at)) {
                    at += 8;
                    continue;
                }
                // SAFETY: `at` is an aligned word inside one of the module's writable
                // segments, which are mapped while it is loaded (caller's contract).
                f(unsafe { *(at as *const usize) });
                at += 8;
            }
        }
    }
}
