//! Hardware write breakpoints on objects' refcounts: each write to a watched `ob_refcnt`
//! stops the writing thread with a synchronous SIGTRAP, whose context says which instruction
//! wrote it (see [`crate::holds`] for what is made of that).
//!
//! x86_64 has four debug registers per thread, so four objects can be watched at once: one
//! perf event per slot and thread (`PERF_TYPE_BREAKPOINT`, `HW_BREAKPOINT_W`, `sigtrap`),
//! opened for every thread alive at the start and inherited by the threads they make
//! (`inherit_thread`, so a forked child inherits nothing). Moving a slot to another object
//! is one `PERF_EVENT_IOC_MODIFY_ATTRIBUTES` per event, which the kernel applies to the
//! inherited copies too; a free slot watches a word of the agent's that nothing writes.
//! `remove_on_exec` removes the events from a program that `exec`s.
//!
//! A watch must end before its object's memory goes back to malloc, or the breakpoint would
//! stop malloc itself and the handler would run inside it. Only objects whose free the hooks
//! see are watched (see `holds`), and the handler drops a watch at the first write that no
//! refcount change explains: one from the C runtime's code, a change of more than
//! [`MAX_STEP`], or an object whose type changed. Such a write is not recorded.
//!
//! The kernel's first breakpoint in a process can take tens of milliseconds (measured here:
//! 0.02 to 27 ms), so the events are opened on a thread of the agent's own while the program
//! starts; until they are, nothing is watched.
//!
//! The events are never opened under a tracer (it owns the debug registers), when the
//! program handles or blocks SIGTRAP itself, or when the kernel refuses; the reason is kept
//! for the report. A SIGTRAP that is not ours goes to the handler that was there before.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Debug registers: objects watched at once.
pub const SLOTS: usize = 4;

/// `sig_data` of our events: this tag, then the slot.
const TAG: u64 = 0x7266_6874_0000_0000;
const TAG_MASK: u64 = 0xffff_ffff_0000_0000;
/// `si_code` of a perf event's SIGTRAP.
const TRAP_PERF: c_int = 6;
/// `siginfo_t.si_perf_data` (after `si_addr` in the fault union).
const SI_PERF_DATA: usize = 24;

