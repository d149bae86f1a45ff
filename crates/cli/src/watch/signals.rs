//! Ctrl-C and SIGTERM for `watch`, counted by a handler that only stores an atomic, and a wait
//! that those signals cut short (`std::thread::sleep` would silently resume).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static TERMINATES: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    let counter = if signal == libc::SIGINT {
        &INTERRUPTS
    } else {
        &TERMINATES
    };
    counter.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers without `SA_RESTART`, so that a signal ends a wait at once.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A signal that arrived since the last call.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

pub fn take() -> Option<Signal> {
    if TERMINATES.swap(0, Ordering::SeqCst) > 0 {
        return Some(Signal::Terminate);
    }
    (INTERRUPTS.swap(0, Ordering::SeqCst) > 0).then_some(Signal::Interrupt)
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    Timeout,
    Signal,
    /// A line (or end of file) is ready on stdin.
    Input,
}

/// Waits up to `timeout`, and also for stdin when `stdin` is set.
pub fn wait(timeout: Duration, stdin: bool) -> Woken {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let nfds = u64::from(stdin) as libc::nfds_t;
    // SAFETY: `fd` and `ts` outlive the call; no signal mask is changed.
    let ready = unsafe { libc::ppoll(&mut fd, nfds, &ts, std::ptr::null()) };
    match ready {
        0 => Woken::Timeout,
        n if n > 0 => Woken::Input,
        _ => Woken::Signal,
    }
}
