//! Python frames of the current thread, read from the interpreter's own frame list.
//!
//! `PyEval_GetFrame` would create frame objects on 3.11+, which means allocating inside the
//! allocator hook. Instead the walk follows the internal linked list (see [`Layout`]) and
//! stores `(code object, byte offset of the instruction)`; lines are looked up only when a
//! report is written.

use crate::cpython::{Api, Frame, Layout, ThreadState};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrameRef {
    pub code: usize,
    pub offset: i32,
}

/// Every object that running frames refer to where no traversal looks, on every thread (see
/// [`Frame::running_references`]). Values may repeat.
///
/// # Safety
/// The caller holds the GIL, so no frame list changes under the walk.
pub unsafe fn running_references(api: &Api, layout: &Layout, mut f: impl FnMut(usize)) {
    // SAFETY: the GIL is held (caller's contract), so the main interpreter's thread states are
    // live and stay as they are during the walk.
    let mut tstate = unsafe { (api.thread_head)((api.main_interpreter)()) } as usize;
    while tstate != 0 {
        // SAFETY: `tstate` is a live thread state of this interpreter, whose layout is
        // `layout`, and the GIL is held for the walk.
        let thread = unsafe { ThreadState::new(tstate, layout) };
        let mut frame = thread.innermost();
        while let Some(fr) = frame {
            if let Some(code) = fr.code(api.code_type) {
                fr.running_references(code).for_each(&mut f);
            }
            frame = fr.previous();
        }
        // SAFETY: `tstate` is a live thread state, and the GIL is held.
        tstate = unsafe { (api.thread_next)(tstate as *mut _) } as usize;
    }
}

/// Writes the current thread's frames, innermost first; returns how many.
///
/// # Safety
/// The caller holds the GIL, so the frame list does not change under the walk.
pub unsafe fn walk(api: &Api, layout: &Layout, code_start: usize, out: &mut [PyFrameRef]) -> usize {
    // SAFETY: `PyThreadState_GetUnchecked` may be called on any thread.
    let tstate = unsafe { (api.thread_state)() } as usize;
    if tstate == 0 {
        return 0;
    }
    // SAFETY: with the GIL held (caller's contract), `tstate` is this thread's live thread
    // state, of an interpreter whose layout is `layout`.
    let mut frame: Option<Frame> = unsafe { ThreadState::new(tstate, layout) }.innermost();
    let mut n = 0;
    while let Some(fr) = frame.filter(|_| n < out.len()) {
        if let Some(code) = fr.code(api.code_type).filter(|_| !fr.is_shim()) {
            out[n] = PyFrameRef {
                code: code.object().addr(),
                offset: fr.instruction_offset(code, code_start),
            };
            n += 1;
        }
        frame = fr.previous();
    }
    n
}
