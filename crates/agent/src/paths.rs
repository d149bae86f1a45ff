//! For objects still reachable from Python, one shortest path from a module, for a person to
//! read: `module zoo . _registry [list] -> int`.
//!
//! A breadth-first search from every module object over `tp_traverse` edges, which stops once
//! every target is reached. Runs at snapshot time, with the GIL held and tracking paused.

use crate::cpython::{self, Api, Object, PyObject, VisitProc};
use crate::snapshot::module_name;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CStr};

/// Objects visited before the search gives up on the targets left.
const MAX_VISITED: usize = 4_000_000;

/// The visit function of `children`'s traversal: keeps each word that may be an object.
///
/// # Safety
/// `arg` is the `Vec<usize>` the traversal was started with, borrowed by nothing else during
/// the call.
unsafe extern "C" fn collect(op: *mut PyObject, arg: *mut c_void) -> c_int {
    if cpython::may_be_object(op as usize) {
        // SAFETY: `arg` is a `*mut Vec<usize>` that nothing else borrows now (caller's
        // contract).
        unsafe { (*(arg as *mut Vec<usize>)).push(op as usize) };
    }
    0
}

/// What `op` refers to, for containers the collector can traverse.
///
/// # Safety
/// `op` is a live object; the GIL is held.
unsafe fn children(op: usize, out: &mut Vec<usize>) {
    out.clear();
    // SAFETY: `op` is a live object (caller's contract).
    let op = unsafe { Object::new(op) };
    // SAFETY: the GIL is held (caller's contract); a container is traversed with `collect`,
    // handed `out`, which is borrowed by nothing else until the call returns.
    unsafe {
        if op.is_gc() {
            op.traverse(collect as VisitProc, out as *mut Vec<usize> as *mut c_void);
        }
    }
}

/// Whether `op` is a module object.
///
/// # Safety
/// `op` is a live object.
unsafe fn is_module(op: usize) -> bool {
    // SAFETY: `op` is a live object (caller's contract).
    unsafe { Object::new(op) }.tp().name() == "module"
}

/// Whether `op` is a dict or a dict subclass's instance.
///
/// # Safety
/// `op` is a live object.
unsafe fn is_dict(op: usize) -> bool {
    // SAFETY: `op` is a live object (caller's contract).
    unsafe { Object::new(op) }.as_dict().is_some()
}

/// The text of the str `s`, or `None` (the error cleared) where it has none or is no str.
///
/// # Safety
/// `s` is a live object; the GIL is held.
unsafe fn utf8(api: &Api, s: *mut PyObject) -> Option<String> {
    // SAFETY: `s` is a live object and the GIL is held (caller's contract); on anything but a
    // str `PyUnicode_AsUTF8` fails with an exception.
    let p = unsafe { (api.unicode_utf8)(s) };
    if p.is_null() {
        // SAFETY: the GIL is held; `PyUnicode_AsUTF8` failed and set an exception.
        unsafe { (api.err_clear)() };
        return None;
    }
    // SAFETY: a non-null result is `s`'s NUL-terminated UTF-8, alive while `s` is.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The string key under which `dict` holds `value`.
///
/// # Safety
/// `dict` is a live dict (or dict subclass instance); the GIL is held.
unsafe fn key_of(api: &Api, dict: usize, value: usize) -> Option<String> {
    let mut pos: isize = 0;
    let mut k: *mut PyObject = std::ptr::null_mut();
    let mut v: *mut PyObject = std::ptr::null_mut();
    // SAFETY: `PyDict_Next` on a live dict with the GIL held (caller's contract), with
    // pointers to these locals; it hands back borrowed references to live keys and values.
    while unsafe { (api.dict_next)(dict as *mut PyObject, &mut pos, &mut k, &mut v) } != 0 {
        // SAFETY: `k` is a live key of the dict, and `utf8` is given it, with the GIL held.
        unsafe {
            if v as usize == value && Object::new(k as usize).tp().addr() == api.unicode_type {
                return utf8(api, k);
            }
        }
    }
    None
}

/// `chain` runs from a module to the target.
///
/// # Safety
/// `chain` is a path of live objects, each referred to by the one before, from a module; the
/// GIL is held.
unsafe fn describe(api: &Api, chain: &[usize]) -> String {
    // SAFETY: the whole body relies on the contract above: each object of `chain` is live,
    // the first a module, and the GIL is held, which is all the calls below need.
    unsafe {
        let mut out = format!("module {}", module_name(api, chain[0]));
        for (i, pair) in chain.windows(2).enumerate() {
            let (parent, child) = (pair[0], pair[1]);
            if is_dict(parent) {
                if let Some(key) = key_of(api, parent, child) {
                    out.push_str(" . ");
                    out.push_str(&key);
                }
            }
            let name = Object::new(child).tp().name();
            if i + 2 == chain.len() {
                out.push_str(" -> ");
                out.push_str(&name);
            } else if !is_dict(child) && !is_module(child) {
                out.push_str(&format!(" [{name}]"));
            }
        }
        out
    }
}

/// A path for each target reachable from a module, keyed by target.
///
/// # Safety
/// `roots_from` holds live objects (the collector's list); targets are live objects; the GIL
/// is held and tracking is paused.
pub unsafe fn from_modules(
    api: &Api,
    roots_from: &[usize],
    targets: &FxHashSet<usize>,
) -> FxHashMap<usize, String> {
    let mut parent: FxHashMap<usize, usize> = FxHashMap::default();
    let mut queue: VecDeque<usize> = VecDeque::new();
    // SAFETY: `roots_from` holds live objects (caller's contract).
    for &op in roots_from.iter().filter(|&&op| unsafe { is_module(op) }) {
        if parent.insert(op, op).is_none() {
            queue.push_back(op);
        }
    }
    let mut found = Vec::new();
    let mut buf = Vec::new();
    while let Some(op) = queue.pop_front() {
        if found.len() == targets.len() || parent.len() > MAX_VISITED {
            break;
        }
        // SAFETY: `op` is a root, or a word a live container's traversal visited that
        // `may_be_object` let through: a live object; the GIL is held (caller's contract).
        unsafe { children(op, &mut buf) };
        for &child in &buf {
            if child == 0 || parent.contains_key(&child) {
                continue;
            }
            parent.insert(child, op);
            if targets.contains(&child) {
                found.push(child);
            }
            queue.push_back(child);
        }
    }
    let mut paths = FxHashMap::default();
    for target in found {
        let mut chain = vec![target];
        let mut at = target;
        while let Some(&p) = parent.get(&at).filter(|&&p| p != at) {
            chain.push(p);
            at = p;
        }
        chain.reverse();
        // SAFETY: `chain` follows the traversal's edges from a module to a live target, with
        // the GIL still held.
        paths.insert(target, unsafe { describe(api, &chain) });
    }
    paths
}
