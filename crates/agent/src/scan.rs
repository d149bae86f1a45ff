//! A conservative scan for pointers to native blocks, as valgrind's memcheck does at exit:
//! which blocks live memory still points to, which only its stale stack slots or the middle
//! of them, and which nothing points to but other lost blocks.
//!
//! The blocks are the window's native blocks (see `crate::native`). Everything else that is
//! mapped readable and writable is a root: static data, the heap (objects and blocks from
//! before the window, which the agent never saw made), other threads' stacks. The main
//! thread's stack is weak: what only it points to was held by a C frame that has returned, so
//! the block is "possibly lost". Memory freed before the snapshot is scanned too, as the
//! agent cannot tell it from live memory: a stale pointer there hides a leak, and never makes
//! one.
//!
//! Memory is read with `process_vm_readv` on this process, so a mapping that another thread
//! unmaps during the scan reads as absent instead of faulting. The scan's own tables are
//! mapped apart from the heap and skipped.

use crate::live;

/// What the scan found for one block.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Reach {
    /// No pointer to it in live memory, nor from a lost block: the leak itself.
    #[default]
    Definite,
    /// Pointed to only by lost blocks: it goes when they go.
    Indirect,
    /// Pointed to only in its middle, or only by a stale stack slot.
    Possible,
    /// Not reachable but from leaked objects: one of their buffers, part of their leak.
    Owned,
    /// A pointer to its start in live memory.
    Reachable,
}

/// One block: `[start, end)`, and what the scan has seen of it so far.
#[derive(Clone, Copy)]
pub struct Block {
    pub start: usize,
    pub end: usize,
    /// 0 nothing yet, 1 possibly, 2 reachable.
    level: u8,
    /// Pointed to by a lost block.
    lost_parent: bool,
    /// Pointed to by a leaked object, or by a block that is.
    owned: bool,
    pub reach: Reach,
}

impl Block {
    pub fn new(start: usize, size: usize) -> Block {
        Block {
            start,
            end: start + size.max(1),
            level: 0,
            lost_parent: false,
            owned: false,
            reach: Reach::Definite,
        }
    }
}

/// An array in memory mapped apart from the heap, so that the scan never finds its own
/// copies of the addresses it looks for.
pub struct Mapped<T: Copy> {
    ptr: *mut T,
    len: usize,
    cap: usize,
}

impl<T: Copy> Mapped<T> {
    pub fn with_capacity(cap: usize) -> Option<Mapped<T>> {
        let cap = cap.max(1);
        let ptr = live::map::<T>(cap * std::mem::size_of::<T>());
        (!ptr.is_null()).then_some(Mapped { ptr, len: 0, cap })
    }

    /// Adds `value`; false when full.
    pub fn push(&mut self, value: T) -> bool {
        if self.len == self.cap {
            return false;
        }
        // SAFETY: `len < cap`, inside the mapping.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
        true
    }

    pub fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        // SAFETY: the slot was written by `push`.
        Some(unsafe { self.ptr.add(self.len).read() })
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: the first `len` slots were written.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The bytes it maps.
    fn range(&self) -> (usize, usize) {
        let start = self.ptr as usize;
        (start, start + self.cap * std::mem::size_of::<T>())
    }
}

impl<T: Copy> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping `with_capacity` made, unmapped once.
        unsafe {
            libc::munmap(
                self.ptr as *mut libc::c_void,
                self.cap * std::mem::size_of::<T>(),
            )
        };
    }
}

/// A mapping to scan, and whether it is a strong root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    pub strong: bool,
    /// glibc's main heap (`[heap]`), whose chunks can be told free from in use.
    pub brk: bool,
}

