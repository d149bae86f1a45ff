//! Pure parsers for the `/proc/PID/*` files that `watch` reads. They take the file's text and
//! never touch the file system, so they are tested against stored samples.

/// `/proc/PID/statm`, converted from pages to bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statm {
    pub vms: u64,
    pub rss: u64,
    pub shared: u64,
    pub text: u64,
    pub data: u64,
}

/// The fields of `/proc/PID/stat` that `watch` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// One letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Clock ticks since boot; with the PID it names a process uniquely.
    pub start_time: u64,
}

impl Stat {
    /// A zombie has exited; only its parent has not collected the exit status yet.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Proportional and unique set sizes from `/proc/PID/smaps_rollup`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    pub pss: u64,
    pub uss: u64,
    pub swap: u64,
}

pub fn parse_statm(text: &str, page_size: u64) -> Option<Statm> {
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    // A count the kernel cannot have written (bytes past u64) is no answer, not a panic.
    let mut next = || fields.next().flatten()?.checked_mul(page_size);
    let vms = next()?;
    let rss = next()?;
    let shared = next()?;
    let text = next()?;
    let _lib = next()?;
    let data = next()?;
    Some(Statm {
        vms,
        rss,
        shared,
        text,
        data,
    })
}

pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may itself hold spaces and parentheses, so the
    // numeric fields start after the last `)`.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields are numbered as in proc(5): the one after the name is field 3.
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let mut skip_to = |from: usize, to: usize| fields.nth(to - from);
    let state = skip_to(3, 3)?.chars().next()?;
    let minor_faults = skip_to(4, 10)?.parse().ok()?;
    let major_faults = skip_to(11, 12)?.parse().ok()?;
    let start_time = skip_to(13, 22)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        minor_faults,
        major_faults,
        start_time,
    })
}

/// The value of a `Key:   123 kB` line, in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// Swapped-out bytes from `/proc/PID/status`; kernel threads have no `VmSwap` line.
pub fn parse_status_swap(text: &str) -> Option<u64> {
    kb_field(text, "VmSwap")
}

pub fn parse_smaps_rollup(text: &str) -> Option<Rollup> {
    Some(Rollup {
        pss: kb_field(text, "Pss")?,
        uss: kb_field(text, "Private_Clean")?.checked_add(kb_field(text, "Private_Dirty")?)?,
        swap: kb_field(text, "Swap").unwrap_or(0),
    })
}

/// `/proc/PID/task/TID/children`: space-separated PIDs.
pub fn parse_children(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.split_ascii_whitespace()
        .filter_map(|pid| pid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = include_str!("../tests/samples/stat.txt");
    const STATM: &str = include_str!("../tests/samples/statm.txt");
    const STATUS: &str = include_str!("../tests/samples/status.txt");
    const ROLLUP: &str = include_str!("../tests/samples/smaps_rollup.txt");
    const ZOMBIE: &str = include_str!("../tests/samples/stat_zombie.txt");

    #[test]
    fn statm_in_bytes() {
        let m = parse_statm(STATM, 4096).unwrap();
        assert_eq!(m.vms, 16349 * 4096);
        assert_eq!(m.rss, 15600 * 4096);
        assert_eq!(m.shared, 1676 * 4096);
        assert_eq!(m.text, 4096);
        assert_eq!(m.data, 14227 * 4096);
    }

    #[test]
    fn statm_rejects_truncated_text() {
        assert_eq!(parse_statm("16349 15600", 4096), None);
        assert_eq!(parse_statm("", 4096), None);
        assert_eq!(parse_statm("a b c d e f g", 4096), None);
    }

    #[test]
    fn stat_fields() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, "python3");
        assert_eq!(s.state, 'S');
        assert_eq!(s.minor_faults, 15079);
        assert_eq!(s.major_faults, 1);
        assert_eq!(s.start_time, 576789);
        assert!(!s.has_exited());
    }

    #[test]
    fn stat_command_name_with_spaces_and_parentheses() {
        let line = STAT.replacen("(python3)", "(my (odd) name)", 1);
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, "my (odd) name");
        assert_eq!(s.minor_faults, 15079);
    }

    #[test]
    fn zombie_has_exited() {
        let s = parse_stat(ZOMBIE).unwrap();
        assert_eq!(s.state, 'Z');
        assert!(s.has_exited());
    }

    #[test]
    fn status_swap() {
        assert_eq!(parse_status_swap(STATUS), Some(0));
        assert_eq!(
            parse_status_swap("Name:\tx\nVmSwap:\t  12 kB\n"),
            Some(12 * 1024)
        );
        assert_eq!(parse_status_swap("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn rollup_sums_private_pages_for_uss() {
        let r = parse_smaps_rollup(ROLLUP).unwrap();
        let kb = |line: &str| kb_field(ROLLUP, line).unwrap();
        assert_eq!(r.uss, kb("Private_Clean") + kb("Private_Dirty"));
        assert_eq!(r.pss, kb("Pss"));
        assert!(r.uss > 50_000_000, "the sample holds a 50 MB bytearray");
    }

    #[test]
    fn pss_is_not_confused_with_pss_anon() {
        let r = parse_smaps_rollup(
            "Pss_Anon: 5 kB\nPss: 7 kB\nPrivate_Clean: 1 kB\nPrivate_Dirty: 2 kB\n",
        )
        .unwrap();
        assert_eq!(r.pss, 7 * 1024);
        assert_eq!(r.uss, 3 * 1024);
    }

    #[test]
    fn children_list() {
        assert_eq!(parse_children("12 345 \n").collect::<Vec<_>>(), [12, 345]);
        assert_eq!(parse_children("").count(), 0);
    }
}
