//! Which words are survivors: the snapshot asks for every pointer it meets, a million times
//! for a program's statics alone, and most answers are no.
//!
//! The survivors come in address order from the live table, so no hash of them is built:
//! each megabyte of address space that holds any gets the range of their positions, and a
//! word is found by one probe of that small map and a binary search inside its megabyte.

use rustc_hash::FxHashMap;

pub struct Index {
    /// Survivor addresses, ascending.
    ops: Vec<usize>,
    /// For each megabyte (address >> 20) with survivors, their positions in `ops`.
    megabytes: FxHashMap<usize, (u32, u32)>,
}

impl Index {
    /// `ops` must be ascending.
    pub fn new(ops: Vec<usize>) -> Index {
        debug_assert!(ops.windows(2).all(|w| w[0] < w[1]));
        let mut megabytes = FxHashMap::default();
        let mut start = 0;
        for i in 1..=ops.len() {
            if i == ops.len() || ops[i] >> 20 != ops[start] >> 20 {
                megabytes.insert(ops[start] >> 20, (start as u32, i as u32));
                start = i;
            }
        }
        Index { ops, megabytes }
    }

    /// The survivor's position, if `word` is one.
    #[inline]
    pub fn get(&self, word: usize) -> Option<u32> {
        if !word.is_multiple_of(16) {
            return None; // objects are 16-byte aligned
        }
        let &(lo, hi) = self.megabytes.get(&(word >> 20))?;
        self.ops[lo as usize..hi as usize]
            .binary_search(&word)
            .ok()
            .map(|i| lo + i as u32)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn op(&self, i: usize) -> usize {
        self.ops[i]
    }

    pub fn contains(&self, word: usize) -> bool {
        self.get(word).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_the_survivors() {
        let ops = vec![0x10_0000, 0x10_0040, 0x1f_fff0, 0x20_0000, 0x7f00_0000_0010];
        let index = Index::new(ops.clone());
        for (i, &op) in ops.iter().enumerate() {
            assert_eq!(index.get(op), Some(i as u32));
        }
        for word in [
            0,
            0x10_0010,
            0x10_0041,
            0x20_0010,
            0x7f00_0000_0000,
            usize::MAX,
        ] {
            assert_eq!(index.get(word), None, "{word:#x}");
        }
        assert_eq!(Index::new(Vec::new()).get(0x10_0000), None);
    }
}
