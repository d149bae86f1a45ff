//! 3.13+: the runtime's own table of its offsets, `_PyRuntime.debug_offsets`
//! (`_Py_DebugOffsets`), which CPython keeps for debuggers and profilers. At start the agent
//! checks the layout it carries against the table of the running interpreter, so that a patch
//! release or a distribution's build that moved a field is refused with one line rather than
//! misread.
//!
//! The table gives the thread state's current frame, the frame fields, the code object's
//! instructions, the object and type headers, tuple, list, dict and str fields. It does not
//! give what the agent also reads: `_PyInterpreterFrame`'s tag bits, the freelists, the code
//! object's other object fields and `_co_cached`, dict keys' internals, `ht_slots`, module
//! objects, `tp_traverse`, `tp_free` and the GC header; those come from the headers alone,
//! checked by the layout probe.

use super::*;

/// Where the table keeps each field the agent checks, from the table's start (probed from
/// the headers: `debug_*` in layout_probe.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    pub version: usize,
    pub free_threaded: usize,
    pub current_frame: usize,
    pub frame_previous: usize,
    pub frame_executable: usize,
    pub frame_instr_ptr: usize,
    pub frame_localsplus: usize,
    pub frame_owner: usize,
    pub code_adaptive: usize,
    pub ob_type: usize,
    pub tp_name: usize,
    pub tp_flags: usize,
    pub tuple_items: usize,
    pub list_items: usize,
    pub dict_keys: usize,
    pub dict_values: usize,
    pub unicode_state: usize,
    pub unicode_length: usize,
    pub ascii_size: usize,
}

pub const V3_13: Positions = Positions {
    version: 8,
    free_threaded: 16,
    current_frame: 184,
    frame_previous: 232,
    frame_executable: 240,
    frame_instr_ptr: 248,
    frame_localsplus: 256,
    frame_owner: 264,
    code_adaptive: 344,
    ob_type: 360,
    tp_name: 376,
    tp_flags: 392,
    tuple_items: 408,
    list_items: 432,
    dict_keys: 456,
    dict_values: 464,
    unicode_state: 544,
    unicode_length: 552,
    ascii_size: 560,
};

pub const V3_14: Positions = Positions {
    version: 8,
    free_threaded: 16,
    current_frame: 208,
    frame_previous: 256,
    frame_executable: 264,
    frame_instr_ptr: 272,
    frame_localsplus: 280,
    frame_owner: 288,
    code_adaptive: 384,
    ob_type: 408,
    tp_name: 424,
    tp_flags: 440,
    tuple_items: 456,
    list_items: 480,
    dict_keys: 536,
    dict_values: 544,
    unicode_state: 624,
    unicode_length: 632,
    ascii_size: 640,
};

pub const V3_15: Positions = Positions {
    version: 8,
    free_threaded: 16,
    current_frame: 208,
    frame_previous: 320,
    frame_executable: 328,
    frame_instr_ptr: 336,
    frame_localsplus: 344,
    frame_owner: 352,
    code_adaptive: 448,
    ob_type: 472,
    tp_name: 488,
    tp_flags: 504,
    tuple_items: 552,
    list_items: 576,
    dict_keys: 632,
    dict_values: 640,
    unicode_state: 720,
    unicode_length: 728,
    ascii_size: 736,
};

/// The table starts `_PyRuntimeState`, with this cookie.
const COOKIE: &[u8; 8] = b"xdebugpy";

/// Each checked field: its name in the table, where the table keeps it, and the value the
/// agent's layout has for it.
fn expected(
    p: &Positions,
    layout: &Layout,
    code_start: usize,
) -> Vec<(&'static str, usize, usize)> {
    let mut checks = vec![
        (
            "thread_state.current_frame",
            p.current_frame,
            layout.tstate_frame,
        ),
        (
            "interpreter_frame.previous",
            p.frame_previous,
            layout.frame_previous,
        ),
        (
            "interpreter_frame.executable",
            p.frame_executable,
            layout.frame_code,
        ),
        (
            "interpreter_frame.instr_ptr",
            p.frame_instr_ptr,
            layout.frame_instr,
        ),
        ("code_object.co_code_adaptive", p.code_adaptive, code_start),
        ("pyobject.ob_type", p.ob_type, OB_TYPE),
        ("type_object.tp_name", p.tp_name, TP_NAME),
        ("type_object.tp_flags", p.tp_flags, TP_FLAGS),
        ("tuple_object.ob_item", p.tuple_items, layout.tuple_items),
        ("list_object.ob_item", p.list_items, LIST_ITEMS),
        ("dict_object.ma_keys", p.dict_keys, DICT_KEYS),
        ("dict_object.ma_values", p.dict_values, DICT_VALUES),
        ("unicode_object.state", p.unicode_state, UNICODE_STATE),
        ("unicode_object.length", p.unicode_length, UNICODE_LENGTH),
        (
            "unicode_object.asciiobject_size",
            p.ascii_size,
            layout.ascii_size,
        ),
    ];
    if let Some((localsplus, _)) = layout.frame_locals {
        checks.push((
            "interpreter_frame.localsplus",
            p.frame_localsplus,
            localsplus,
        ));
    }
    if let Some(owner) = layout.frame_owner {
        checks.push(("interpreter_frame.owner", p.frame_owner, owner));
    }
    checks
}

/// Checks `layout` against the running interpreter's table, if its version has one.
/// `code_start` is where a code object's instructions start (`PyCode_Type.tp_basicsize`).
///
/// # Safety
/// Runs inside a CPython process whose version is `layout`'s.
pub unsafe fn check(layout: &Layout, code_start: usize) -> Result<(), String> {
    let Some(positions) = layout.debug_offsets else {
        return Ok(());
    };
    // SAFETY: the address is only read below as `_PyRuntime`, the static struct it names.
    let Some(table) = unsafe { sym(c"_PyRuntime") }.map(|p| p as usize) else {
        return Err("missing CPython symbol _PyRuntime".into());
    };
    // SAFETY: `_PyRuntime` is a static struct far larger than its first 8 bytes.
    if unsafe { &*(table as *const [u8; 8]) } != COOKIE {
        return Err("_PyRuntime does not start with its table of debug offsets".into());
    }
    // SAFETY: every position lies inside `_Py_DebugOffsets`, at the start of `_PyRuntime`.
    let read = |at: usize| unsafe { read_usize(table + at) };
    if read(positions.free_threaded) != 0 {
        return Err(format!(
            "free-threaded CPython (python3.{}t) is not supported; use the default build",
            layout.minor
        ));
    }
    for (name, at, ours) in expected(&positions, layout, code_start) {
        let theirs = read(at);
        if theirs != ours {
            let version = read(positions.version);
            return Err(format!(
                "CPython {}.{}.{} keeps {name} at {theirs}, where refhunt expects {ours}: this \
                 build's layout differs from its version's headers",
                version >> 24,
                (version >> 16) & 0xff,
                (version >> 8) & 0xff,
            ));
        }
    }
    Ok(())
}