const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_W: u32 = 2;
const HW_BREAKPOINT_LEN_8: u64 = 8;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 11, u64)`.
const PERF_EVENT_IOC_MODIFY_ATTRIBUTES: libc::c_ulong = 0x4008_240b;

/// `struct perf_event_attr` up to `sig_data` (`PERF_ATTR_SIZE_VER7`).
#[repr(C)]
#[derive(Clone, Copy)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
}

// Bits of `flags`, as <linux/perf_event.h> orders its bitfields.
const INHERIT: u64 = 1 << 1;
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
const INHERIT_THREAD: u64 = 1 << 35;
const REMOVE_ON_EXEC: u64 = 1 << 36;
const SIGTRAP: u64 = 1 << 37;

/// What one slot watches, read by the signal handler without a lock.
struct Watch {
    /// The object whose refcount the slot watches; 0 when free, or dropped by the handler.
    object: AtomicUsize,
    /// Its type when the watch began.
    tp: AtomicUsize,
    /// Its refcount after the last write seen.
    last: AtomicIsize,
}

static WATCHES: [Watch; SLOTS] = [const {
    Watch {
        object: AtomicUsize::new(0),
        tp: AtomicUsize::new(0),
        last: AtomicIsize::new(0),
    }
}; SLOTS];

/// The largest change of a refcount that one write makes (a refcount is moved by small
/// steps); anything larger is some other use of the memory.
const MAX_STEP: isize = 1 << 16;

/// Code ranges of the C runtime (libc, the loader), which writes no refcount.
static C_RUNTIME: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];

fn in_c_runtime(pc: usize) -> bool {
    C_RUNTIME.iter().any(|(lo, hi)| {
        let (lo, hi) = (lo.load(Relaxed), hi.load(Relaxed));
        lo <= pc && pc < hi
    })
}

/// Where a free slot points: a word nothing writes.
static PARKED: u64 = 0;

/// The SIGTRAP action that was there before ours, to pass foreign traps on to.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// Called from the signal handler with the slot, the change of the refcount and the
/// registers of the instruction after the write. Set once, before any event is opened.
static SINK: AtomicUsize = AtomicUsize::new(0);
pub type Sink = unsafe fn(slot: usize, delta: isize, pc: usize, sp: usize, bp: usize);

pub struct Breakpoints {
    /// Per thread alive when they were opened, one event per slot.
    fds: Vec<[c_int; SLOTS]>,
}

/// Where the opening thread leaves its result.
static OPENED: Mutex<Option<Result<Breakpoints, String>>> = Mutex::new(None);
/// How long the window's start waits for the events to be opened; past it, they are taken
/// whenever they come.
const OPEN_WAIT: Duration = Duration::from_secs(1);

fn attr(addr: u64, slot: usize) -> PerfEventAttr {
    PerfEventAttr {
        kind: PERF_TYPE_BREAKPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: 0,
        sample_period: 1,
        sample_type: 0,
        read_format: 0,
        flags: INHERIT | INHERIT_THREAD | EXCLUDE_KERNEL | EXCLUDE_HV | REMOVE_ON_EXEC | SIGTRAP,
        wakeup_events: 0,
        bp_type: HW_BREAKPOINT_W,
        bp_addr: addr,
        bp_len: HW_BREAKPOINT_LEN_8,
        branch_sample_type: 0,
        sample_regs_user: 0,
        sample_stack_user: 0,
        clockid: 0,
        sample_regs_intr: 0,
        aux_watermark: 0,
        sample_max_stack: 0,
        reserved_2: 0,
        aux_sample_size: 0,
        reserved_3: 0,
        sig_data: TAG | slot as u64,
    }
}

fn parked() -> u64 {
    &PARKED as *const u64 as u64
}

impl Breakpoints {
    /// Checks that breakpoints can be used in this thread's process, installs the handler,
    /// and opens the events on a thread of their own (see [`Breakpoints::opened`]), waiting
    /// up to [`OPEN_WAIT`] for it; `sink`
    /// gets the writes. The error says in words why breakpoints cannot be used here.
    pub fn open_in_background(sink: Sink) -> Result<(), String> {
        if let Some(tracer) = tracer_pid().filter(|&p| p != 0) {
            return Err(format!(
                "the program runs under a tracer (pid {tracer}, a debugger?), which owns the \
                 debug registers"
            ));
        }
        // SAFETY: sigaction and sigprocmask with a null new action only read.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            (crate::libc_fns::get().sigaction)(libc::SIGTRAP, std::ptr::null(), &mut old);
            if old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != on_trap as *const () as usize
            {
                return Err("the program handles SIGTRAP itself".into());
            }
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            if libc::sigismember(&mask, libc::SIGTRAP) == 1 {
                return Err("the program blocks SIGTRAP".into());
            }
        }
        SINK.store(sink as usize, Relaxed);
        install_handler()?;
        let runtime = crate::modules::loaded()
            .into_iter()
            .filter(|m| refhunt_core::runtime::is_c_runtime(&m.path));
        for ((lo, hi), m) in C_RUNTIME.iter().zip(runtime) {
            lo.store(m.start, Relaxed);
            hi.store(m.end, Relaxed);
        }
        std::thread::Builder::new()
            .name("refhunt-watch".into())
            .spawn(|| {
                let opened = Breakpoints::open();
                *OPENED.lock().unwrap_or_else(|e| e.into_inner()) = Some(opened);
            })
            .map_err(|e| format!("cannot start the thread that opens them: {e}"))?;
        // A short program can end before a busy machine schedules the opener, and would be
        // watched not at all: wait for it, a few milliseconds when the machine is idle.
        let deadline = Instant::now() + OPEN_WAIT;
        while OPENED.lock().is_ok_and(|o| o.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// The events, once the opening thread has them; None until then.
    pub fn opened() -> Option<Result<Breakpoints, String>> {
        OPENED.try_lock().ok()?.take()
    }

    /// Opens the events for every thread of the process but the calling one, all parked.
    fn open() -> Result<Breakpoints, String> {
        // SAFETY: gettid has no preconditions. (The syscall, not glibc's wrapper, which came
        // in 2.30: the wheel is built for glibc 2.28.)
        let own = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let mut bp = Breakpoints { fds: Vec::new() };
        for tid in threads().into_iter().filter(|&t| t != own) {
            let mut fds = [-1; SLOTS];
            for (slot, fd) in fds.iter_mut().enumerate() {
                match open_event(tid, slot) {
                    Ok(f) => *fd = f,
                    Err(e) => {
                        bp.fds.push(fds);
                        bp.close();
                        return Err(refusal(e));
                    }
                }
            }
            bp.fds.push(fds);
        }
        Ok(bp)
    }

    /// Events to modify to move one slot: the cost of an arm, in system calls.
    pub fn threads(&self) -> usize {
        self.fds.len()
    }

    /// Watches `object`'s refcount in `slot`. False if the kernel refused (the slot stays
    /// free).
    ///
    /// # Safety
    /// `object` is a live object, whose first word is its refcount.
    pub unsafe fn arm(&mut self, slot: usize, object: usize) -> bool {
        // SAFETY: the caller's object is live, so its header is readable.
        let header = unsafe { crate::cpython::Header::new(object) };
        let (now, tp) = (header.refcnt(), header.type_addr());
        WATCHES[slot].last.store(now, Relaxed);
        WATCHES[slot].tp.store(tp, Relaxed);
        WATCHES[slot].object.store(object, Relaxed);
        if self.point(slot, object as u64) {
            return true;
        }
        self.park(slot);
        false
    }

    /// Whether the handler dropped the watch in `slot`: its memory was put to another use.
    pub fn dropped(&self, slot: usize) -> bool {
        WATCHES[slot].object.load(Relaxed) == 0
    }

    /// Frees `slot`: it watches nothing from here on.
    pub fn park(&mut self, slot: usize) {
        self.point(slot, parked());
        WATCHES[slot].object.store(0, Relaxed);
    }

    fn point(&mut self, slot: usize, addr: u64) -> bool {
        let mut a = attr(addr, slot);
        self.fds.iter().all(|fds| {
            // SAFETY: a perf event of ours, and an attribute block of the size it says.
            unsafe {
                libc::ioctl(
                    fds[slot],
                    PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
                    &mut a as *mut PerfEventAttr,
                ) == 0
            }
        })
    }

    /// Closes every event; nothing stays armed.
    pub fn close(&mut self) {
        for fd in self.fds.drain(..).flatten().filter(|&fd| fd >= 0) {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
        }
        for w in &WATCHES {
            w.object.store(0, Relaxed);
        }
    }

    /// Whether SIGTRAP still comes to us: a program that installs its own handler later
    /// would get our traps.
    pub fn handler_is_ours(&self) -> bool {
        // SAFETY: a null new action only reads.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            (crate::libc_fns::get().sigaction)(libc::SIGTRAP, std::ptr::null(), &mut old);
            old.sa_sigaction == on_trap as *const () as usize
        }
    }
}

fn open_event(tid: libc::pid_t, slot: usize) -> Result<c_int, c_int> {
    let a = attr(parked(), slot);
    // SAFETY: perf_event_open with an attribute block of the size it says.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &a as *const PerfEventAttr,
            tid,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(fd as c_int)
    }
}

fn refusal(errno: c_int) -> String {
    match errno {
        libc::EACCES | libc::EPERM => {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            format!(
                "perf_event_open was refused ({}; kernel.perf_event_paranoid is {paranoid}): \
                 allow it with `sysctl kernel.perf_event_paranoid=2`, or in a container with a \
                 seccomp profile that permits perf_event_open",
                std::io::Error::from_raw_os_error(errno)
            )
        }
        libc::ENOSPC => "every debug register is in use (a debugger or another tool?)".into(),
        _ => format!(
            "this kernel gives no hardware breakpoints with SIGTRAP (Linux 5.13 or newer does): {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

fn tracer_pid() -> Option<i32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

fn threads() -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn install_handler() -> Result<(), String> {
    // SAFETY: installs a handler that only reads its arguments and calls the sink; the old
    // action is kept before any event can fire.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_trap as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut ours.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if (crate::libc_fns::get().sigaction)(libc::SIGTRAP, &ours, &mut old) != 0 {
            return Err("cannot install a SIGTRAP handler".into());
        }
        if old.sa_sigaction != on_trap as *const () as usize {
            PREVIOUS = Some(old);
        }
    }
    Ok(())
}

/// The SIGTRAP handler: a write to a watched refcount, or someone else's trap.
extern "C" fn on_trap(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    unsafe {
        let data = *((info as usize + SI_PERF_DATA) as *const u64);
        if (*info).si_code != TRAP_PERF || data & TAG_MASK != TAG {
            pass_on(sig, info, ctx);
            return;
        }
        let slot = (data & 0xff) as usize;
        let Some(watch) = WATCHES.get(slot) else {
            return;
        };
        let object = watch.object.load(Relaxed);
        if object == 0 {
            return;
        }
        let gregs = &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs;
        let pc = gregs[libc::REG_RIP as usize] as usize;
        let header = crate::cpython::Header::new(object);
        let now = header.refcnt();
        let delta = now - watch.last.swap(now, Relaxed);
        if !(-MAX_STEP..=MAX_STEP).contains(&delta)
            || in_c_runtime(pc)
            || header.type_addr() != watch.tp.load(Relaxed)
        {
            watch.object.store(0, Relaxed);
            return;
        }
        let sink = SINK.load(Relaxed);
        if delta == 0 || sink == 0 {
            return;
        }
        let sink: Sink = std::mem::transmute(sink);
        sink(
            slot,
            delta,
            pc,
            gregs[libc::REG_RSP as usize] as usize,
            gregs[libc::REG_RBP as usize] as usize,
        );
    }
}

/// A trap that is not ours, to the action that was there before: its handler, or the
/// default (the process ends as it would have without refhunt).
///
/// # Safety
/// The arguments of a signal handler.
unsafe fn pass_on(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: PREVIOUS is written once, before our handler is installed.
    let previous = unsafe { PREVIOUS };
    match previous {
        Some(p) if p.sa_sigaction == libc::SIG_IGN => {}
        Some(p) if p.sa_sigaction != libc::SIG_DFL => {
            // SAFETY: the previous handler, called as the kernel would have.
            unsafe {
                if p.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                        std::mem::transmute(p.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(c_int) = std::mem::transmute(p.sa_sigaction);
                    f(sig);
                }
            }
        }
        _ => {
            // SAFETY: restores the default action and raises it again, as without refhunt.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
    }
}
