//! The holder of a leaked reference, from the refcount writes of watched objects.
//!
//! Each write was stopped by a breakpoint and comes with its stack. A write is charged to
//! the innermost function outside the interpreter on that stack, past the C API's inline
//! functions (`Py_INCREF` inlined into the extension says `object.h`): the line that called
//! them is the extension's. Increments and decrements are paired by function, not by line,
//! since one balance spans lines (an increment in `tp_init`, its decrement in
//! `tp_dealloc`). The holder is the function that kept references in the most watched
//! objects, and then the most references; writes made by the interpreter alone (the eval
//! loop dropping its own reference) name nobody.

use crate::capture::{PyFrame, Stack, Watched};
use crate::numfmt::rate;
use crate::report::NativeFrame;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Holder {
    /// The function that took references and never released them.
    pub function: String,
    /// Where it took them: the file:line of its most frequent increment, or its module and
    /// offset without DWARF.
    pub site: String,
    /// References it kept per watched object, on average over those it kept any in.
    pub kept: f64,
    /// Watched objects in which it kept references, and how many were watched.
    pub objects: usize,
    pub watched: usize,
    /// Every watched object was watched from its creation to the end.
    pub whole: bool,
    /// Calls per watched object in a holder run, when known: `kept` is then per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call: Option<f64>,
    /// The stack of that increment.
    pub native: Vec<NativeFrame>,
    pub python: Vec<PyFrame>,
}

impl Holder {
    /// "+1 reference per call" or "+1 reference per object (4 of 4 watched)".
    pub fn amount(&self) -> String {
        let (n, unit) = match self.per_call {
            Some(n) => (n, "call"),
            None => (self.kept, "object"),
        };
        let noun = if (n - 1.0).abs() < f64::EPSILON {
            "reference"
        } else {
            "references"
        };
        let watched = if self.per_call.is_some() {
            String::new()
        } else {
            format!(" ({} of {} watched)", self.objects, self.watched)
        };
        format!("+{} {noun} per {unit}{watched}", rate(n))
    }
}

/// Whether a frame is one of the C API's inline functions, inlined into an extension.
fn is_c_api(f: &NativeFrame) -> bool {
    f.inlined
        && f.file
            .as_deref()
            .is_some_and(|file| file.contains("/include/python3") || file.contains("/Include/"))
}

/// The frame a write is charged to: the innermost outside the interpreter and the C API.
fn charged(frames: &[NativeFrame]) -> Option<usize> {
    frames.iter().position(|f| !f.interpreter && !is_c_api(f))
}

fn key(f: &NativeFrame) -> String {
    match &f.function {
        Some(name) => format!("{name} ({})", f.module),
        None => format!("{}+{:#x}", f.module, f.offset),
    }
}

/// The frame a stack's write is charged to, and its key.
struct Charge {
    key: String,
    frames: Vec<NativeFrame>,
    at: usize,
}

