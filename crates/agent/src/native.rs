//! Native blocks: memory that C code outside the interpreter allocated for itself, through
//! the malloc family or one of Python's allocators, and that holds no object.
//!
//! At the snapshot each block still allocated is charged to the module of the first frame of
//! its stack outside the C runtime (libc, the loader, libstdc++, libgcc): `strdup` and C++'s
//! `operator new` are charged to their caller. Blocks charged to the interpreter, to the
//! agent or to the C runtime alone are theirs (arenas, caches, the import system, stdio's
//! buffers) and never reported. The others are classified by the conservative scan
//! ([`crate::scan`]) and grouped by allocation site.

use crate::hooks::State;
use crate::live::{Block, ALLOCATED, BUFFER};
use crate::modules::{self, LoadedModule};
use crate::scan::{self, Reach};
use crate::windows::View;
use refhunt_core::capture::{HeldObjects, NativeGroup};
use refhunt_core::runtime::allocates_for_caller;
use rustc_hash::FxHashMap;

/// Which allocator made a block; kept with its stack (see `StackTable::allocator`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Alloc {
    /// An object, not a native block.
    Object = 0,
    Malloc,
    Calloc,
    Realloc,
    PosixMemalign,
    Aligned,
    Memalign,
    Valloc,
    Reallocarray,
    RawMalloc,
    RawCalloc,
    RawRealloc,
    MemMalloc,
    MemCalloc,
    MemRealloc,
    ObjMalloc,
    ObjCalloc,
    ObjRealloc,
}

/// The names of [`Alloc`]'s values, in order.
const NAMES: [&str; 18] = [
    "object",
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "reallocarray",
    "PyMem_RawMalloc",
    "PyMem_RawCalloc",
    "PyMem_RawRealloc",
    "PyMem_Malloc",
    "PyMem_Calloc",
    "PyMem_Realloc",
    "PyObject_Malloc",
    "PyObject_Calloc",
    "PyObject_Realloc",
];

impl Alloc {
    /// The `op`th (malloc, calloc, realloc) of a Python domain's allocators; `domain` 0 is
    /// RAW, 1 MEM, 2 OBJ.
    pub fn of_domain(domain: usize, op: usize) -> Alloc {
        const BY_DOMAIN: [[Alloc; 3]; 3] = [
            [Alloc::RawMalloc, Alloc::RawCalloc, Alloc::RawRealloc],
            [Alloc::MemMalloc, Alloc::MemCalloc, Alloc::MemRealloc],
            [Alloc::ObjMalloc, Alloc::ObjCalloc, Alloc::ObjRealloc],
        ];
        BY_DOMAIN[domain][op]
    }

    pub fn name_of(code: u8) -> &'static str {
        NAMES.get(code as usize).copied().unwrap_or("unknown")
    }
}

/// Who a native stack charges its block to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The interpreter, the agent or the C runtime: never reported.
    Theirs,
    /// C code of this loaded module.
    Module,
}

