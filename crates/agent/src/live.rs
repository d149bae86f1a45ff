//! The blocks allocated in the tracking window and not yet freed, in a shadow of the heap
//! ([`Shadow`]): one 32-bit record for every 16 bytes of address space that has held a
//! recorded block.
//!
//! Every block of Python's object allocator is 16-byte aligned, so a block's record sits at a
//! fixed place: recording, freeing and looking up cost a two-level index and one store. The
//! records take a quarter of the bytes of the blocks recorded, where a hash map of blocks
//! took about as much as the blocks.
//!
//! A record packs, from the low bits: the creation stack (23 bits), the block size in 16-byte
//! units (5 bits; 0 for a block over 512 bytes, whose size sits in a side table), where the
//! object starts (2 bits, in 16-byte units), and the state (2 bits, never 0: 0 is "no block").

pub use crate::shadow::map;
use crate::shadow::Shadow;
use rustc_hash::FxHashMap;

/// No creation event seen yet (3.13+), or a block that holds no object.
pub const ALLOCATED: u8 = 1;
/// An object was created in the block (it may since have been destroyed onto a freelist).
pub const LIVE: u8 = 2;

/// An object the collector tracked when the window began (see `refhunt_mark_before`): not a
/// survivor, but not unseen either.
pub const BEFORE: u8 = 3;

/// In place of an object offset: a block that C code outside the interpreter allocated (the
/// malloc family, or a Python allocator called from an extension), which holds no object
/// unless one is created in it later.
pub const NATIVE: u8 = 48;

/// Stacks are numbered below this; a block created past it is kept without one.
pub const NO_STACK: u32 = (1 << 23) - 1;
/// In place of a stack: a block of the MEM domain, which holds no object.
pub const BUFFER: u32 = NO_STACK - 1;

const SIZE_SHIFT: u32 = 23;
const OFFSET_SHIFT: u32 = 28;
const STATE_SHIFT: u32 = 30;
const LARGE: u32 = 0;

/// One record, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub stack: u32,
    pub size: u32,
    pub state: u8,
    /// Bytes from the block start to the object, once known from a creation event.
    pub object_offset: u8,
}

/// The table of recorded blocks.
#[derive(Default)]
pub struct LiveTable {
    records: Shadow,
    /// Sizes of blocks over 512 bytes: few, so a map serves. Keyed by [`large_key`], so that
    /// the scan for pointers to native blocks does not find them here.
    large: FxHashMap<usize, u32>,
}

/// A large block's key in the side table: its address with the top bit flipped, which no
/// pointer has.
fn large_key(addr: usize) -> usize {
    addr ^ 1 << 63
}

fn pack(b: Block) -> u32 {
    // A native block's size is what C code asked for, which the report gives; an object's is
    // its allocator's 16-byte units.
    let exact = b.object_offset != NATIVE || b.size.is_multiple_of(16);
    let units = if b.size <= 512 && exact {
        b.size.div_ceil(16).max(1)
    } else {
        LARGE
    };
    (b.stack.min(NO_STACK))
        | (units & 31) << SIZE_SHIFT
        | (b.object_offset as u32 / 16) << OFFSET_SHIFT
        | (b.state as u32) << STATE_SHIFT
}

fn unpack(r: u32, large: impl FnOnce() -> u32) -> Block {
    let units = (r >> SIZE_SHIFT) & 31;
    Block {
        stack: r & NO_STACK,
        size: if units == LARGE { large() } else { units * 16 },
        state: (r >> STATE_SHIFT) as u8,
        object_offset: (((r >> OFFSET_SHIFT) & 3) * 16) as u8,
    }
}

impl Block {
    /// A block just allocated, of `size` bytes, that holds no object yet (`object_offset` 0)
    /// or none at all ([`NATIVE`]).
    pub fn allocated(stack: u32, size: usize, object_offset: u8) -> Block {
        Block {
            stack,
            size: size.min(u32::MAX as usize) as u32,
            state: ALLOCATED,
            object_offset,
        }
    }

    /// A block of C code's own, not an object's.
    pub fn is_native(&self) -> bool {
        self.object_offset == NATIVE
    }
}

impl LiveTable {
    pub fn insert(&mut self, addr: usize, block: Block) {
        self.upsert(addr, |_| block);
    }

