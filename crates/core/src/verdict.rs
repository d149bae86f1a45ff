//! Whether a capture may hold a leak, judged in the traced process before anything is
//! symbolized: a clean window (most tests of a suite) then needs no report at all.
//!
//! The verdict is the report's own rule ([`crate::report`], [`crate::native`]) with the parts
//! that need symbols made generous: groups are summed by type alone, where the report sums
//! them by type and site, and native blocks by allocator alone, where the report sums them by
//! allocator and site (a coarser sum grows wherever a finer one does), and every
//! unexplained entry counts, where the report drops those a holder run found to be the
//! interpreter's bookkeeping. So whatever the report would call a leak, the verdict flags.

use crate::capture::{Capture, Counters};
use serde::Serialize;
use std::collections::HashMap;

/// Whether each of the `measured` runs left something (`runs` is per run, in order).
pub fn grew_in_every_run(runs: &[u64], measured: u32) -> bool {
    runs.len() == measured as usize && runs.iter().all(|&n| n > 0)
}

/// What the process learns of its window before deciding whether to report it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// The report may list a leak: symbolize and build it.
    pub might_leak: bool,
    pub counters: Counters,
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn of(capture: &Capture) -> Verdict {
        Verdict {
            might_leak: might_leak(capture),
            counters: capture.counters.clone(),
            notes: capture.notes.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("verdict serializes")
    }
}

fn might_leak(capture: &Capture) -> bool {
    let repeat = capture.counters.repeat.map(|r| r.runs).filter(|&r| r > 0);
    if !capture.unexplained.is_empty() {
        return true;
    }
    let leaks = capture.groups.iter().filter(|g| g.class.is_leak());
    let Some(runs) = repeat else {
        return capture
            .native
            .iter()
            .any(|n| n.definite.count + n.indirect.count > 0)
            || leaks.count() > 0;
    };
    let native = capture.native.iter().map(|n| (&*n.allocator, &*n.runs));
    any_grew(native, runs) || any_grew(leaks.map(|g| (&*g.type_name, &*g.runs)), runs)
}

/// Whether the runs of any key, summed over its items, grew in each of `runs` runs.
fn any_grew<'a>(items: impl Iterator<Item = (&'a str, &'a [u64])>, runs: u32) -> bool {
    let mut sums: HashMap<&str, Vec<u64>> = HashMap::new();
    for (key, item) in items {
        let sum = sums.entry(key).or_insert_with(|| vec![0; runs as usize]);
        for (total, n) in sum.iter_mut().zip(item) {
            *total += n;
        }
    }
    sums.values().any(|sum| grew_in_every_run(sum, runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Class, Facts, Group, PythonInfo, Repeat};

    fn group(class: Class, type_name: &str, runs: Vec<u64>) -> Group {
        Group {
            class,
            type_name: type_name.into(),
            count: runs.iter().sum(),
            bytes: 0,
            stack: 0,
            runs,
            path: None,
            evidence: None,
            held_by_extension: false,
            watched: Vec::new(),
        }
    }

    fn repeated(groups: Vec<Group>) -> Capture {
        let python = PythonInfo {
            version: "3.11.7".into(),
            executable: "python3".into(),
            debug: false,
        };
        let facts = Facts {
            python,
            argv: Vec::new(),
            counters: Counters::default(),
            notes: Vec::new(),
        };
        let mut c = Capture::new(facts, 1);
        c.groups = groups;
        c.counters.repeat = Some(Repeat { runs: 2, warmup: 1 });
        c
    }

    #[test]
    fn one_type_at_two_sites_that_alternate_may_leak() {
        // The report may merge the two sites into one (a warm and a cold call path).
        let c = repeated(vec![
            group(Class::Leaked, "int", vec![5, 0]),
            group(Class::Leaked, "int", vec![0, 5]),
        ]);
        assert!(Verdict::of(&c).might_leak);
    }

    #[test]
    fn survivors_of_one_run_or_not_leaked_are_clean() {
        let c = repeated(vec![
            group(Class::Leaked, "int", vec![5, 0]),
            group(Class::Reachable, "str", vec![3, 3]),
            group(Class::HeldOutside, "dict", vec![1, 1]),
        ]);
        assert!(!Verdict::of(&c).might_leak);
    }

    #[test]
    fn without_repetition_any_leaked_group_may_leak() {
        let mut c = repeated(vec![group(Class::Indirect, "tuple", vec![])]);
        c.counters.repeat = None;
        assert!(Verdict::of(&c).might_leak);
    }
}
