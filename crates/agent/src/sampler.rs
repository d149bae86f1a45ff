//! Sampled creation stacks: every object is still recorded, so counts stay exact, but only
//! some objects pay for a stack walk; the rest take the stack last walked for their kind.
//!
//! An object's kind is what is cheap to know when it is created: the running Python line
//! (code object and instruction), its size (up to 3.12) or type (3.13+), and the depth of the
//! C stack, which tells most C paths apart and every thread from every other. A kind's first
//! object is always walked; after that one in about `every`, at random so that a line whose
//! objects come from several C sites in a fixed rhythm is not always sampled on the same one.
//! An object that is not walked is counted at its kind's last walked site, so per-site counts
//! are estimates when one line makes objects of one kind at several sites at one depth, and
//! exact when it makes them at one, as the seed's loop does.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// One walk in about this many objects of a kind; 0 or 1: every object is walked.
pub static EVERY: AtomicU32 = AtomicU32::new(1);

/// Small enough to stay in cache: a slot is probed on every allocation.
const SLOT_BITS: u32 = 11;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kind {
    pub code: usize,
    pub offset: i32,
    pub epoch: u16,
    /// The object's size or type.
    pub shape: usize,
    /// The stack pointer in the hook.
    pub depth: usize,
}

/// A kind is known by its key, a 64-bit hash of it: two kinds that share one would share a
/// stack, about once in 2^64 pairs. 0 marks an empty slot.
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    stack: u32,
    /// Objects still to take `stack` before the next walk.
    left: u32,
}

pub struct Sampler {
    slots: Vec<Slot>,
    rng: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            slots: vec![Slot::default(); 1 << SLOT_BITS],
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Sampler {
    /// The stack remembered for the kind of `key`, while its turn to be walked has not come.
    pub fn reuse(&mut self, key: u64) -> Option<u32> {
        let slot = &mut self.slots[slot_of(key)];
        if slot.hash == key && slot.left > 0 {
            slot.left -= 1;
            return Some(slot.stack);
        }
        None
    }

    /// Remembers the stack just walked for the kind of `key`, for about `every` objects.
    pub fn remember(&mut self, key: u64, stack: u32, every: u32) {
        // xorshift: a gap uniform in [0, 2 * every), so one walk in `every` on average.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.slots[slot_of(key)] = Slot {
            hash: key,
            stack,
            left: (self.rng % (2 * every.max(1) as u64)) as u32,
        };
    }
}

impl Kind {
    /// The kind's key in the sampler's table.
    pub fn key(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        // Never 0, the empty slot's mark; the slot comes from the well-mixed high bits.
        h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    }
}

fn slot_of(hash: u64) -> usize {
    (hash >> (64 - SLOT_BITS)) as usize
}

pub fn every() -> u32 {
    EVERY.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: usize, shape: usize) -> Kind {
        Kind {
            code,
            offset: 4,
            epoch: 0,
            shape,
            depth: 0x7ffc_0000,
        }
    }

    /// The stack for one object, walking (returning `walked`) when the sampler says so.
    fn stack(s: &mut Sampler, k: Kind, walked: u32, walks: &mut u32) -> u32 {
        s.reuse(k.key()).unwrap_or_else(|| {
            *walks += 1;
            s.remember(k.key(), walked, 64);
            walked
        })
    }

    #[test]
    fn one_walk_in_about_every_objects_of_a_kind() {
        let mut s = Sampler::default();
        let mut walks = 0;
        for _ in 0..64_000 {
            assert_eq!(stack(&mut s, kind(1, 32), 7, &mut walks), 7);
        }
        assert!((700..1300).contains(&walks), "{walks} walks");
    }

    #[test]
    fn kinds_do_not_share_stacks() {
        let mut s = Sampler::default();
        let mut walks = 0;
        assert_eq!(stack(&mut s, kind(1, 32), 1, &mut walks), 1);
        assert_eq!(stack(&mut s, kind(1, 48), 2, &mut walks), 2);
        assert_eq!(stack(&mut s, kind(2, 32), 3, &mut walks), 3);
        assert_eq!(walks, 3);
    }
}