    /// Records the block that `new` makes of the one recorded at `addr`, if any, with one
    /// probe of the table.
    #[inline]
    pub fn upsert(&mut self, addr: usize, new: impl FnOnce(Option<Block>) -> Block) {
        let slot = self.records.make(addr);
        if slot.is_null() {
            return;
        }
        // SAFETY: `make` returned a non-null record slot in a page the table owns.
        let old = unsafe { *slot };
        let large = &self.large;
        let block =
            new((old != 0)
                .then(|| unpack(old, || large.get(&large_key(addr)).copied().unwrap_or(0))));
        let record = pack(block);
        // SAFETY: `slot` is still the record slot `make` returned: `new` has no access to
        // the table, so no page was unmapped since.
        unsafe { *slot = record };
        if (record >> SIZE_SHIFT) & 31 == LARGE {
            self.large.insert(large_key(addr), block.size);
        } else if old != 0 && (old >> SIZE_SHIFT) & 31 == LARGE {
            self.large.remove(&large_key(addr));
        }
    }

    pub fn remove(&mut self, addr: usize) -> Option<Block> {
        let slot = self.records.find(addr);
        if slot.is_null() {
            return None;
        }
        // SAFETY: `find` returned a non-null record slot in a page the table owns.
        let record = unsafe { std::ptr::replace(slot, 0) };
        if record == 0 {
            return None;
        }
        let large = &mut self.large;
        Some(unpack(record, || {
            large.remove(&large_key(addr)).unwrap_or(0)
        }))
    }

    pub fn get(&self, addr: usize) -> Option<Block> {
        let slot = self.records.find(addr);
        if slot.is_null() {
            return None;
        }
        // SAFETY: `find` returned a non-null record slot in a page the table owns.
        let record = unsafe { *slot };
        (record != 0).then(|| {
            unpack(record, || {
                self.large.get(&large_key(addr)).copied().unwrap_or(0)
            })
        })
    }

    /// Every record, in address order.
    pub fn for_each(&self, mut f: impl FnMut(usize, Block)) {
        self.records.for_each(|addr, record| {
            let large = || self.large.get(&large_key(addr)).copied().unwrap_or(0);
            f(addr, unpack(record, large));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(stack: u32, size: u32, state: u8, offset: u8) -> Block {
        Block {
            stack,
            size,
            state,
            object_offset: offset,
        }
    }

    #[test]
    fn records_round_trip_and_free() {
        let mut t = LiveTable::default();
        let heap = vec![0u8; 1 << 16];
        let base = (heap.as_ptr() as usize + 15) & !15;
        let small = block(7, 32, ALLOCATED, 0);
        let big = block(NO_STACK, 4096, LIVE, 16);
        t.insert(base, small);
        t.insert(base + 1024, big);
        assert_eq!(t.get(base), Some(small));
        assert_eq!(t.get(base + 16), None);
        assert_eq!(t.get(base + 1024), Some(big));
        let mut seen = Vec::new();
        t.for_each(|a, b| seen.push((a, b)));
        assert_eq!(seen, vec![(base, small), (base + 1024, big)]);
        assert_eq!(t.remove(base + 1024), Some(big));
        assert!(t.large.is_empty());
        assert_eq!(t.remove(base + 1024), None);
        assert_eq!(t.get(base + 3), None, "unaligned addresses hold nothing");
    }

    #[test]
    fn upsert_sees_the_record_it_replaces() {
        let mut t = LiveTable::default();
        t.upsert(0x2000, |old| {
            assert_eq!(old, None);
            block(1, 2048, ALLOCATED, 0)
        });
        t.upsert(0x2000, |old| block(2, old.unwrap().size, LIVE, 16));
        assert_eq!(t.get(0x2000), Some(block(2, 2048, LIVE, 16)));
        t.upsert(0x2000, |_| block(3, 64, LIVE, 16));
        assert!(
            t.large.is_empty(),
            "a block no longer large leaves the side table"
        );
    }

    #[test]
    fn stacks_past_the_limit_are_kept_without_one() {
        let mut t = LiveTable::default();
        t.insert(0x1000, block(NO_STACK + 5, 48, LIVE, 32));
        assert_eq!(t.get(0x1000), Some(block(NO_STACK, 48, LIVE, 32)));
    }
}
