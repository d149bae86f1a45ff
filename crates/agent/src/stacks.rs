//! Interned creation stacks: each distinct (native, Python) stack is stored once per window
//! and measured run and named by a `u32`, so that a million objects from one line cost one
//! stack, and an object's window and run come with its stack instead of taking room of their
//! own.

use crate::pyframes::PyFrameRef;
use hashbrown::HashTable;
use std::hash::Hasher;

/// When a stack was taken: in which window (see `crate::windows`) and in which of its
/// measured runs (0 outside repetition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub run: u16,
    pub window: u32,
}

impl Stamp {
    fn hash(self) -> u64 {
        ((self.run as u64) << 32 | self.window as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    native: u16,
    python: u16,
    stamp: Stamp,
    /// The allocator of a native block's stack (see `crate::native::ALLOCATORS`), 0 for an
    /// object's: the same C path makes a different group for each.
    alloc: u8,
    hash: u64,
    /// The hash of its creation site alone, the same in every run (see
    /// [`StackTable::site_hash`]).
    site_hash: u64,
}

#[derive(Default)]
pub struct StackTable {
    /// Native addresses, then (code, offset) pairs, of every stack back to back.
    words: Vec<u64>,
    entries: Vec<Entry>,
    index: HashTable<u32>,
    /// The stack interned last: a loop allocates from one stack many times in a row, and a
    /// comparison with it is cheaper than hashing.
    last: Option<u32>,
    /// The code object of the function that makes each measured call (`_window._measured`):
    /// a site's hash leaves out the frames from there outward, which differ between the
    /// measured runs and the holder run that makes the same call from elsewhere.
    pub call_code: usize,
    /// `[start, end)` of the interpreter's module: a site is named by the first frame outside.
    pub interpreter: (usize, usize),
}

impl StackTable {
    pub fn new(interpreter: (usize, usize)) -> StackTable {
        StackTable {
            interpreter,
            ..StackTable::default()
        }
    }

    /// Forgets every stack, keeping the room they took (and any reserved for traps): an
    /// outermost window starts with nothing recorded, so no id is left to name one. Stamped
    /// by window, a session's windows would otherwise each add their own copies (a pytest
    /// session's table grew to hundreds of megabytes).
    pub fn clear(&mut self) {
        self.words.clear();
        self.entries.clear();
        self.index.clear();
        self.last = None;
    }

    /// The id of this stack, adding it if new; `is_new` reports whether it was.
    pub fn intern(
        &mut self,
        native: &[u64],
        python: &[PyFrameRef],
        stamp: Stamp,
        alloc: u8,
        is_new: &mut bool,
    ) -> u32 {
        self.intern_within(native, python, (stamp, alloc), is_new, true)
            .expect("may grow")
    }

    /// As [`StackTable::intern`], but from a signal handler: a new stack is added only in the
    /// room reserved (see [`StackTable::reserve`]), never by allocating; None without room.
    pub fn intern_in_signal(
        &mut self,
        native: &[u64],
        python: &[PyFrameRef],
        stamp: Stamp,
        is_new: &mut bool,
    ) -> Option<u32> {
        self.intern_within(native, python, (stamp, 0), is_new, false)
    }

    /// Room for `stacks` more stacks of `words` words in all, reserved ahead of a signal
    /// handler's needs.
    pub fn reserve(&mut self, stacks: usize, words: usize) {
        if self.entries.capacity() - self.entries.len() < stacks / 2 {
            self.entries.reserve(stacks);
            self.index
                .reserve(stacks, |&i| self.entries[i as usize].hash);
        }
        if self.words.capacity() - self.words.len() < words / 2 {
            self.words.reserve(words);
        }
    }

    fn intern_within(
        &mut self,
        native: &[u64],
        python: &[PyFrameRef],
        (stamp, alloc): (Stamp, u8),
        is_new: &mut bool,
        grow: bool,
    ) -> Option<u32> {
        *is_new = false;
        if let Some(last) = self.last {
            let e = self.entries[last as usize];
            if e.stamp == stamp && e.alloc == alloc && self.matches(e, native, python) {
                return Some(last);
            }
        }
        let inner = python
            .iter()
            .position(|f| f.code == self.call_code)
            .unwrap_or(python.len());
        let hash =
            words_hash(native.iter(), &python[..inner]) ^ stamp.hash() ^ (alloc as u64) << 56;
        let found = self.index.find(hash, |&id| {
            let e = self.entries[id as usize];
            e.hash == hash
                && e.stamp == stamp
                && e.alloc == alloc
                && self.matches(e, native, python)
        });
        if let Some(&id) = found {
            self.last = Some(id);
            return Some(id);
        }
        let needed = native.len() + 2 * python.len();
        let room = self.words.capacity() - self.words.len() >= needed
            && self.entries.len() < self.entries.capacity()
            && self.index.len() < self.index.capacity();
        if !grow && !room {
            return None;
        }
        *is_new = true;
        // Needed only by a new entry: most walks find their stack interned already.
        let (lo, hi) = self.interpreter;
        let creation = native
            .iter()
            .find(|&&pc| !(lo..hi).contains(&(pc as usize)));
        let site_hash = words_hash(creation.into_iter(), &python[..inner]);
        let id = self.entries.len() as u32;
        let start = self.words.len() as u32;
        self.words.extend_from_slice(native);
        for f in python {
            self.words.push(f.code as u64);
            self.words.push(f.offset as u64);
        }
        self.entries.push(Entry {
            start,
            native: native.len() as u16,
            python: python.len() as u16,
            stamp,
            alloc,
            hash,
            site_hash,
        });
        let entries = &self.entries;
        self.index
            .insert_unique(hash, id, |&i| entries[i as usize].hash);
        self.last = Some(id);
        Some(id)
    }

    fn matches(&self, e: Entry, native: &[u64], python: &[PyFrameRef]) -> bool {
        if e.native as usize != native.len() || e.python as usize != python.len() {
            return false;
        }
        let s = e.start as usize;
        let n = native.len();
        self.words[s..s + n] == *native
            && python.iter().enumerate().all(|(i, f)| {
                self.words[s + n + 2 * i] == f.code as u64
                    && self.words[s + n + 2 * i + 1] == f.offset as u64
            })
    }

    /// When the stack was taken.
    pub fn stamp(&self, id: u32) -> Stamp {
        self.entries[id as usize].stamp
    }

    /// How many stacks are interned; their ids are below.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The allocator of a native block's stack; 0 for an object's.
    pub fn allocator(&self, id: u32) -> u8 {
        self.entries[id as usize].alloc
    }

    /// A hash of the stack's creation site: its first native frame outside the interpreter
    /// and its Python frames up to the measured call. The interpreter's own frames between
    /// them change once it specializes a call (3.14 did after two runs), the site does not.
    pub fn site_hash(&self, id: u32) -> u64 {
        self.entries[id as usize].site_hash
    }

    /// The stack's words, the same in every run: what makes two stacks one creation site.
    pub fn site(&self, id: u32) -> &[u64] {
        let e = self.entries[id as usize];
        &self.words[e.start as usize..e.start as usize + e.native as usize + 2 * e.python as usize]
    }

    pub fn native(&self, id: u32) -> &[u64] {
        let e = self.entries[id as usize];
        &self.words[e.start as usize..e.start as usize + e.native as usize]
    }

    pub fn python(&self, id: u32) -> impl Iterator<Item = PyFrameRef> + '_ {
        let e = self.entries[id as usize];
        let s = e.start as usize + e.native as usize;
        self.words[s..s + 2 * e.python as usize]
            .chunks_exact(2)
            .map(|w| PyFrameRef {
                code: w[0] as usize,
                offset: w[1] as i32,
            })
    }
}

fn words_hash<'a>(native: impl Iterator<Item = &'a u64>, python: &[PyFrameRef]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    for pc in native {
        h.write_u64(*pc);
    }
    for f in python {
        h.write_usize(f.code);
        h.write_i32(f.offset);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stack_same_id_and_round_trip() {
        let mut t = StackTable::default();
        let py = [PyFrameRef {
            code: 7,
            offset: 12,
        }];
        let mut new = false;
        let a = t.intern(&[1, 2, 3], &py, Stamp::default(), 0, &mut new);
        assert!(new);
        let b = t.intern(&[1, 2, 3], &py, Stamp::default(), 0, &mut new);
        assert!(!new);
        assert_eq!(a, b);
        let c = t.intern(&[1, 2], &py, Stamp::default(), 0, &mut new);
        assert_ne!(a, c);
        let native = t.intern(&[1, 2, 3], &py, Stamp::default(), 3, &mut new);
        assert!(new && native != a && t.allocator(native) == 3 && t.allocator(a) == 0);
        let d = t.intern(&[1, 2, 3], &py, Stamp { run: 2, window: 0 }, 0, &mut new);
        assert!(new && d != a);
        assert_eq!((t.stamp(d).run, t.site(d)), (2, t.site(a)));
        assert_eq!(t.site_hash(d), t.site_hash(a));
        let nested = Stamp { run: 2, window: 1 };
        let e = t.intern(&[1, 2, 3], &py, nested, 0, &mut new);
        assert!(new && e != d && t.stamp(e) == nested && t.site_hash(e) == t.site_hash(a));
        assert_eq!(t.native(a), &[1, 2, 3]);
        assert_eq!(t.python(a).collect::<Vec<_>>(), py.to_vec());
    }

    #[test]
    fn a_site_is_its_first_frame_outside_the_interpreter_and_its_python_stack() {
        // The interpreter spans [100, 200): 150 and 160 are its frames, 5 the extension's.
        let mut t = StackTable::new((100, 200));
        let py = [PyFrameRef {
            code: 7,
            offset: 12,
        }];
        let mut new = false;
        let generic = t.intern(
            &[150, 5, 160, 170],
            &py,
            Stamp { run: 1, window: 0 },
            0,
            &mut new,
        );
        let specialized = t.intern(
            &[150, 5, 180],
            &py,
            Stamp { run: 1, window: 0 },
            0,
            &mut new,
        );
        assert_ne!(generic, specialized);
        assert_eq!(t.site_hash(generic), t.site_hash(specialized));
        let other_c_line = t.intern(
            &[150, 6, 160, 170],
            &py,
            Stamp { run: 1, window: 0 },
            0,
            &mut new,
        );
        assert_ne!(t.site_hash(other_c_line), t.site_hash(generic));
        let other_python_line = [PyFrameRef {
            code: 7,
            offset: 14,
        }];
        let elsewhere = t.intern(
            &[150, 5, 160, 170],
            &other_python_line,
            Stamp { run: 1, window: 0 },
            0,
            &mut new,
        );
        assert_ne!(t.site_hash(elsewhere), t.site_hash(generic));
    }
}
