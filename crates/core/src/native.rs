//! The leak rule for native blocks, and their groups as the report gives them.
//!
//! In a plain run a site leaks when some of its blocks have no pointer to them anywhere, or
//! only from other lost blocks: a conservative scan cannot mistake a held block for that.
//! Blocks that only a stale stack slot or an interior pointer reaches are counted with the
//! lost ones, and said apart. Under repetition a site leaks when its blocks grew in every
//! measured run, as objects do, whatever the scan found: a C list that grows with every call
//! is a leak even while it is reachable.

use crate::capture::{BlockTally, Capture, NativeGroup, PyFrame};
use crate::numfmt::thousands;
use crate::report::{creation_site, NativeFrame, Paths};
use serde::Serialize;
use std::collections::HashMap;

/// A site's native blocks that leaked.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportNative {
    /// `malloc`, `calloc`, `PyMem_Malloc`, `PyObject_Malloc`, ...
    pub allocator: String,
    /// Blocks counted as leaked, and their bytes as allocated: the lost ones in a plain run,
    /// every block of the site under repetition.
    pub count: u64,
    pub bytes: u64,
    pub definite: BlockTally,
    pub indirect: BlockTally,
    pub possible: BlockTally,
    pub reachable: BlockTally,
    pub site: Option<String>,
    pub native: Vec<NativeFrame>,
    pub python: Vec<PyFrame>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call: Option<f64>,
    pub evidence: String,
    /// Leaked objects the lost blocks point to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<ReportHeldObjects>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportHeldObjects {
    pub type_name: String,
    pub count: u64,
    /// Where they were made.
    pub site: Option<String>,
}

/// Objects of a type made at a site, and the native blocks that hold them, in words.
pub type HeldBy = HashMap<(String, Option<String>), String>;

/// The native leaks of a capture, biggest first; the native blocks that are not leaks; and
/// for leaked objects that lost blocks point to, those blocks.
pub fn build(
    capture: &Capture,
    repeat: Option<u32>,
    frames: &mut dyn FnMut(u64) -> Vec<NativeFrame>,
) -> (Vec<ReportNative>, BlockTally, HeldBy) {
    /// A group, its native stacks and Python frames, and its site.
    type Merged = (NativeGroup, Paths, Vec<PyFrame>, Option<String>);
    let mut merged: Vec<Merged> = Vec::new();
    let mut index: HashMap<(String, Option<String>, Vec<PyFrame>), usize> = HashMap::new();
    for g in &capture.native {
        let stack = capture
            .stacks
            .get(g.stack as usize)
            .cloned()
            .unwrap_or_default();
        let native: Vec<NativeFrame> = stack.native.iter().flat_map(|&pc| frames(pc)).collect();
        let site = creation_site(&native, &stack.python);
        // One line reached by two native paths (a warm call site calls straight from the
        // eval loop, two callers share an inlined allocation wrapper) is one site.
        let key = (g.allocator.clone(), site.clone(), stack.python.clone());
        let blocks = g.lost().count + g.reachable.count;
        match index.get(&key) {
            Some(&i) => {
                let m = &mut merged[i].0;
                m.definite.add(g.definite);
                m.indirect.add(g.indirect);
                m.possible.add(g.possible);
                m.reachable.add(g.reachable);
                if m.runs.len() < g.runs.len() {
                    m.runs.resize(g.runs.len(), 0);
                }
                for (total, n) in m.runs.iter_mut().zip(&g.runs) {
                    *total += n;
                }
                m.holds.extend(g.holds.iter().cloned());
                merged[i].1.add(native, blocks);
            }
            None => {
                index.insert(key, merged.len());
                let mut paths = Paths::default();
                paths.add(native, blocks);
                merged.push((g.clone(), paths, stack.python, site));
            }
        }
    }
    let mut leaks = Vec::new();
    let mut kept = BlockTally::default();
    let mut held_by = HeldBy::new();
    for (g, paths, python, site) in merged {
        let native = paths.shown();
        let holds: Vec<ReportHeldObjects> = g
            .holds
            .iter()
            .map(|h| ReportHeldObjects {
                type_name: h.type_name.clone(),
                count: h.count,
                site: capture.stacks.get(h.stack as usize).and_then(|s| {
                    let native: Vec<NativeFrame> =
                        s.native.iter().flat_map(|&pc| frames(pc)).collect();
                    creation_site(&native, &s.python)
                }),
            })
            .collect();
        for h in &holds {
            held_by
                .entry((h.type_name.clone(), h.site.clone()))
                .or_insert_with(|| holder_words(&g, site.as_deref()));
        }
        let lost = g.lost();
        let all = g.all();
        let leaked = match repeat {
            Some(runs) => crate::verdict::grew_in_every_run(&g.runs, runs),
            None => g.definite.count + g.indirect.count > 0,
        };
        if !leaked {
            kept.add(all);
            continue;
        }
        let counted = if repeat.is_some() { all } else { lost };
        let mut runs = g.runs.clone();
        if let Some(r) = repeat {
            runs.resize(r as usize, 0);
        }
        leaks.push(ReportNative {
            allocator: g.allocator.clone(),
            count: counted.count,
            bytes: counted.bytes,
            definite: g.definite,
            indirect: g.indirect,
            possible: g.possible,
            reachable: g.reachable,
            site,
            native,
            python,
            per_call: repeat.map(|r| all.count as f64 / r as f64),
            evidence: evidence(&g, repeat),
            runs,
            holds,
        });
    }
    leaks.sort_by_key(|n| std::cmp::Reverse((n.bytes, n.count)));
    (leaks, kept, held_by)
}

