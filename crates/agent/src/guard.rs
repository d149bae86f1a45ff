//! The per-thread re-entry guard of the hooks.
//!
//! Anything the agent does inside a hook that reaches Python's allocator again must pass
//! through untracked; so must everything on a thread while the agent works on its snapshot.

use std::cell::Cell;

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

pub struct Reentry(());

impl Reentry {
    /// `None` when this thread is already inside the agent.
    pub fn enter() -> Option<Reentry> {
        BUSY.with(|b| {
            if b.get() {
                None
            } else {
                b.set(true);
                Some(Reentry(()))
            }
        })
    }
}

impl Drop for Reentry {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(false));
    }
}
