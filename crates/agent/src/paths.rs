//! For objects still reachable from Python, one shortest path from a module, for a person to
//! read: `module zoo . _registry [list] -> int`.
//!
//! A breadth-first search from every module object over `tp_traverse` edges, which stops once
//! every target is reached. Runs at snapshot time, with the GIL held and tracking paused.

use crate::cpython::{self, type_flags, type_name, type_of, Api, PyObject, VisitProc};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CStr};

/// Objects visited before the search gives up on the targets left.
const MAX_VISITED: usize = 4_000_000;

unsafe extern "C" fn collect(op: *mut PyObject, arg: *mut c_void) -> c_int {
    if cpython::may_be_object(op as usize) {
        (*(arg as *mut Vec<usize>)).push(op as usize);
    }
    0
}

/// What `op` refers to, for containers the collector can traverse.
unsafe fn children(op: usize, out: &mut Vec<usize>) {
    out.clear();
    let tp = type_of(op);
    if type_flags(tp) & cpython::TPFLAGS_HAVE_GC == 0 || !cpython::is_gc(op) {
        return;
    }
    let traverse = cpython::read_usize(tp + cpython::TP_TRAVERSE);
    if traverse != 0 {
        let traverse: cpython::TraverseProc = std::mem::transmute(traverse);
        traverse(
            op as *mut PyObject,
            collect as VisitProc,
            out as *mut Vec<usize> as *mut c_void,
        );
    }
}

fn is_module(op: usize) -> bool {
    unsafe { type_name(type_of(op)) == "module" }
}

unsafe fn is_dict(op: usize) -> bool {
    type_flags(type_of(op)) & cpython::TPFLAGS_DICT_SUBCLASS != 0
}

unsafe fn utf8(api: &Api, s: *mut PyObject) -> Option<String> {
    let p = (api.unicode_utf8)(s);
    if p.is_null() {
        (api.err_clear)();
        return None;
    }
    Some(CStr::from_ptr(p).to_string_lossy().into_owned())
}

/// The string key under which `dict` holds `value`.
unsafe fn key_of(api: &Api, dict: usize, value: usize) -> Option<String> {
    let mut pos: isize = 0;
    let mut k: *mut PyObject = std::ptr::null_mut();
    let mut v: *mut PyObject = std::ptr::null_mut();
    while (api.dict_next)(dict as *mut PyObject, &mut pos, &mut k, &mut v) != 0 {
        if v as usize == value && type_of(k as usize) == api.unicode_type {
            return utf8(api, k);
        }
    }
    None
}

unsafe fn module_name(api: &Api, module: usize) -> String {
    let name = (api.getattr)(module as *mut PyObject, c"__name__".as_ptr());
    if name.is_null() {
        (api.err_clear)();
        return "?".into();
    }
    let text = utf8(api, name).unwrap_or_else(|| "?".into());
    (api.decref)(name);
    text
}

/// `chain` runs from a module to the target.
unsafe fn describe(api: &Api, chain: &[usize]) -> String {
    let mut out = format!("module {}", module_name(api, chain[0]));
    for (i, pair) in chain.windows(2).enumerate() {
        let (parent, child) = (pair[0], pair[1]);
        if is_dict(parent) {
            if let Some(key) = key_of(api, parent, child) {
                out.push_str(" . ");
                out.push_str(&key);
            }
        }
        let name = type_name(type_of(child));
        if i + 2 == chain.len() {
            out.push_str(" -> ");
            out.push_str(&name);
        } else if !is_dict(child) && !is_module(child) {
            out.push_str(&format!(" [{name}]"));
        }
    }
    out
}

/// A path for each target reachable from a module, keyed by target.
///
/// # Safety
/// `roots_from` holds live objects (the collector's list); targets are live objects.
pub unsafe fn from_modules(
    api: &Api,
    roots_from: &[usize],
    targets: &FxHashSet<usize>,
) -> FxHashMap<usize, String> {
    let mut parent: FxHashMap<usize, usize> = FxHashMap::default();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for &op in roots_from.iter().filter(|&&op| is_module(op)) {
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
        children(op, &mut buf);
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
        paths.insert(target, describe(api, &chain));
    }
    paths
}
