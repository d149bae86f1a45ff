//! Makes the program's first hardware breakpoint cheap.
//!
//! The kernel turns on its perf scheduling hooks when the first perf event bound to a task
//! appears anywhere on the machine, and waits for an RCU grace period to do so: measured
//! here, up to 27 ms, which the agent would otherwise pay while the program starts. The hooks
//! stay on while any such event exists, so refhunt holds a do-nothing software event on its
//! own main thread for as long as it runs, opened from a thread of its own while the program
//! starts. If the kernel refuses it, nothing changes but the agent's wait.

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

/// The event's descriptor, kept until refhunt exits.
static EVENT: AtomicI32 = AtomicI32::new(-1);

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `disabled`, `exclude_kernel`, `exclude_hv`.
const FLAGS: u64 = 1 | (1 << 5) | (1 << 6);

pub fn start() {
    // SAFETY: getpid has no preconditions; the main thread's id is the process id.
    let main = unsafe { libc::getpid() };
    let _ = std::thread::Builder::new()
        .name("refhunt-perf".into())
        .spawn(move || {
            // `struct perf_event_attr` up to its first size (PERF_ATTR_SIZE_VER0): type,
            // size, config, then flags at byte 40.
            let mut attr = [0u64; 8];
            attr[0] = PERF_TYPE_SOFTWARE as u64 | (64 << 32);
            attr[1] = PERF_COUNT_SW_DUMMY;
            attr[5] = FLAGS;
            // SAFETY: an attribute block of the size it says, for our own main thread.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    attr.as_ptr(),
                    main,
                    -1,
                    -1,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            EVENT.store(fd as i32, Relaxed);
        });
}
