//! A shadow of the address space: one 32-bit record for every 16 bytes that has held one, at a
//! place the address gives. Finding a record costs a two-level index and no hashing, probing
//! or rehash; the records live in pages mapped straight from the kernel, never through an
//! allocator the hooks may be servicing, and only the pages that hold records take memory.
//!
//! The live table keeps its block records here, and the snapshot what it found of each
//! survivor: millions of them in a hash map took a rehash and 72 bytes each.

use rustc_hash::FxHashMap;

/// Levels of the index: address bits 36.. pick a directory, 20..36 a page of records, and
/// 4..20 the record. A directory holds the pages' addresses, then for each page a bitmap of
/// the 4 KiB pieces written to: a scan reads only those, since reading the others would map
/// zero pages, one fault each.
const DIRS: usize = 1 << 11;
const PAGES_PER_DIR: usize = 1 << 16;
const RECORDS_PER_PAGE: usize = 1 << 16;
const RECORDS_PER_PIECE: usize = 1024;
const DIR_BYTES: usize = PAGES_PER_DIR * 16;

/// Records for 16-byte-aligned addresses below 2^47; 0 is "no record".
///
/// Invariant, which every unsafe block here rests on: a non-null `dirs[d]` is a mapping of
/// `DIR_BYTES` that the shadow owns, its first `PAGES_PER_DIR` words page pointers and the
/// next as many words their pieces' bitmaps; a non-null page pointer is a mapping of
/// `RECORDS_PER_PAGE` records that the shadow owns. Mappings start zeroed.
pub struct Shadow {
    dirs: Box<[*mut *mut u32; DIRS]>,
}

// SAFETY: the raw pointers are to mappings the shadow owns alone (no other reference to them
// exists), so moving it to another thread moves sole ownership; and it is only used under
// the agent's lock.
unsafe impl Send for Shadow {}

impl Default for Shadow {
    fn default() -> Self {
        Shadow {
            dirs: Box::new([std::ptr::null_mut(); DIRS]),
        }
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        for &dir in self.dirs.iter().filter(|d| !d.is_null()) {
            // SAFETY: `dir` is a directory the shadow owns (the invariant on `Shadow`), so
            // its page pointers are readable, and it and its pages are mappings of the sizes
            // unmapped here, each unmapped once, as the shadow is dropped.
            unsafe {
                for i in 0..PAGES_PER_DIR {
                    let page = *dir.add(i);
                    if !page.is_null() {
                        unmap(page, RECORDS_PER_PAGE * 4);
                    }
                }
                unmap(dir, DIR_BYTES);
            }
        }
    }
}

/// Zeroed memory from the kernel; null if refused.
pub fn map<T>(bytes: usize) -> *mut T {
    // SAFETY: an anonymous private mapping at an address the kernel picks touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut T
    }
}

/// Gives a mapping back to the kernel.
///
/// # Safety
/// `p` is a mapping of `bytes` from [`map`], which nothing uses any more.
unsafe fn unmap<T>(p: *mut T, bytes: usize) {
    // SAFETY: `p` is an unused mapping of `bytes` (caller's contract).
    unsafe { libc::munmap(p as *mut libc::c_void, bytes) };
}

/// The directory, page and record of an address; `None` for one the shadow cannot hold.
#[inline]
fn index(addr: usize) -> Option<(usize, usize, usize)> {
    (addr.is_multiple_of(16) && addr >> 47 == 0).then_some((
        addr >> 36,
        (addr >> 20) & (PAGES_PER_DIR - 1),
        (addr >> 4) & (RECORDS_PER_PAGE - 1),
    ))
}

impl Shadow {
    /// `addr`'s record, 0 if it has none.
    #[inline]
    pub fn get(&self, addr: usize) -> u32 {
        let slot = self.find(addr);
        if slot.is_null() {
            return 0;
        }
        // SAFETY: `find` returned a non-null record slot in a page the shadow owns.
        unsafe { *slot }
    }