/// The native groups of the window (`window`): each site's blocks still allocated,
/// classified by the scan. `object_stack` gives the creation stack of a leaked object at an
/// address, to link the blocks that point to leaked objects; `owners` lists the blocks of
/// leaked objects and of cyclic garbage, sorted, whose own buffers go with them; `id_of`
/// names a stack in the capture.
///
/// # Safety
/// Tracking is paused and the state's lock is held: no block changes while it runs, but
/// those freed by other threads (whose memory is read without faulting).
pub unsafe fn groups(
    state: &State,
    window: &View,
    modules: &[LoadedModule],
    object_stack: &dyn Fn(usize) -> Option<(u32, String)>,
    owners: &dyn Fn() -> Vec<(usize, usize)>,
    id_of: &mut dyn FnMut(u32) -> u32,
) -> Vec<NativeGroup> {
    if state.native_blocks == 0 {
        return Vec::new();
    }
    let agent = modules::find(modules, groups as *const () as usize);
    let interpreter = modules::find(modules, state.interpreter.0);
    let mut charged_to: FxHashMap<u32, Owner> = FxHashMap::default();
    let mut owner_of = |stack: u32| {
        *charged_to.entry(stack).or_insert_with(|| {
            let charged = state.stacks.native(stack).iter().find_map(|&pc| {
                let m = modules::find(modules, pc as usize);
                match m {
                    Some(i) if allocates_for_caller(&modules[i].path) => None,
                    _ => Some(m),
                }
            });
            match charged {
                Some(Some(m)) if Some(m) != agent && Some(m) != interpreter => Owner::Module,
                _ => Owner::Theirs,
            }
        })
    };
    let mut stacks = Vec::new();
    let mut reported = |b: &Block| {
        b.is_native()
            && b.state == ALLOCATED
            && b.stack < BUFFER
            && window.holds(b.stack)
            && owner_of(b.stack) == Owner::Module
    };
    state.live.for_each(|_, b| {
        if reported(&b) {
            stacks.push(b.stack);
        }
    });
    if stacks.is_empty() {
        return Vec::new();
    }
    // The blocks' addresses go in memory apart from the heap, which the scan reads.
    let Some(mut mapped) = scan::Mapped::with_capacity(stacks.len()) else {
        return Vec::new();
    };
    state.live.for_each(|addr, b| {
        if reported(&b) {
            mapped.push(scan::Block::new(addr, b.size as usize));
        }
    });
    let blocks = mapped.as_mut_slice();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let regions = scan::regions(&maps);
    // (block's stack, object's stack) -> objects held.
    let mut links: FxHashMap<(u32, u32), (u64, String)> = FxHashMap::default();
    let owners = owners();
    let classified = scan::classify(blocks, &regions, &owners, |i, word| {
        if let Some((stack, type_name)) = object_stack(word) {
            links.entry((stacks[i], stack)).or_insert((0, type_name)).0 += 1;
        }
    });
    if !classified {
        return Vec::new();
    }
    // Per site and allocator: each measured run's stacks are their own.
    type Key<'a> = (u8, &'a [u64]);
    let mut by_site: FxHashMap<Key, (u32, NativeGroup)> = FxHashMap::default();
    for (b, &stack) in blocks.iter().zip(&stacks) {
        let alloc = state.stacks.allocator(stack);
        let (_, g) = by_site
            .entry((alloc, state.stacks.site(stack)))
            .or_insert_with(|| {
                (
                    stack,
                    NativeGroup {
                        allocator: Alloc::name_of(alloc).to_string(),
                        ..NativeGroup::default()
                    },
                )
            });
        let tally = match b.reach {
            Reach::Definite => &mut g.definite,
            Reach::Indirect => &mut g.indirect,
            Reach::Possible => &mut g.possible,
            Reach::Reachable => &mut g.reachable,
            Reach::Owned => continue,
        };
        tally.count += 1;
        tally.bytes += (b.end - b.start) as u64;
        let epoch = window.run(stack) as usize;
        if epoch > 0 {
            if g.runs.len() < epoch {
                g.runs.resize(epoch, 0);
            }
            g.runs[epoch - 1] += 1;
        }
    }
    let mut site_of_stack: FxHashMap<u32, Key> = FxHashMap::default();
    for &stack in &stacks {
        site_of_stack
            .entry(stack)
            .or_insert((state.stacks.allocator(stack), state.stacks.site(stack)));
    }
    let mut held: FxHashMap<Key, FxHashMap<u32, (u64, String)>> = FxHashMap::default();
    for ((block_stack, object_stack), (n, type_name)) in links {
        let e = held
            .entry(site_of_stack[&block_stack])
            .or_default()
            .entry(object_stack)
            .or_insert((0, type_name));
        e.0 += n;
    }
    let mut out: Vec<NativeGroup> = by_site
        .into_iter()
        .map(|(key, (stack, mut g))| {
            g.stack = id_of(stack);
            g.holds = held
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .map(|(object_stack, (count, type_name))| HeldObjects {
                    type_name,
                    count,
                    stack: id_of(object_stack),
                })
                .collect();
            g.holds.sort_by_key(|h| std::cmp::Reverse(h.count));
            g
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.lost().bytes + g.reachable.bytes));
    out
}