/// The mappings that may hold pointers: readable and writable, but devices (whose reads may
/// act) and the kernel's pages.
pub fn regions(maps: &str) -> Vec<Region> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (lo, hi) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let path = fields.nth(3).unwrap_or("");
            let device = path.starts_with("/dev/") && path != "/dev/zero";
            if !perms.starts_with("rw") || device || path.starts_with("[v") {
                return None;
            }
            Some(Region {
                start: usize::from_str_radix(lo, 16).ok()?,
                end: usize::from_str_radix(hi, 16).ok()?,
                strong: path != "[stack]",
                brk: path == "[heap]",
            })
        })
        .filter(|r| r.start < r.end)
        .collect()
}

const CHUNK: usize = 1 << 20;

struct Scan<'a> {
    blocks: &'a mut [Block],
    lo: usize,
    hi: usize,
    work: Mapped<u32>,
    buffer: Mapped<u8>,
    window: Window,
    /// What glibc writes into a chunk it keeps in a thread's cache, if known.
    tcache_key: Option<usize>,
    owners: &'a [(usize, usize)],
}

const WINDOW: usize = 1 << 16;

/// A copy of the heap around the chunk being walked, refilled as the walk goes on.
struct Window {
    buf: Mapped<u8>,
    base: usize,
    len: usize,
}

impl Window {
    /// The word at `addr`, if it can be read.
    fn word(&mut self, addr: usize, end: usize) -> Option<usize> {
        if addr < self.base || addr + 8 > self.base + self.len {
            self.base = addr & !7;
            self.len = read(
                self.base,
                self.buf.ptr,
                WINDOW.min(end.saturating_sub(self.base)),
            );
            if self.len < 8 {
                return None;
            }
        }
        // SAFETY: `addr` lies in the `len` bytes read at `base`.
        Some(unsafe { (self.buf.ptr.add(addr - self.base) as *const usize).read_unaligned() })
    }
}

/// The key glibc (2.34 and later) stores in the second word of a chunk in a thread's cache:
/// read off a chunk freed here twice over, for a size no program fills the cache of.
fn tcache_key() -> Option<usize> {
    let mut keys = [0usize; 2];
    for key in &mut keys {
        // SAFETY: a block of our own, read once freed: the heap stays mapped, and glibc wrote
        // its cache links into it.
        unsafe {
            let p = (crate::libc_fns::get().malloc)(1000) as *mut usize;
            if p.is_null() {
                return None;
            }
            (crate::libc_fns::get().free)(p as *mut libc::c_void);
            *key = std::ptr::read_volatile(p.add(1));
        }
    }
    (keys[0] == keys[1] && keys[0] > 1 << 20).then_some(keys[0])
}

/// Classifies `blocks` (sorted by start, not overlapping, and held in memory that `regions`
/// leave out, such as a [`Mapped`] array) by what `regions` point to, but the leaked objects
/// `owners` (their blocks' `[start, end)`, sorted), which own what only they point to;
/// `seen` is told of every word found in a lost or possibly lost block, with that block's
/// index, to link blocks to the objects they hold. False if the scan's tables could not be
/// mapped: then every block stays definitely lost... so the caller reports nothing.
pub fn classify(
    blocks: &mut [Block],
    regions: &[Region],
    owners: &[(usize, usize)],
    mut seen: impl FnMut(usize, usize),
) -> bool {
    let (Some(work), Some(buffer), Some(window)) = (
        Mapped::<u32>::with_capacity(2 * blocks.len() + 1),
        Mapped::<u8>::with_capacity(CHUNK),
        Mapped::<u8>::with_capacity(WINDOW),
    ) else {
        return false;
    };
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return true;
    };
    let (lo, hi) = (first.start, last.end);
    let own = (blocks.as_ptr() as usize, std::mem::size_of_val(blocks));
    let skip = [
        work.range(),
        buffer.range(),
        window.range(),
        (own.0, own.0 + own.1),
    ];
    let mut scan = Scan {
        blocks,
        lo,
        hi,
        work,
        buffer,
        window: Window {
            buf: window,
            base: 0,
            len: 0,
        },
        tcache_key: tcache_key(),
        owners,
    };
    // Below the stack pointer lie only the slots of returned calls, the agent's among them.
    let sp = crate::unwind::here!().sp;
    for strong in [true, false] {
        for r in regions.iter().filter(|r| r.strong == strong) {
            let mut r = *r;
            if (r.start..r.end).contains(&sp) {
                r.start = sp;
            }
            if !(r.brk && scan.root_heap(&r)) {
                scan.root(&r, &skip);
            }
            scan.drain();
        }
    }
    scan.owned();
    scan.lost(&mut seen);
    true
}