    /// Where `addr`'s record is, if its page exists; null otherwise, and for an address the
    /// shadow cannot hold (unaligned).
    #[inline]
    pub fn find(&self, addr: usize) -> *mut u32 {
        let Some((d, p, r)) = index(addr) else {
            return std::ptr::null_mut();
        };
        let dir = self.dirs[d];
        if dir.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: `dir` is a directory the shadow owns (the invariant on `Shadow`) and
        // `p < PAGES_PER_DIR`, so its page pointer is readable; a non-null page holds
        // `RECORDS_PER_PAGE` records, and `r` is below that.
        unsafe {
            let page = *dir.add(p);
            if page.is_null() {
                return page;
            }
            page.add(r)
        }
    }

    /// Where `addr`'s record goes, mapping its page if needed, and marking its piece written;
    /// null if the address cannot be held or the kernel refused memory: it goes unrecorded.
    /// The slot stays valid until the shadow is dropped.
    #[inline]
    pub fn make(&mut self, addr: usize) -> *mut u32 {
        let Some((d, p, r)) = index(addr) else {
            return std::ptr::null_mut();
        };
        // SAFETY: a directory is mapped here if missing, and then (the invariant on
        // `Shadow`) holds `PAGES_PER_DIR` page pointers, `p` below that, and the pieces'
        // bitmaps after them; a page is mapped if missing, with `RECORDS_PER_PAGE` records,
        // `r` below that, whose piece `r / RECORDS_PER_PIECE` is below 64.
        unsafe {
            if self.dirs[d].is_null() {
                self.dirs[d] = map(DIR_BYTES);
                if self.dirs[d].is_null() {
                    return std::ptr::null_mut();
                }
            }
            let dir = self.dirs[d];
            if (*dir.add(p)).is_null() {
                *dir.add(p) = map(RECORDS_PER_PAGE * 4);
                if (*dir.add(p)).is_null() {
                    return std::ptr::null_mut();
                }
            }
            *(dir.add(PAGES_PER_DIR + p) as *mut u64) |= 1 << (r / RECORDS_PER_PIECE);
            (*dir.add(p)).add(r)
        }
    }

    /// Every record that is not 0, in address order.
    pub fn for_each(&self, mut f: impl FnMut(usize, u32)) {
        // SAFETY: `f` only reads the records it is handed.
        unsafe { self.scan(|addr, record| f(addr, *record)) }
    }

    /// Every record that is not 0, in address order, to rewrite.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(usize, &mut u32)) {
        // SAFETY: `&mut self` keeps every other access out while `f` writes.
        unsafe { self.scan(|addr, record| f(addr, &mut *record)) }
    }

    /// # Safety
    /// `f` writes through the pointer it is handed only when the caller holds `&mut self`.
    unsafe fn scan(&self, mut f: impl FnMut(usize, *mut u32)) {
        for (d, &dir) in self.dirs.iter().enumerate() {
            if dir.is_null() {
                continue;
            }
            for p in 0..PAGES_PER_DIR {
                // SAFETY: `dir` is a directory the shadow owns (the invariant on `Shadow`),
                // with `PAGES_PER_DIR` page pointers.
                let page = unsafe { *dir.add(p) };
                if page.is_null() {
                    continue;
                }
                // SAFETY: the pieces' bitmaps follow the page pointers in the directory.
                let pieces = unsafe { *(dir.add(PAGES_PER_DIR + p) as *const u64) };
                for piece in (0..64).filter(|i| pieces & 1 << i != 0) {
                    let first = piece * RECORDS_PER_PIECE;
                    for r in first..first + RECORDS_PER_PIECE {
                        // SAFETY: `page` holds `RECORDS_PER_PAGE` initialized records, `r`
                        // below that.
                        let record = unsafe { page.add(r) };
                        // SAFETY: as above.
                        if unsafe { *record } != 0 {
                            f(d << 36 | p << 20 | r << 4, record);
                        }
                    }
                }
            }
        }
    }
}

/// A count for each of many addresses: in a [`Shadow`] where the address is 16-byte aligned
/// (every object of the heap), in a map beside it where it is not (a static object of the
/// interpreter's data). Counts saturate at `u32::MAX - 1`.
#[derive(Default)]
pub struct Counts {
    /// Each count plus one: 0 is "no count".
    shadow: Shadow,
    odd: FxHashMap<usize, u32>,
}

