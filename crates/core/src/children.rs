//! The Python children of a program under `refhunt run` (forked, `multiprocessing` workers,
//! subprocesses): each is tracked in turn and reported by PID, named in the parent's report
//! with where its report went or why it has none; or merged into the parent's report.

use crate::numfmt::thousands;
use crate::report::{biggest_first, Report, ReportGroup};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Child {
    pub pid: u32,
    pub argv: Vec<String>,
    /// Its report's leak groups (objects and native) and leaked objects, if it has a report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaks: Option<ChildLeaks>,
    /// Where its report went: a file, "below" (the text that follows) or "merged".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// Why it has no report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_report: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ChildLeaks {
    pub groups: u64,
    pub objects: u64,
    pub native_blocks: u64,
}

impl ChildLeaks {
    pub fn of(report: &Report) -> ChildLeaks {
        ChildLeaks {
            groups: (report.leaks.len() + report.native_leaks.len()) as u64,
            objects: report.leaked_objects(),
            native_blocks: report.native_leaks.iter().map(|n| n.count).sum(),
        }
    }
}

impl Report {
    /// Adds a child's report to this one: groups of one class, type and site are one, their
    /// counts summed; the rest is listed beside the parent's.
    pub fn merge(&mut self, child: Report) {
        merge_groups(&mut self.leaks, child.leaks);
        merge_groups(&mut self.held, child.held);
        for t in child.not_leaks {
            match self.not_leaks.iter_mut().find(|o| o.class == t.class) {
                Some(o) => {
                    o.groups += t.groups;
                    o.count += t.count;
                    o.bytes += t.bytes;
                }
                None => self.not_leaks.push(t),
            }
        }
        self.not_leaks.sort_by_key(|t| t.class);
        self.unexplained.extend(child.unexplained);
        for n in child.native_leaks {
            let same = self
                .native_leaks
                .iter_mut()
                .find(|o| o.allocator == n.allocator && o.site == n.site);
            match same {
                Some(o) => {
                    o.count += n.count;
                    o.bytes += n.bytes;
                    for (mine, theirs) in [
                        (&mut o.definite, n.definite),
                        (&mut o.indirect, n.indirect),
                        (&mut o.possible, n.possible),
                        (&mut o.reachable, n.reachable),
                    ] {
                        mine.add(theirs);
                    }
                    add_runs(&mut o.runs, &n.runs);
                    o.per_call = sum(o.per_call, n.per_call);
                }
                None => self.native_leaks.push(n),
            }
        }
        self.native_leaks
            .sort_by_key(|n| std::cmp::Reverse(n.bytes));
        self.native_kept.add(child.native_kept);
        for note in child.notes {
            let note = format!("child {}: {note}", child.pid);
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
    }
}

fn merge_groups(mine: &mut Vec<ReportGroup>, theirs: Vec<ReportGroup>) {
    for g in theirs {
        let same = mine
            .iter_mut()
            .find(|o| o.class == g.class && o.type_name == g.type_name && o.site == g.site);
        match same {
            Some(o) => {
                o.count += g.count;
                o.bytes += g.bytes;
                add_runs(&mut o.runs, &g.runs);
                o.per_call = sum(o.per_call, g.per_call);
            }
            None => mine.push(g),
        }
    }
    mine.sort_by(biggest_first);
}

fn add_runs(mine: &mut Vec<u64>, theirs: &[u64]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), 0);
    }
    for (m, t) in mine.iter_mut().zip(theirs) {
        *m += t;
    }
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// One line naming a child: its PID and command, then its leaks and where its report went,
/// or why it has none.
pub fn line(c: &Child) -> String {
    let command = shorten(&c.argv.join(" "), 60);
    let what = match (&c.leaks, &c.report, &c.no_report) {
        (Some(l), Some(place), _) => {
            let native = if l.native_blocks > 0 {
                format!(", {} native blocks", thousands(l.native_blocks))
            } else {
                String::new()
            };
            let groups = if l.groups == 1 {
                "leak group"
            } else {
                "leak groups"
            };
            format!(
                "{} {groups} ({} objects{native}) · report {place}",
                l.groups,
                thousands(l.objects)
            )
        }
        (_, _, Some(why)) => format!("no report: {why}"),
        _ => "no report".into(),
    };
    format!("pid {} ({command}): {what}", c.pid)
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}