impl Scan<'_> {
    /// The block that holds `word`, and whether `word` is its start. A block's last 8 bytes
    /// are left out: glibc puts the next chunk's header there when the size asked for is not
    /// a multiple of 16, and its free lists point at headers.
    #[inline]
    fn find(&self, word: usize) -> Option<(usize, bool)> {
        if word < self.lo || word >= self.hi {
            return None;
        }
        let i = self.blocks.partition_point(|b| b.start <= word);
        let b = self.blocks.get(i.checked_sub(1)?)?;
        let start = word == b.start;
        (start || word + 8 < b.end).then_some((i - 1, start))
    }

    /// Raises block `i` to `level`, queueing it to be scanned at that level.
    fn mark(&mut self, i: usize, level: u8) {
        if self.blocks[i].level < level {
            self.blocks[i].level = level;
            self.work.push(i as u32);
        }
    }

    /// Reads `[start, end)` in chunks and calls `f` with each aligned word.
    fn words(&mut self, start: usize, end: usize, mut f: impl FnMut(&mut Self, usize)) {
        let mut at = start.next_multiple_of(8);
        while at + 8 <= end {
            let len = (end - at).min(CHUNK) & !7;
            let got = read(at, self.buffer.ptr, len);
            if got == 0 {
                return;
            }
            for k in 0..got / 8 {
                // SAFETY: `got` bytes were read into the buffer.
                let word = unsafe { (self.buffer.ptr as *const usize).add(k).read_unaligned() };
                f(self, word);
            }
            at += got.max(8);
        }
    }

    /// Scans one mapping, but the blocks in it and the scan's own tables. Nothing is
    /// allocated here: a list of the holes on the heap would be found by the scan itself.
    fn root(&mut self, r: &Region, skip: &[(usize, usize)]) {
        let level = if r.strong { 2 } else { 1 };
        let mut block = self.blocks.partition_point(|b| b.end <= r.start);
        let mut at = r.start;
        while at < r.end {
            while block < self.blocks.len() && self.blocks[block].end <= at {
                block += 1;
            }
            // The next hole that ends after `at`, by its start.
            let mut hole = (r.end, r.end);
            if let Some(b) = self.blocks.get(block) {
                hole = hole.min((b.start, b.end));
            }
            for &(s, e) in skip.iter().filter(|&&(_, e)| e > at) {
                hole = hole.min((s, e));
            }
            if let Some(&owner) = self.owners.get(self.owners.partition_point(|o| o.1 <= at)) {
                hole = hole.min(owner);
            }
            if hole.0 > at {
                self.words(at, hole.0.min(r.end), |scan, word| {
                    if let Some((i, start)) = scan.find(word) {
                        scan.mark(i, if start { level } else { 1 });
                    }
                });
            }
            at = at.max(hole.1).max(hole.0.min(r.end));
        }
    }

    /// Scans glibc's main heap chunk by chunk, leaving out free chunks, whose bytes are what
    /// freed blocks held (stale pointers would hide leaks), and the blocks' own chunks. False
    /// if the heap does not read as glibc's chunks: then it is scanned whole.
    fn root_heap(&mut self, r: &Region) -> bool {
        let mut chunk = r.start;
        while chunk + 32 <= r.end {
            let Some(size) = self.window.word(chunk + 8, r.end).map(|w| w & !7) else {
                return false;
            };
            let next = chunk + size;
            if size < 32 || !size.is_multiple_of(16) || next > r.end {
                return false;
            }
            // The last chunk is the top, free.
            if next + 16 > r.end {
                return true;
            }
            let in_use = self
                .window
                .word(next + 8, r.end)
                .is_some_and(|w| w & 1 != 0);
            let user = chunk + 16;
            let cached =
                self.tcache_key.is_some() && self.window.word(user + 8, r.end) == self.tcache_key;
            let own_block = matches!(self.find(user), Some((_, true)))
                || self.owners.binary_search_by_key(&user, |o| o.0).is_ok();
            if in_use && !cached && !own_block {
                // An in-use chunk's last word is the next chunk's first.
                let mut at = user;
                while at < next + 8 {
                    if let Some(word) = self.window.word(at, r.end) {
                        if let Some((i, start)) = self.find(word) {
                            self.mark(i, if start { 2 } else { 1 });
                        }
                    }
                    at += 8;
                }
            }
            chunk = next;
        }
        true
    }

    /// Nothing but lost blocks reach block `i`.
    fn lost_block(&self, i: usize) -> bool {
        self.blocks[i].level == 0 && !self.blocks[i].owned
    }

    /// Scans every queued block at its level.
    fn drain(&mut self) {
        while let Some(i) = self.work.pop() {
            let b = self.blocks[i as usize];
            self.words(b.start, b.end, |scan, word| {
                if let Some((j, start)) = scan.find(word) {
                    if j != i as usize {
                        scan.mark(j, if start { b.level } else { 1 });
                    }
                }
            });
        }
    }

    /// Marks the blocks that leaked objects point to, and what those point to, as owned.
    fn owned(&mut self) {
        for k in 0..self.owners.len() {
            let (start, end) = self.owners[k];
            self.words(start, end, |scan, word| {
                if let Some((j, _)) = scan.find(word) {
                    if !scan.blocks[j].owned {
                        scan.blocks[j].owned = true;
                        scan.work.push(j as u32);
                    }
                }
            });
        }
        while let Some(i) = self.work.pop() {
            let b = self.blocks[i as usize];
            self.words(b.start, b.end, |scan, word| {
                if let Some((j, _)) = scan.find(word) {
                    if !scan.blocks[j].owned {
                        scan.blocks[j].owned = true;
                        scan.work.push(j as u32);
                    }
                }
            });
        }
    }

    /// Sorts the blocks nothing reached into definitely and indirectly lost: one pointed to
    /// by no lost block is definitely lost, and what it points to indirectly; of a cycle of
    /// lost blocks, the first is definitely lost.
    fn lost(&mut self, seen: &mut impl FnMut(usize, usize)) {
        for i in 0..self.blocks.len() {
            let b = self.blocks[i];
            match b.level {
                2 => {
                    self.blocks[i].reach = Reach::Reachable;
                    continue;
                }
                _ if b.owned => {
                    self.blocks[i].reach = Reach::Owned;
                    continue;
                }
                1 => self.blocks[i].reach = Reach::Possible,
                _ => {}
            }
            self.words(b.start, b.end, |scan, word| {
                seen(i, word);
                if let Some((j, _)) = scan.find(word) {
                    if j != i && scan.lost_block(j) {
                        scan.blocks[j].lost_parent = true;
                    }
                }
            });
        }
        // Leaders first: blocks no lost block points to, then the first of each cycle.
        let leaders: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| self.lost_block(i) && !self.blocks[i].lost_parent)
            .collect();
        let mut done = vec![false; self.blocks.len()];
        let rest = 0..self.blocks.len();
        for i in leaders.into_iter().chain(rest) {
            if done[i] || !self.lost_block(i) {
                continue;
            }
            done[i] = true;
            self.blocks[i].reach = Reach::Definite;
            self.work.push(i as u32);
            while let Some(k) = self.work.pop() {
                let b = self.blocks[k as usize];
                self.words(b.start, b.end, |scan, word| {
                    if let Some((j, _)) = scan.find(word) {
                        if !done[j] && scan.lost_block(j) {
                            done[j] = true;
                            scan.blocks[j].reach = Reach::Indirect;
                            scan.work.push(j as u32);
                        }
                    }
                });
            }
        }
    }
}

