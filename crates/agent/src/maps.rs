//! Readable memory of this process, from `/proc/self/maps`, so that a word that might be a
//! pointer is followed only when it points into mapped memory.

/// The mapping that holds an address, and the end of the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub lo: usize,
    pub hi: usize,
    pub previous_end: usize,
    /// The main thread's stack, which grows down as far as its rlimit.
    pub main_stack: bool,
}

/// The mapping that holds `addr`, read from `/proc/self/maps` without allocating or taking a
/// lock: a hook may run inside any libc function (glibc's `pthread_getattr_np` reallocates
/// with its thread's lock held, so asking it for a stack from a hook deadlocked 3.14).
pub fn mapping_of(addr: usize) -> Option<Mapping> {
    // SAFETY: a constant NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let (mut filled, mut previous_end, mut found) = (0, 0, None);
    loop {
        // SAFETY: reads into the unfilled rest of the local buffer.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
            if let Some(m) = parse_line(&buf[start..start + end], previous_end) {
                if (m.lo..m.hi).contains(&addr) {
                    found = Some(m);
                }
                previous_end = m.hi;
            }
            start += end + 1;
        }
        if found.is_some() {
            break;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            break; // a line longer than the buffer: no maps line is
        }
    }
    // SAFETY: the descriptor opened above, closed once.
    unsafe { libc::close(fd) };
    found
}

/// One line of `/proc/self/maps`: `lo-hi perms offset dev inode [path]`.
fn parse_line(line: &[u8], previous_end: usize) -> Option<Mapping> {
    let line = std::str::from_utf8(line).ok()?;
    let (lo, hi) = line.split_ascii_whitespace().next()?.split_once('-')?;
    Some(Mapping {
        lo: usize::from_str_radix(lo, 16).ok()?,
        hi: usize::from_str_radix(hi, 16).ok()?,
        previous_end,
        main_stack: line.ends_with("[stack]"),
    })
}

pub struct Readable {
    ranges: Vec<(usize, usize)>,
}

impl Readable {
    pub fn of_self() -> Readable {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        Readable::parse(&text)
    }

    pub fn parse(text: &str) -> Readable {
        let mut ranges: Vec<(usize, usize)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let (lo, hi) = fields.next()?.split_once('-')?;
                let perms = fields.next()?;
                if !perms.starts_with('r') || line.ends_with("[vvar]") {
                    return None;
                }
                Some((
                    usize::from_str_radix(lo, 16).ok()?,
                    usize::from_str_radix(hi, 16).ok()?,
                ))
            })
            .filter(|(lo, hi)| lo < hi)
            .collect();
        ranges.sort_unstable();
        Readable { ranges }
    }

    /// Whether `[addr, addr + len)` lies inside one readable mapping.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        i > 0
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.ranges[i - 1].1)
    }

    /// A checker for addresses asked in ascending order (a sorted list of objects): each
    /// costs a step along the ranges, not a search. It answers as [`Readable::contains`]
    /// does for any order, searching again when an address comes lower than the last.
    pub fn ascending(self) -> Ascending {
        Ascending {
            ranges: self.ranges,
            next: 0,
        }
    }
}

/// See [`Readable::ascending`].
pub struct Ascending {
    ranges: Vec<(usize, usize)>,
    /// The first range that does not end at or below the last address asked.
    next: usize,
}

