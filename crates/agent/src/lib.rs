//! The refhunt agent: a shared library that the Python bootstrap loads with `ctypes.PyDLL`.
//!
//! It links against nothing from Python. Every CPython function it needs is looked up with
//! `dlsym` when tracking starts, and every internal layout it reads is chosen by the running
//! interpreter's version (see [`cpython`]), so one build serves CPython 3.9 to 3.15.
//!
//! Rules for everything reachable from the hooks:
//! - no allocation through Python's allocators, and no Python calls (`Py_IncRef` aside);
//! - the state's lock is only tried, so nothing we call can recurse into us or wait on us;
//! - any failure disables tracking and leaves the host process running.
//!
//! Non-goals: free-threaded builds, and architectures other than x86_64 Linux.
//!
//! Every unsafe operation sits in an `unsafe` block with a `SAFETY:` comment that states
//! why it is sound, also inside an `unsafe fn`, whose `# Safety` section states its contract.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod api;
mod attribution;
mod breakpoints;
mod brief;
mod census;
mod cpython;
mod elf_symbols;
mod got;
mod holds;
mod hooks;
mod libc_fns;
mod live;
mod lock;
mod malloc;
mod maps;
mod modules;
mod native;
mod paths;
mod pyframes;
mod sampler;
mod scan;
mod screen;
mod shadow;
mod snapshot;
mod stacks;
mod survivors;
mod tally;
mod unwind;
mod windows;