/// Copies `len` bytes at `addr` of this process into `to`; returns how many were readable.
fn read(addr: usize, to: *mut u8, len: usize) -> usize {
    let local = libc::iovec {
        iov_base: to as *mut libc::c_void,
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `to` has room for `len` bytes; a remote range that is not mapped is an error
    // the kernel returns, not a fault.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_writable_mappings_and_the_stack_is_weak() {
        let maps = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/python3.11
55d0c0a03000-55d0c0a04000 rw-p 00002000 fe:01 123 /usr/bin/python3.11
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-s 00000000 00:05 9 /dev/nvidia0
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
7ffd1c200000-7ffd1c202000 r--p 00000000 00:00 0 [vvar]
";
        let r = regions(maps);
        assert_eq!(r.len(), 3);
        assert!(r[0].strong && r[1].strong && !r[2].strong);
        assert!(r[1].brk && !r[0].brk && !r[2].brk);
        assert_eq!((r[1].start, r[1].end), (0x55d0c1000000, 0x55d0c1100000));
    }

    /// Blocks and roots in one array of words: block k is words [8k, 8k + 8).
    fn heap_of(
        words: &mut [usize],
        roots: &[usize],
        weak: &[usize],
        owners: &[(usize, usize)],
    ) -> Vec<Reach> {
        let base = words.as_ptr() as usize;
        let root = Box::new([0usize; 4]);
        let mut root_words = *root;
        for (k, &r) in roots.iter().enumerate() {
            root_words[k] = r;
        }
        let root_box = Box::new(root_words);
        let stack_box = Box::new([weak.first().copied().unwrap_or(0); 1]);
        let mut blocks = Mapped::<Block>::with_capacity(words.len() / 8).unwrap();
        for k in 0..words.len() / 8 {
            blocks.push(Block::new(base + 64 * k, 64));
        }
        let region = |p: usize, n: usize, strong| Region {
            start: p,
            end: p + n,
            strong,
            brk: false,
        };
        let regions = [
            region(root_box.as_ptr() as usize, 32, true),
            region(stack_box.as_ptr() as usize, 8, false),
            region(base, words.len() * 8, true),
        ];
        assert!(classify(blocks.as_mut_slice(), &regions, owners, |_, _| {}));
        blocks.as_mut_slice().iter().map(|b| b.reach).collect()
    }

    #[test]
    fn lost_indirect_possible_and_reachable_blocks() {
        let mut words = vec![0usize; 8 * 6];
        let base = words.as_ptr() as usize;
        let at = |k: usize| base + 64 * k;
        // 0 is held by a root and holds 1; 2 is held by nothing and holds 3;
        // 4 only by a stale stack slot; 5 only through its middle, from a root.
        words[0] = at(1);
        words[16] = at(3);
        let reach = heap_of(&mut words, &[at(0), at(5) + 24], &[at(4)], &[]);
        use Reach::*;
        assert_eq!(
            reach,
            [Reachable, Reachable, Definite, Indirect, Possible, Possible]
        );
    }

    #[test]
    fn a_lost_cycle_has_one_definite_block() {
        let mut words = vec![0usize; 8 * 2];
        let base = words.as_ptr() as usize;
        words[0] = base + 64;
        words[8] = base;
        let reach = heap_of(&mut words, &[], &[], &[]);
        assert_eq!(reach, [Reach::Definite, Reach::Indirect]);
    }

    #[test]
    fn what_only_a_leaked_object_points_to_is_its_own() {
        let mut words = vec![0usize; 8 * 3];
        let base = words.as_ptr() as usize;
        // A leaked object holds block 0, which holds block 1; a root holds block 2.
        let object = Box::new([base, 0usize]);
        let owners = [(object.as_ptr() as usize, object.as_ptr() as usize + 16)];
        words[0] = base + 64;
        let reach = heap_of(&mut words, &[base + 128], &[], &owners);
        assert_eq!(reach, [Reach::Owned, Reach::Owned, Reach::Reachable]);
    }
}
