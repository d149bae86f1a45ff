//! A spin lock that knows its holder, and that a forked child can reset.
//!
//! The object hooks run with the GIL held, but the malloc family's run on every thread, with
//! or without it: a hook waits for a lock another thread holds (a free must never be lost),
//! and only passes when the holder is its own thread, which is the agent allocating or
//! freeing from inside itself.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct SpinLock<T> {
    held: AtomicBool,
    /// The holding thread's `pthread_self()`, 0 when free.
    owner: AtomicUsize,
    value: UnsafeCell<T>,
}

/// What a hook gets from [`SpinLock::lock_for_hook`].
pub enum Hooked<'a, T> {
    Locked(Guard<'a, T>),
    /// This thread holds the lock already: the agent itself is inside the allocator.
    Reentered,
}

/// This thread's identity: its thread pointer, which the x86_64 TLS ABI keeps at `%fs:0`
/// (what `pthread_self` returns on glibc), read without a call.
#[inline]
fn this_thread() -> usize {
    let tp: usize;
    // SAFETY: every thread has a thread pointer whose first word points to itself; the load
    // reads only that word.
    unsafe {
        core::arch::asm!("mov {}, fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

// SAFETY: the value is reached only through a guard, and one guard exists at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}

pub struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            held: AtomicBool::new(false),
            owner: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        let mut spins = 0u32;
        while self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins.is_multiple_of(64) {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            } else {
                std::hint::spin_loop();
            }
        }
        self.owner.store(this_thread(), Ordering::Relaxed);
        Guard { lock: self }
    }

    /// The lock for a hook: waited for while another thread holds it, never taken twice by
    /// one thread. The holder never waits on another thread while it holds the lock, so the
    /// wait ends.
    pub fn lock_for_hook(&self) -> Hooked<'_, T> {
        if self.held.load(Ordering::Relaxed) && self.owner.load(Ordering::Relaxed) == this_thread()
        {
            return Hooked::Reentered;
        }
        Hooked::Locked(self.lock())
    }

    /// The lock if it is free. The hooks use this: they run with the GIL held, so a held lock
    /// means the agent itself is allocating (in a snapshot, say), and that allocation passes
    /// unrecorded instead of waiting on itself.
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| {
                self.owner.store(this_thread(), Ordering::Relaxed);
                Guard { lock: self }
            })
    }

    /// Only for a forked child, where the holder no longer exists.
    ///
    /// # Safety
    /// No guard of this lock is alive in this process: its holder, if any, was a thread of
    /// the parent that the fork did not copy.
    pub unsafe fn force_unlock(&self) {
        self.owner.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Release);
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` keeps this the only reference
        // to the value.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Relaxed);
        self.lock.held.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_passes_on_its_own_thread_and_waits_on_another() {
        let lock = std::sync::Arc::new(SpinLock::new(0u32));
        let guard = lock.lock();
        assert!(matches!(lock.lock_for_hook(), Hooked::Reentered));
        let other = {
            let lock = lock.clone();
            std::thread::spawn(move || match lock.lock_for_hook() {
                Hooked::Locked(mut g) => {
                    *g += 1;
                    true
                }
                Hooked::Reentered => false,
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(*guard, 0, "the other thread waits for the holder");
        drop(guard);
        assert!(other.join().unwrap());
        assert_eq!(*lock.lock(), 1);
    }
}