/// "1 malloc block allocated at native.c:88 (possibly lost)": the lost blocks of a group that
/// point to leaked objects.
fn holder_words(g: &NativeGroup, site: Option<&str>) -> String {
    let lost = g.lost().count;
    let class = [
        (g.definite, "definitely lost"),
        (g.indirect, "indirectly lost"),
        (g.possible, "possibly lost"),
    ]
    .into_iter()
    .find(|(t, _)| t.count > 0)
    .map_or("lost", |(_, c)| c);
    format!(
        "{} {} {} allocated at {} ({class})",
        thousands(lost),
        g.allocator,
        if lost == 1 { "block" } else { "blocks" },
        site.unwrap_or("an unknown site")
    )
}

/// What the scan found, and under repetition the runs the site grew in.
fn evidence(g: &NativeGroup, repeat: Option<u32>) -> String {
    let mut parts = Vec::new();
    for (t, what) in [
        (g.definite, "with no pointer to them anywhere"),
        (g.indirect, "pointed to only by lost blocks"),
        (
            g.possible,
            "reached only from a stale stack slot or through their middle",
        ),
        (g.reachable, "still pointed to"),
    ] {
        if t.count > 0 {
            parts.push(format!("{} {what}", thousands(t.count)));
        }
    }
    let scan = parts.join(", ");
    match repeat {
        Some(runs) => format!(
            "grew in {} of {runs} runs; {scan}",
            g.runs.iter().filter(|&&n| n > 0).count()
        ),
        None => scan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Repeat, Stack};

    fn tally(count: u64) -> BlockTally {
        BlockTally {
            count,
            bytes: 100 * count,
        }
    }

    fn capture(groups: Vec<NativeGroup>) -> Capture {
        let mut c: Capture = serde_json::from_str(
            r#"{"format":"refhunt-capture","version":1,"python":{"version":"3.11.7",
            "executable":"python","debug":false},"pid":1,"argv":[],"modules":[],
            "stacks":[],"groups":[]}"#,
        )
        .unwrap();
        c.stacks = vec![
            Stack {
                native: vec![1],
                python: vec![],
            },
            Stack {
                native: vec![2],
                python: vec![],
            },
        ];
        c.native = groups;
        c
    }

    fn frames(pc: u64) -> Vec<NativeFrame> {
        vec![NativeFrame {
            pc,
            function: Some(format!("f{pc}")),
            file: Some("native.c".into()),
            line: Some(pc as u32 * 10),
            module: "zoo_native.so".into(),
            offset: pc,
            source: crate::report::SymbolSource::Dwarf,
            inlined: false,
            interpreter: false,
        }]
    }

    #[test]
    fn a_plain_run_leaks_what_nothing_points_to_and_keeps_what_is_held() {
        let lost = NativeGroup {
            allocator: "malloc".into(),
            stack: 0,
            definite: tally(90),
            possible: tally(5),
            reachable: tally(5),
            ..NativeGroup::default()
        };
        let held = NativeGroup {
            allocator: "calloc".into(),
            stack: 1,
            reachable: tally(1),
            possible: tally(2),
            ..NativeGroup::default()
        };
        let (leaks, kept, _) = build(&capture(vec![lost, held]), None, &mut frames);
        assert_eq!(leaks.len(), 1);
        let l = &leaks[0];
        assert_eq!((l.count, l.bytes), (95, 9500));
        assert_eq!(l.site.as_deref(), Some("native.c:10"));
        assert!(
            l.evidence.starts_with("90 with no pointer"),
            "{}",
            l.evidence
        );
        assert_eq!(kept, tally(3));
    }

    #[test]
    fn under_repetition_growth_in_every_run_decides() {
        let grew = NativeGroup {
            allocator: "malloc".into(),
            stack: 0,
            reachable: tally(40),
            runs: vec![10, 10, 10, 10],
            ..NativeGroup::default()
        };
        let once = NativeGroup {
            allocator: "malloc".into(),
            stack: 1,
            definite: tally(1),
            runs: vec![1, 0, 0, 0],
            ..NativeGroup::default()
        };
        let mut c = capture(vec![grew, once]);
        c.counters.repeat = Some(Repeat { runs: 4, warmup: 5 });
        let (leaks, kept, _) = build(&c, Some(4), &mut frames);
        assert_eq!(leaks.len(), 1);
        assert_eq!((leaks[0].count, leaks[0].per_call), (40, Some(10.0)));
        assert!(leaks[0].evidence.starts_with("grew in 4 of 4 runs"));
        assert_eq!(kept, tally(1));
    }

    #[test]
    fn a_site_shows_the_stack_of_the_caller_that_lost_most() {
        // pc 11 and 12: the same inlined wrapper line, called from two functions; pc 90 and
        // 91, 92: the interpreter, reached through a warm call site or not. The function with
        // the longest stack lost the fewest blocks, as regex 2020.2.18's `ByteStack_push`.
        let frames = &mut |pc: u64| {
            let frame = |function: &str, line: u32, inlined: bool, interpreter: bool| NativeFrame {
                pc,
                function: Some(function.into()),
                file: Some(if interpreter { "ceval.c" } else { "_regex.c" }.into()),
                line: Some(line),
                module: if interpreter {
                    "libpython"
                } else {
                    "_regex.so"
                }
                .into(),
                offset: pc,
                source: crate::report::SymbolSource::Dwarf,
                inlined,
                interpreter,
            };
            match pc {
                11 => vec![
                    frame("re_realloc", 2140, true, false),
                    frame("push", 2280, false, false),
                ],
                12 => vec![
                    frame("re_realloc", 2140, true, false),
                    frame("save", 10535, false, false),
                ],
                _ => vec![frame("eval", pc as u32, false, true)],
            }
        };
        let group = |stack: u32| NativeGroup {
            allocator: "PyMem_Realloc".into(),
            stack,
            definite: tally(10),
            ..NativeGroup::default()
        };
        let mut c = capture(vec![group(0), group(1), group(2)]);
        c.stacks = [vec![11, 91, 92, 90], vec![12, 90], vec![12, 91, 90]]
            .into_iter()
            .map(|native| Stack {
                native,
                python: vec![],
            })
            .collect();
        let (leaks, _, _) = build(&c, None, frames);
        // One site; its stack is the caller that lost most, with its longest path.
        let [leak] = &leaks[..] else {
            panic!("{leaks:?}")
        };
        assert_eq!(leak.count, 30);
        let shown: Vec<_> = leak.native.iter().map(|f| f.function.as_deref()).collect();
        assert_eq!(
            shown,
            [Some("re_realloc"), Some("save"), Some("eval"), Some("eval")]
        );
    }
}