/// The holder named by `watched`, whose write stacks index `stacks`; `frames` symbolizes one
/// address.
pub fn find(
    watched: &[Watched],
    stacks: &[Stack],
    frames: &mut dyn FnMut(u64) -> Vec<NativeFrame>,
) -> Option<Holder> {
    let mut charges: HashMap<u32, Option<Charge>> = HashMap::new();
    let mut charge = |stack: u32| -> Option<String> {
        charges
            .entry(stack)
            .or_insert_with(|| {
                let symbols: Vec<NativeFrame> = stacks
                    .get(stack as usize)?
                    .native
                    .iter()
                    .flat_map(|&pc| frames(pc))
                    .collect();
                let at = charged(&symbols)?;
                Some(Charge {
                    key: key(&symbols[at]),
                    frames: symbols,
                    at,
                })
            })
            .as_ref()
            .map(|c| c.key.clone())
    };
    // Per function: objects it kept references in, and how many. A function may keep no
    // more than the object gained while watched: what it returned, its caller dropped.
    let mut kept: HashMap<String, (usize, i64)> = HashMap::new();
    for w in watched {
        let mut net: HashMap<String, i64> = HashMap::new();
        let mut gained = i64::from(w.from_creation);
        for write in &w.writes {
            let change = write.increments as i64 - write.decrements as i64;
            gained += change;
            if let Some(k) = charge(write.stack) {
                *net.entry(k).or_default() += change;
            }
        }
        for (k, n) in net
            .into_iter()
            .map(|(k, n)| (k, n.min(gained)))
            .filter(|&(_, n)| n > 0)
        {
            let t = kept.entry(k).or_default();
            t.0 += 1;
            t.1 += n;
        }
    }
    let (holder, (objects, total)) = kept
        .into_iter()
        .max_by_key(|(k, t)| (t.0, t.1, std::cmp::Reverse(k.clone())))?;
    // Its line: the increment that no later decrement of its own gave back, oldest given
    // back first (a cache releases what it took before); without an order, the increment
    // seen most often.
    let mut left: HashMap<u32, i64> = HashMap::new();
    for w in watched {
        let mut taken: std::collections::VecDeque<(u32, i64)> = Default::default();
        for &(stack, delta) in &w.order {
            if charge(stack).as_deref() != Some(holder.as_str()) {
                continue;
            }
            if delta > 0 {
                taken.push_back((stack, delta as i64));
                continue;
            }
            let mut owed = -(delta as i64);
            while let Some(front) = taken.front_mut().filter(|_| owed > 0) {
                let n = front.1.min(owed);
                front.1 -= n;
                owed -= n;
                if front.1 == 0 {
                    taken.pop_front();
                }
            }
        }
        for (stack, n) in taken {
            *left.entry(stack).or_default() += n;
        }
    }
    let most_increments = || {
        watched
            .iter()
            .flat_map(|w| &w.writes)
            .filter(|w| charges[&w.stack].as_ref().is_some_and(|c| c.key == holder))
            .max_by_key(|w| w.increments)
            .map(|w| w.stack)
    };
    let stack = left
        .into_iter()
        .max_by_key(|&(s, n)| (n, std::cmp::Reverse(s)))
        .map(|(s, _)| s)
        .or_else(most_increments)?;
    let c = charges[&stack].as_ref()?;
    let f = &c.frames[c.at];
    let calls: Vec<u32> = watched.iter().filter_map(|w| w.calls).collect();
    Some(Holder {
        function: f.function.clone().unwrap_or_else(|| "??".into()),
        site: f
            .location()
            .unwrap_or_else(|| format!("{}+{:#x}", f.module, f.offset)),
        kept: total as f64 / objects as f64,
        objects,
        watched: watched.len(),
        whole: watched.iter().all(|w| w.whole),
        per_call: (calls.len() == watched.len() && calls.iter().all(|&c| c > 0))
            .then(|| total as f64 / calls.iter().map(|&c| c as f64).sum::<f64>()),
        python: stacks[stack as usize].python.clone(),
        native: c.frames.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::RefWrites;
    use crate::report::SymbolSource;

    fn frame(pc: u64, function: &str, file: &str, inlined: bool, interpreter: bool) -> NativeFrame {
        NativeFrame {
            pc,
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(pc as u32),
            module: if interpreter { "libpython" } else { "ext.so" }.into(),
            offset: pc,
            source: SymbolSource::Dwarf,
            inlined,
            interpreter,
        }
    }

    /// 1: `Py_INCREF` inlined into `keep` (ext.c:1); 2: `keep_other` (ext.c:2); 3: the eval
    /// loop.
    fn symbols(pc: u64) -> Vec<NativeFrame> {
        match pc {
            1 => vec![
                frame(
                    1,
                    "Py_INCREF",
                    "/usr/include/python3.11/object.h",
                    true,
                    false,
                ),
                frame(1, "keep", "ext.c", false, false),
            ],
            2 => vec![frame(2, "keep_other", "ext.c", false, false)],
            _ => vec![frame(
                pc,
                "_PyEval_EvalFrameDefault",
                "ceval.c",
                false,
                true,
            )],
        }
    }

    fn stacks() -> Vec<Stack> {
        [1, 2, 3]
            .map(|pc| Stack {
                native: vec![pc],
                python: vec![],
            })
            .to_vec()
    }

    fn watched(writes: &[(u32, u32, u32)], whole: bool) -> Watched {
        Watched {
            writes: writes
                .iter()
                .map(|&(stack, increments, decrements)| RefWrites {
                    stack,
                    increments,
                    decrements,
                })
                .collect(),
            whole,
            from_creation: true,
            ..Watched::default()
        }
    }

    #[test]
    fn names_the_function_that_kept_a_reference_past_the_inlined_incref() {
        // `keep` took one; the eval loop dropped its own; `keep_other` balanced its pair.
        let w = [
            watched(&[(0, 1, 0), (2, 0, 1), (1, 1, 1)], true),
            watched(&[(0, 1, 0), (2, 1, 2)], true),
        ];
        let h = find(&w, &stacks(), &mut symbols).expect("a holder");
        assert_eq!((h.function.as_str(), h.site.as_str()), ("keep", "ext.c:1"));
        assert_eq!((h.objects, h.watched, h.kept), (2, 2, 1.0));
        assert_eq!(h.amount(), "+1 reference per object (2 of 2 watched)");
    }

    #[test]
    fn the_line_kept_is_the_increment_no_later_decrement_gave_back() {
        // Two lines of `keep` (stacks 0 and 3, ext.c:1 and ext.c:4): it takes at both, the
        // eval loop drops its own, and `keep` later releases one: the oldest, ext.c:1.
        let mut st = stacks();
        st.push(Stack {
            native: vec![4],
            python: vec![],
        });
        let mut symbols4 = |pc: u64| match pc {
            4 => vec![frame(4, "keep", "ext.c", false, false)],
            _ => symbols(pc),
        };
        let mut w = watched(&[(0, 1, 1), (3, 1, 0), (2, 0, 1)], true);
        w.order = vec![(0, 1), (3, 1), (2, -1), (0, -1)];
        let h = find(&[w], &st, &mut symbols4).expect("a holder");
        assert_eq!(h.site, "ext.c:4");
    }

    #[test]
    fn interpreter_writes_and_balanced_pairs_name_nobody() {
        let w = [watched(&[(2, 3, 1), (1, 2, 2)], false)];
        assert!(find(&w, &stacks(), &mut symbols).is_none());
    }

    #[test]
    fn per_call_in_a_holder_run_counts_only_what_the_object_gained() {
        // An old object: `keep` took two per call and returned one, which the eval loop
        // dropped, so it gained one per call.
        let mut w = watched(&[(0, 10, 0), (2, 0, 5)], true);
        w.from_creation = false;
        w.calls = Some(5);
        let h = find(&[w], &stacks(), &mut symbols).expect("a holder");
        assert_eq!(h.per_call, Some(1.0));
        assert_eq!(h.amount(), "+1 reference per call");
    }
}