impl Counts {
    fn slot(&mut self, addr: usize) -> &mut u32 {
        let slot = self.shadow.make(addr);
        if slot.is_null() {
            return self.odd.entry(addr).or_insert(0);
        }
        // SAFETY: `make` returned a record slot of the shadow's, valid while it lives, and
        // `&mut self` keeps any other access out while the borrow lasts.
        unsafe { &mut *slot }
    }

    /// Sets `addr`'s count to `n`.
    pub fn insert(&mut self, addr: usize, n: u32) {
        *self.slot(addr) = n.saturating_add(1);
    }

    /// Adds one to `addr`'s count, starting it at 1 if it had none; whether it had one.
    pub fn add(&mut self, addr: usize) -> bool {
        let slot = self.slot(addr);
        let had = *slot != 0;
        *slot = (*slot).max(1).saturating_add(1);
        had
    }

    /// Adds one to `addr`'s count if it has one; whether it had.
    pub fn add_if_counted(&mut self, addr: usize) -> bool {
        let slot = self.shadow.find(addr);
        let stored = if slot.is_null() {
            self.odd.get_mut(&addr)
        } else {
            // SAFETY: `find` returned a record slot of the shadow's, and `&mut self` keeps any
            // other access out while the borrow lasts.
            Some(unsafe { &mut *slot })
        };
        match stored {
            Some(n) if *n != 0 => {
                *n = n.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, addr: usize) -> Option<u32> {
        let slot = self.shadow.find(addr);
        let stored = if slot.is_null() {
            self.odd.get(&addr).copied().unwrap_or(0)
        } else {
            // SAFETY: `find` returned a record slot of the shadow's.
            unsafe { *slot }
        };
        stored.checked_sub(1)
    }

    pub fn remove(&mut self, addr: usize) {
        let slot = self.shadow.find(addr);
        if slot.is_null() {
            self.odd.remove(&addr);
        } else {
            // SAFETY: `find` returned a record slot of the shadow's.
            unsafe { *slot = 0 };
        }
    }

    /// Every address with a count, and the count.
    pub fn for_each(&self, mut f: impl FnMut(usize, u32)) {
        self.shadow.for_each(|addr, stored| f(addr, stored - 1));
        for (&addr, &stored) in &self.odd {
            if stored != 0 {
                f(addr, stored - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sit_at_their_address_and_scan_in_order() {
        let mut s = Shadow::default();
        let base = 0x7f00_0000_0000usize;
        for (addr, record) in [(base + (1 << 20), 7), (base, 3), (base + 16, 5)] {
            // SAFETY: `make` returned a slot of the shadow's, valid while it lives.
            unsafe { *s.make(addr) = record };
        }
        assert_eq!(s.get(base + 16), 5);
        assert_eq!(s.get(base + 32), 0);
        assert!(
            s.find(base + 3).is_null(),
            "unaligned addresses hold nothing"
        );
        let mut seen = Vec::new();
        s.for_each(|a, r| seen.push((a, r)));
        assert_eq!(seen, vec![(base, 3), (base + 16, 5), (base + (1 << 20), 7)]);
    }

    #[test]
    fn counts_start_at_zero_or_one_and_live_beside_odd_addresses() {
        let mut c = Counts::default();
        let (even, odd) = (0x7f00_0000_0000usize, 0x7f00_0000_0008usize);
        c.insert(even, 0);
        assert!(c.add(even), "a count set to 0 is a count");
        assert!(!c.add(odd));
        assert!(c.add_if_counted(odd));
        assert!(!c.add_if_counted(even + 16));
        assert_eq!(
            (c.get(even), c.get(odd), c.get(even + 16)),
            (Some(1), Some(2), None)
        );
        let mut seen = Vec::new();
        c.for_each(|a, n| seen.push((a, n)));
        assert_eq!(seen, vec![(even, 1), (odd, 2)]);
        c.remove(odd);
        c.remove(even);
        assert_eq!((c.get(even), c.get(odd)), (None, None));
    }
}
