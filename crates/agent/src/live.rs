//! The blocks allocated in the tracking window and not yet freed.

use rustc_hash::FxHashMap;

/// No creation event seen yet (3.13+), or a block that holds no object.
pub const ALLOCATED: u8 = 0;
/// An object lives in the block.
pub const LIVE: u8 = 1;
/// The object was destroyed but the block sits on a freelist.
pub const DEAD: u8 = 2;

#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub stack: u32,
    pub size: u32,
    pub state: u8,
    /// Bytes from the block start to the object, once known from a creation event.
    pub object_offset: u8,
    /// The measured run that created the object; 0 outside repetition.
    pub epoch: u16,
}

pub const NO_STACK: u32 = u32::MAX;

#[derive(Default)]
pub struct LiveTable {
    pub blocks: FxHashMap<usize, Block>,
}

impl LiveTable {
    pub fn insert(&mut self, addr: usize, block: Block) {
        self.blocks.insert(addr, block);
    }

    pub fn remove(&mut self, addr: usize) -> Option<Block> {
        self.blocks.remove(&addr)
    }

    pub fn get_mut(&mut self, addr: usize) -> Option<&mut Block> {
        self.blocks.get_mut(&addr)
    }
}
