//! Python frames of the current thread, read from the interpreter's own frame list.
//!
//! `PyEval_GetFrame` would create frame objects on 3.11+, which means allocating inside the
//! allocator hook. Instead the walk follows the internal linked list (see [`Layout`]) and
//! stores `(code object, byte offset of the instruction)`; lines are looked up only when a
//! report is written.

use crate::cpython::{
    read_usize, type_of, Api, Layout, FRAME_FIRST_SHIM_OWNER, FRAME_OWNED_BY_THREAD,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrameRef {
    pub code: usize,
    pub offset: i32,
}

/// The innermost frame of thread state `tstate`, or 0.
///
/// # Safety
/// `tstate` is a live thread state of the interpreter whose layout is `layout`; the GIL is
/// held, so its frame list does not change.
unsafe fn innermost(layout: &Layout, tstate: usize) -> usize {
    // SAFETY: `tstate` is a live thread state laid out as `layout` says (caller's contract);
    // its frame field (3.11's: its `cframe`, live while the thread runs) is readable.
    unsafe {
        let frame = read_usize(tstate + layout.tstate_frame);
        match layout.cframe_current {
            Some(current) if frame != 0 => read_usize(frame + current),
            Some(_) => 0,
            None => frame,
        }
    }
}

/// Every object that the locals of a running frame refer to, on every thread (3.11+, where
/// such frames are not objects and no traversal sees their locals). Values may repeat.
///
/// # Safety
/// The caller holds the GIL, so no frame list changes under the walk.
pub unsafe fn running_locals(api: &Api, layout: &Layout, mut f: impl FnMut(usize)) {
    let (Some((localsplus, nlocalsplus)), Some(owner)) = (layout.frame_locals, layout.frame_owner)
    else {
        return;
    };
    // SAFETY: the GIL is held (caller's contract), so the main interpreter's thread states
    // and each one's frame list are live and stay as they are during the walk; every read is
    // a field of a frame at `layout`'s offset, of a code object once its type says it is
    // one (`co_nlocalsplus`), or one of the `co_nlocalsplus` locals of a frame its thread owns.
    unsafe {
        let mut tstate = (api.thread_head)((api.main_interpreter)()) as usize;
        while tstate != 0 {
            let mut frame = innermost(layout, tstate);
            while frame != 0 {
                let code = layout.frame_object(read_usize(frame + layout.frame_code));
                if *((frame + owner) as *const u8) == FRAME_OWNED_BY_THREAD
                    && code != 0
                    && type_of(code) == api.code_type
                {
                    let n = *((code + nlocalsplus) as *const i32);
                    for i in 0..n.max(0) as usize {
                        match layout.frame_object(read_usize(frame + localsplus + 8 * i)) {
                            0 => {}
                            value => f(value),
                        }
                    }
                }
                frame = read_usize(frame + layout.frame_previous);
            }
            tstate = (api.thread_next)(tstate as *mut _) as usize;
        }
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
    // SAFETY: the GIL is held (caller's contract), so `tstate` is this thread's live thread
    // state and its frame list is live and stays as it is during the walk; every read is a
    // field of a frame at `layout`'s offset, and a code object is used once its type says so.
    unsafe {
        let mut frame = innermost(layout, tstate);
        let mut n = 0;
        while frame != 0 && n < out.len() {
            let code = layout.frame_object(read_usize(frame + layout.frame_code));
            let skip = layout
                .frame_owner
                .is_some_and(|o| *((frame + o) as *const u8) >= FRAME_FIRST_SHIM_OWNER);
            if !skip && code != 0 && type_of(code) == api.code_type {
                out[n] = PyFrameRef {
                    code,
                    offset: instruction_offset(layout, frame, code, code_start),
                };
                n += 1;
            }
            frame = read_usize(frame + layout.frame_previous);
        }
        n
    }
}

/// The byte offset of `frame`'s current instruction in `code`.
///
/// # Safety
/// `frame` is a live frame of the interpreter whose layout is `layout`, running `code`.
unsafe fn instruction_offset(layout: &Layout, frame: usize, code: usize, code_start: usize) -> i32 {
    // SAFETY: `frame` is a live frame laid out as `layout` says (caller's contract), so its
    // instruction field (a pointer on 3.11+, `f_lasti` before) is readable.
    unsafe {
        if layout.frame_owner.is_some() {
            // 3.11+: a pointer into the code's instruction array (`co_code_adaptive`).
            let instr = read_usize(frame + layout.frame_instr) as isize;
            let first = (code + code_start) as isize;
            (instr - first).max(0) as i32
        } else {
            let lasti = *((frame + layout.frame_instr) as *const i32);
            if layout.lasti_in_units {
                lasti.max(0) * 2
            } else {
                lasti.max(0)
            }
        }
    }
}
