//! The holder of a leaked reference, from the refcount writes of watched objects.
//!
//! Each write was stopped by a breakpoint and comes with its stack. A write is charged to
//! the innermost frame outside the interpreter on that stack, past the C API's inline
//! functions (`Py_INCREF` inlined into the extension says `object.h`): the line that called
//! them is the extension's. Writes that the interpreter alone made (the eval loop taking and
//! dropping its own references) are charged to nobody.
//!
//! Which increment a decrement gave back is not recorded; two clues tell it. By count: a
//! function that released more than it took (a type's `tp_dealloc`) gave back what another
//! function of its module took (its `tp_new`), the one whose surplus its deficit matches
//! exactly. What is left over is kept, by the function that took it. By order, within that
//! function: a decrement gives back the latest increment if no other code wrote the
//! refcount in between (a temporary), else the oldest (a cache released on the next call),
//! and the increments still out at the end name the line. How many it kept is bounded by
//! what the object gained while watched, since a reference an extension returns is its
//! caller's to drop.

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
    /// "+1 reference per call", "+1 reference per object (4 of 4 watched)", or for a watch
    /// that ended early, "at least +27 references (watched in part)".
    pub fn amount(&self) -> String {
        if !self.whole {
            let n = self.kept * self.objects as f64;
            return format!(
                "at least +{} {} (watched in part)",
                rate(n),
                if (n - 1.0).abs() < f64::EPSILON {
                    "reference"
                } else {
                    "references"
                }
            );
        }
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

/// The frame a stack's write is charged to: its function and module, and the stack.
struct Charge {
    function: String,
    module: String,
    frames: Vec<NativeFrame>,
    at: usize,
}

/// Each function's references kept in one object: its surplus, less what the deficits of
/// its module's other functions gave back, matched by count.
fn kept_by_function<'a>(net: &HashMap<&'a str, (&'a str, i64)>) -> HashMap<&'a str, i64> {
    let mut kept = HashMap::new();
    let modules: std::collections::HashSet<&str> = net.values().map(|v| v.0).collect();
    for module in modules {
        let mut surplus: Vec<(&str, i64)> = net
            .iter()
            .filter(|(_, v)| v.0 == module && v.1 > 0)
            .map(|(f, v)| (*f, v.1))
            .collect();
        surplus.sort();
        let deficit: i64 = -net
            .values()
            .filter(|v| v.0 == module && v.1 < 0)
            .map(|v| v.1)
            .sum::<i64>();
        // The fewest functions whose surplus sums to the deficit exactly gave it back.
        let n = surplus.len().min(12);
        let matched = (0u32..1 << n)
            .filter(|mask| {
                (0..n)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| surplus[i].1)
                    .sum::<i64>()
                    == deficit
            })
            .min_by_key(|mask| mask.count_ones())
            .unwrap_or(0);
        for (i, (f, more)) in surplus.into_iter().enumerate() {
            if i >= n || matched & (1 << i) == 0 {
                kept.insert(f, more);
            }
        }
    }
    kept
}

/// The increments of `function` still out at the end of `order`, per stack.
fn left_out<'a>(
    order: &[(u32, i32)],
    function: &str,
    charge: &dyn Fn(u32) -> Option<&'a Charge>,
) -> HashMap<u32, i64> {
    // (stack, count, episode): an episode is a run of writes by `function` that no other
    // code's write interrupts.
    let mut out: Vec<(u32, i64, u32)> = Vec::new();
    let mut episode = 0;
    let mut mine_last = false;
    for &(stack, delta) in order {
        let mine = charge(stack).is_some_and(|c| c.function == function);
        if mine != mine_last {
            episode += 1;
            mine_last = mine;
        }
        if !mine {
            continue;
        }
        if delta > 0 {
            out.push((stack, delta as i64, episode));
            continue;
        }
        let mut owed = -(delta as i64);
        let same: Vec<usize> = (0..out.len())
            .rev()
            .filter(|&i| out[i].2 == episode)
            .collect();
        let older: Vec<usize> = (0..out.len()).filter(|&i| out[i].2 != episode).collect();
        for i in same.into_iter().chain(older) {
            let n = out[i].1.min(owed);
            out[i].1 -= n;
            owed -= n;
            if owed == 0 {
                break;
            }
        }
        out.retain(|o| o.1 > 0);
    }
    let mut left: HashMap<u32, i64> = HashMap::new();
    for (stack, n, _) in out {
        *left.entry(stack).or_default() += n;
    }
    left
}

