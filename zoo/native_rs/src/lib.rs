//! A pyo3 extension that leaks native memory (Rust heap through the default global
//! allocator, so libc malloc), not Python objects. It stands in for users' Rust extensions
//! in refhunt's native-leak tests.
//!
//! Each allocating line carries a marker comment `zoo_native:<name>`; tests find the line by
//! its marker, so lines can move freely. Built by zoo/build_native.py.
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

/// Leaks `n` boxed 64-byte arrays.
#[pyfunction]
fn leak_box(n: usize) {
    for _ in 0..n {
        let leaked: &'static mut [u8; 64] = Box::leak(black_box(Box::new([0u8; 64]))); // zoo_native:rs_box
        black_box(leaked);
    }
}

struct Node {
    payload: [u64; 4],
    next: Mutex<Option<Arc<Node>>>,
}

#[inline(never)]
fn make_node(tag: u64) -> Arc<Node> {
    Arc::new(Node { payload: [tag; 4], next: Mutex::new(None) }) // zoo_native:rs_arc
}

/// Leaks `n` pairs of `Arc<Node>` that point at each other (a reference cycle).
#[pyfunction]
fn leak_arc_cycle(n: usize) {
    for i in 0..n {
        let a = make_node(i as u64);
        let b = make_node(!(i as u64));
        *a.next.lock().unwrap() = Some(Arc::clone(&b));
        *b.next.lock().unwrap() = Some(Arc::clone(&a));
        black_box(a.payload[0] ^ b.payload[0]);
        drop(black_box(a));
        drop(black_box(b));
    }
}

/// Control: boxes and drops `n` 64-byte arrays.
#[pyfunction]
fn box_drop(n: usize) {
    for _ in 0..n {
        let boxed = black_box(Box::new([0u8; 64])); // zoo_native:control_rs_box_drop
        drop(boxed);
    }
}

#[pymodule]
fn zoo_native_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(leak_box, m)?)?;
    m.add_function(wrap_pyfunction!(leak_arc_cycle, m)?)?;
    m.add_function(wrap_pyfunction!(box_drop, m)?)?;
    Ok(())
}
