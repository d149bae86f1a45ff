//! Readable memory of this process, from `/proc/self/maps`, so that a word that might be a
//! pointer is followed only when it points into mapped memory.

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_read_may_not_cross_the_end_of_a_mapping() {
        let r = Readable::parse(SAMPLE);
        assert!(!r.contains(0x7ffd1c020ffc, 8));
    }
}