/// The holder named by `watched`, whose write stacks index `stacks`; `frames` symbolizes one
/// address.
pub fn find(
    watched: &[Watched],
    stacks: &[Stack],
    frames: &mut dyn FnMut(u64) -> Vec<NativeFrame>,
) -> Option<Holder> {
    let mut charges: HashMap<u32, Option<Charge>> = HashMap::new();
    for w in watched {
        for stack in w.writes.iter().map(|w| w.stack) {
            charges.entry(stack).or_insert_with(|| {
                let symbols: Vec<NativeFrame> = stacks
                    .get(stack as usize)?
                    .native
                    .iter()
                    .flat_map(|&pc| frames(pc))
                    .collect();
                let at = charged(&symbols)?;
                Some(Charge {
                    function: key(&symbols[at]),
                    module: symbols[at].module.clone(),
                    frames: symbols,
                    at,
                })
            });
        }
    }
    let charge = |stack: u32| charges.get(&stack).and_then(Option::as_ref);
    // Per function: the watched objects it kept references in, and how many.
    let mut kept: HashMap<&str, (usize, i64)> = HashMap::new();
    for w in watched {
        let mut gained = i64::from(w.from_creation);
        let mut net: HashMap<&str, (&str, i64)> = HashMap::new();
        for write in &w.writes {
            let change = write.increments as i64 - write.decrements as i64;
            gained += change;
            if let Some(c) = charge(write.stack) {
                net.entry(&c.function).or_insert((&c.module, 0)).1 += change;
            }
        }
        for (f, n) in kept_by_function(&net) {
            let n = n.min(gained);
            if n > 0 {
                let t = kept.entry(f).or_default();
                t.0 += 1;
                t.1 += n;
            }
        }
    }
    let (function, (objects, total)) = kept
        .into_iter()
        .max_by_key(|&(f, (objects, n))| (objects, n, std::cmp::Reverse(f)))?;
    // Its line: the increment left out most, or without an order its most frequent one.
    let mut left: HashMap<u32, i64> = HashMap::new();
    for w in watched {
        for (stack, n) in left_out(&w.order, function, &charge) {
            *left.entry(stack).or_default() += n;
        }
    }
    let most_increments = || {
        watched
            .iter()
            .flat_map(|w| &w.writes)
            .filter(|w| charge(w.stack).is_some_and(|c| c.function == function))
            .max_by_key(|w| w.increments)
            .map(|w| w.stack)
    };
    let stack = left
        .into_iter()
        .max_by_key(|&(s, n)| (n, std::cmp::Reverse(s)))
        .map(|(s, _)| s)
        .or_else(most_increments)?;
    let c = charge(stack)?;
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

    /// Stacks 0..3 as `stacks()`, and 3: `keep` again at ext.c:4, 4: `keep_new` (ext.c:5),
    /// 5: `keep_dealloc` (ext.c:6), 6: `sort` (ext.c:7), all of ext.so.
    fn more() -> (Vec<Stack>, impl FnMut(u64) -> Vec<NativeFrame>) {
        let mut st = stacks();
        st.extend([4, 5, 6, 7].map(|pc| Stack {
            native: vec![pc],
            python: vec![],
        }));
        let symbols = |pc: u64| match pc {
            4 => vec![frame(4, "keep", "ext.c", false, false)],
            5 => vec![frame(5, "keep_new", "ext.c", false, false)],
            6 => vec![frame(6, "keep_dealloc", "ext.c", false, false)],
            7 => vec![frame(7, "sort", "ext.c", false, false)],
            _ => symbols(pc),
        };
        (st, symbols)
    }

    #[test]
    fn a_cache_released_on_the_next_call_leaves_the_extra_increment() {
        // A getter: `keep` caches at ext.c:1 and takes one more at ext.c:4; the eval loop
        // drops the creator's; the next call releases the cache, in `keep` again.
        let (st, mut symbols) = more();
        let mut w = watched(&[(0, 1, 1), (3, 1, 0), (2, 0, 1)], true);
        w.order = vec![(0, 1), (3, 1), (2, -1), (0, -1)];
        let h = find(&[w], &st, &mut symbols).expect("a holder");
        assert_eq!(h.site, "ext.c:4");
    }

    #[test]
    fn a_temporary_is_given_back_first() {
        // `keep` keeps ext.c:1, then takes and drops a temporary at ext.c:4.
        let (st, mut symbols) = more();
        let mut w = watched(&[(0, 1, 0), (3, 1, 1), (2, 0, 1)], true);
        w.order = vec![(0, 1), (2, -1), (3, 1), (3, -1)];
        let h = find(&[w], &st, &mut symbols).expect("a holder");
        assert_eq!(h.site, "ext.c:1");
    }

    #[test]
    fn a_dealloc_gives_back_what_its_new_took() {
        // An old object (simplejson 3.12.0's None): per call `keep_new` takes two, which
        // `keep_dealloc` gives back, and `sort` returns one that nobody drops.
        let (st, mut symbols) = more();
        let mut w = watched(&[(4, 20, 0), (5, 0, 20), (6, 10, 0)], true);
        w.from_creation = false;
        w.calls = Some(1);
        let h = find(&[w], &st, &mut symbols).expect("a holder");
        assert_eq!((h.function.as_str(), h.site.as_str()), ("sort", "ext.c:7"));
        assert_eq!(h.per_call, Some(10.0));
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
