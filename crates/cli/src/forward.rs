//! The program under `refhunt run` and the signals meant for it.
//!
//! - Ctrl-C and Ctrl-\ from a terminal reach the whole foreground process group, the program
//!   included: refhunt ignores them and stays to report, as `system()` does while it waits.
//! - SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to refhunt with `kill` (`timeout`, a service
//!   manager, CI) are passed on to the program, so it can run its exit path and refhunt can
//!   report. A signal sent to the whole process group has reached the program already, so
//!   refhunt passes one on only if the program is still running a second later: a program
//!   that exits on the first would otherwise get a second one in the middle of its exit.
//! - refhunt's death, even by SIGKILL, kills the program (`PR_SET_PDEATHSIG`): it is never
//!   left running without the parent that waits to report on it.
//! - A program killed by a signal makes refhunt end by the same signal, once it has said what
//!   it could, so that a shell loop stops under Ctrl-C as it would without refhunt.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The last signal sent to refhunt with `kill`, or 0.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// How long a signal sent to refhunt waits for the program to end on its own before it is
/// passed on.
const GRACE: Duration = Duration::from_secs(1);

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // SI_USER, SI_QUEUE, SI_TKILL... are at most 0; a terminal's signals come from the kernel.
    if code <= 0 {
        PENDING.store(signal, Ordering::SeqCst);
    }
}

/// The handlers above, while alive; the previous dispositions come back when dropped.
pub struct Forwarding {
    previous: [libc::sigaction; FORWARDED.len()],
}

impl Forwarding {
    pub fn install() -> Forwarding {
        // SAFETY: an all-zero sigaction is a valid value to be overwritten.
        let mut previous: [libc::sigaction; FORWARDED.len()] = unsafe { std::mem::zeroed() };
        for (signal, old) in FORWARDED.iter().zip(previous.iter_mut()) {
            // SAFETY: a handler that only stores to an atomic is async-signal-safe; no
            // SA_RESTART, so the wait is interrupted and can pass the signal on.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(*signal, &action, old);
            }
        }
        Forwarding { previous }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for (signal, old) in FORWARDED.iter().zip(self.previous.iter()) {
            // SAFETY: restores the disposition saved by `install`.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

/// Makes the child die with refhunt.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: in the child between fork and exec: prctl, getppid and raise are
    // async-signal-safe, and nothing is allocated.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            // refhunt may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// Waits for process `pid` to end, passing on the signals sent to refhunt (see the module's
/// doc), and gives its status and the largest resident set it had, in bytes.
pub fn wait(pid: u32) -> std::io::Result<(ExitStatus, u64)> {
    let mut pass_on: Option<(libc::c_int, Instant)> = None;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if pass_on.is_some() { libc::WNOHANG } else { 0 };
        // SAFETY: `pid` is our child; status and usage are valid out-pointers.
        let got = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut usage) };
        if got == pid as libc::pid_t {
            let peak = usage.ru_maxrss.max(0) as u64 * 1024; // reported in KiB
            return Ok((ExitStatus::from_raw(status), peak));
        }
        if got == -1 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let signal = PENDING.swap(0, Ordering::SeqCst);
        if signal != 0 && pass_on.is_none() {
            pass_on = Some((signal, Instant::now() + GRACE));
        }
        match pass_on {
            Some((signal, at)) if Instant::now() >= at => {
                // SAFETY: signals our own child, which has not been reaped.
                unsafe { libc::kill(pid as libc::pid_t, signal) };
                pass_on = None;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
            None => {}
        }
    }
}

/// Ends refhunt by the signal that ended the program, if one did; returns otherwise.
pub fn end_like(status: ExitStatus) {
    let Some(signal) = status.signal() else {
        return;
    };
    let _ = std::io::Write::flush(&mut std::io::stderr());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: resets one disposition, unblocks it and raises it; no core file for refhunt
    // itself (the program's, if any, was written already).
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
}
