//! A short description of an object that runs none of its code: its type and size, and for
//! an exact `str`, `int` or `tuple` of those, its value, truncated. A `__repr__` could run
//! anything inside the program at its snapshot.

use crate::cpython::{self, read_usize, type_name, type_of, Api, Layout, PyObject};
use crate::survivors::basicsize;
use std::ffi::CStr;

/// Characters of a value kept.
const MAX_CHARS: usize = 60;
/// Items of a tuple shown.
const MAX_ITEMS: usize = 4;

/// # Safety
/// `op` is a live object; the GIL is held.
pub unsafe fn describe(api: &Api, layout: &Layout, op: usize) -> String {
    let tp = type_of(op);
    match value(api, layout, op, 1) {
        Some(v) => v,
        None => format!("<{} object, {} B>", type_name(tp), basicsize(tp)),
    }
}

/// The value of an exact str, int or tuple of values; `depth` tuples deep.
///
/// # Safety
/// As for [`describe`].
unsafe fn value(api: &Api, layout: &Layout, op: usize, depth: u32) -> Option<String> {
    let tp = type_of(op);
    let text = if tp == api.unicode_type || tp == api.long_type {
        repr(api, op)?
    } else if tp == api.tuple_type && depth > 0 {
        let n = read_usize(op + cpython::OB_SIZE);
        let mut items: Vec<String> = (0..n.min(MAX_ITEMS))
            .map(|i| {
                let item = read_usize(op + layout.tuple_items + 8 * i);
                value(api, layout, item, depth - 1)
                    .unwrap_or_else(|| format!("<{}>", type_name(type_of(item))))
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
unsafe fn repr(api: &Api, op: usize) -> Option<String> {
    let r = (api.repr)(op as *mut PyObject);
    if r.is_null() {
        (api.err_clear)(); // an int too long for its decimal repr
        return None;
    }
    let utf8 = (api.unicode_utf8)(r);
    let text = if utf8.is_null() {
        (api.err_clear)();
        None
    } else {
        Some(CStr::from_ptr(utf8).to_string_lossy().into_owned())
    };
    (api.decref)(r);
    text
}

fn truncate(text: String) -> String {
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}
