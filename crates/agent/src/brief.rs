//! A short description of an object that runs none of its code: its type and size, and for
//! an exact `str`, `int` or `tuple` of those, its value, truncated. A `__repr__` could run
//! anything inside the program at its snapshot.

use crate::cpython::{Api, Layout, Object, PyObject};
use std::ffi::CStr;

/// Characters of a value kept.
const MAX_CHARS: usize = 60;
/// Items of a tuple shown.
const MAX_ITEMS: usize = 4;

/// # Safety
/// `op` is a live object and the GIL is held (`repr` is called).
pub unsafe fn describe(api: &Api, layout: &Layout, op: Object) -> String {
    // SAFETY: `op` is live and the GIL is held (caller's contract).
    match unsafe { value(api, layout, op, 1) } {
        Some(v) => v,
        None => format!("<{} object, {} B>", op.tp().name(), op.tp().basicsize()),
    }
}

/// The value of an exact str, int or tuple of values; `depth` tuples deep.
///
/// # Safety
/// As for [`describe`].
unsafe fn value(api: &Api, layout: &Layout, op: Object, depth: u32) -> Option<String> {
    let tp = op.tp().addr();
    let text = if tp == api.unicode_type || tp == api.long_type {
        // SAFETY: `op` is an exact str or int, live, and the GIL is held (caller's contract).
        unsafe { repr(api, op)? }
    } else if let Some(tuple) = op.as_tuple().filter(|_| tp == api.tuple_type && depth > 0) {
        let n = tuple.len();
        let mut items: Vec<String> = (0..n.min(MAX_ITEMS))
            // SAFETY: `op` is a live tuple (caller's contract: a live object).
            .filter_map(|i| unsafe { tuple.item(i, layout) })
            .map(|item| {
                // SAFETY: a live tuple's item is live; the GIL is held (caller's contract).
                unsafe { value(api, layout, item, depth - 1) }
                    .unwrap_or_else(|| format!("<{}>", item.tp().name()))
            })
            .collect();
        if n > MAX_ITEMS {
            items.push(format!("... {} more", n - MAX_ITEMS));
        }
        match n {
            1 => format!("({},)", items[0]),
            _ => format!("({})", items.join(", ")),
        }
    } else {
        return None;
    };
    Some(truncate(text))
}

/// `repr()` of an exact str or int, which runs no Python code.
///
/// # Safety
/// As for [`describe`].
unsafe fn repr(api: &Api, op: Object) -> Option<String> {
    // SAFETY: `op` is a live exact str or int and the GIL is held (caller's contract).
    let r = unsafe { (api.repr)(op.addr() as *mut PyObject) };
    if r.is_null() {
        // SAFETY: the GIL is held; the failed `repr` set an exception.
        unsafe { (api.err_clear)() }; // an int too long for its decimal repr
        return None;
    }
    // SAFETY: `r` is the new str reference `repr` returned, live; the GIL is held.
    let utf8 = unsafe { (api.unicode_utf8)(r) };
    let text = if utf8.is_null() {
        // SAFETY: the GIL is held; `PyUnicode_AsUTF8` failed and set an exception.
        unsafe { (api.err_clear)() };
        None
    } else {
        // SAFETY: a non-null result is `r`'s NUL-terminated UTF-8, alive while `r` is.
        Some(
            unsafe { CStr::from_ptr(utf8) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    // SAFETY: `r` is the new reference `repr` returned, given back once, GIL held.
    unsafe { (api.decref)(r) };
    text
}

fn truncate(text: String) -> String {
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}