impl Ascending {
    pub fn contains(&mut self, addr: usize, len: usize) -> bool {
        if self.next > 0 && addr < self.ranges[self.next - 1].1 {
            self.next = self.ranges.partition_point(|r| r.1 <= addr);
        }
        while self.ranges.get(self.next).is_some_and(|r| r.1 <= addr) {
            self.next += 1;
        }
        // The ranges are disjoint: only this one can hold `addr`.
        self.ranges.get(self.next).is_some_and(|&(lo, hi)| {
            lo <= addr && addr.checked_add(len).is_some_and(|end| end <= hi)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lines shaped like the file's, with addresses up to `usize::MAX` either way round.
    fn maps_text() -> impl Strategy<Value = String> {
        let line = (
            any::<usize>(),
            any::<usize>(),
            prop::sample::select(vec!["r--p", "rw-p", "r-xp", "---p", "rw", "", "r"]),
            prop::sample::select(vec![
                "",
                " [stack]",
                " [vvar]",
                " [heap]",
                " /dev/zero",
                " /x y",
            ]),
        )
            .prop_map(|(lo, hi, perms, path)| {
                format!("{lo:x}-{hi:x} {perms} 00000000 00:00 0{path}")
            });
        prop_oneof![
            prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n")),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn readable_ranges_are_ranges_and_hold_what_they_say(text in maps_text(),
                                                             addr in any::<usize>(),
                                                             len in any::<usize>()) {
            let r = Readable::parse(&text);
            prop_assert!(r.ranges.iter().all(|(lo, hi)| lo < hi));
            if r.contains(addr, len) {
                prop_assert!(r.ranges.iter().any(|&(lo, hi)| lo <= addr && addr + len <= hi));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn ascending_checks_answer_as_searches_do(
            bounds in prop::collection::btree_set(0usize..1 << 20, 0..24),
            mut asks in prop::collection::vec((0usize..1 << 20, 1usize..64), 0..64),
        ) {
            // Disjoint ranges, as the file's are, from pairs of sorted bounds.
            let bounds: Vec<usize> = bounds.into_iter().collect();
            let text: Vec<String> = bounds
                .chunks_exact(2)
                .map(|b| format!("{:x}-{:x} r--p 00000000 00:00 0", b[0], b[1]))
                .collect();
            let readable = Readable::parse(&text.join("\n"));
            let mut ascending = Readable::parse(&text.join("\n")).ascending();
            // Mostly ascending, as entries are, with a step back now and then.
            asks.sort_unstable();
            if asks.len() > 4 {
                asks.swap(1, 3);
            }
            for (addr, len) in asks {
                prop_assert_eq!(ascending.contains(addr, len), readable.contains(addr, len));
            }
        }
    }

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/python3.11
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 123 /usr/bin/python3.11
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
7ffd1c100000-7ffd1c104000 ---p 00000000 00:00 0
7ffd1c200000-7ffd1c202000 r--p 00000000 00:00 0 [vvar]
";

    #[test]
    fn readable_ranges_exclude_unreadable_and_vvar() {
        let r = Readable::parse(SAMPLE);
        assert!(r.contains(0x55d0c0a00000, 8));
        assert!(r.contains(0x55d0c0a01ff8, 8));
        assert!(!r.contains(0x55d0c0a02000, 8));
        assert!(r.contains(0x7ffd1c000010, 16));
        assert!(!r.contains(0x7ffd1c100000, 8));
        assert!(!r.contains(0x7ffd1c200000, 8));
        assert!(!r.contains(0x10, 8));
    }

    #[test]
    fn the_mapping_of_an_address_comes_with_the_end_of_the_previous_one() {
        let mut previous = 0;
        let lines: Vec<Mapping> = SAMPLE
            .lines()
            .filter_map(|l| {
                let m = parse_line(l.as_bytes(), previous)?;
                previous = m.hi;
                Some(m)
            })
            .collect();
        assert_eq!(
            lines[2],
            Mapping {
                lo: 0x7ffd1c000000,
                hi: 0x7ffd1c021000,
                previous_end: 0x55d0c0a02000,
                main_stack: true
            }
        );
        assert!(!lines[3].main_stack);
    }

    #[test]
    fn this_threads_stack_is_found_without_allocating() {
        let local = 0u64;
        let at = &local as *const u64 as usize;
        let m = mapping_of(at).expect("the stack is mapped");
        assert!(m.lo <= at && at < m.hi);
        assert!(m.previous_end <= m.lo);
    }

    #[test]
    fn a_read_may_not_cross_the_end_of_a_mapping() {
        let r = Readable::parse(SAMPLE);
        assert!(!r.contains(0x7ffd1c020ffc, 8));
    }
}
