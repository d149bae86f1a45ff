//! The capture parser, and the report built and rendered from what it accepts, fed real
//! captures (`tests/corpus`, written by `refhunt run -o`) mutated byte by byte, truncated and
//! spliced, and arbitrary JSON-shaped text: a capture is read or refused in one line, and
//! what is read renders without panicking, whatever its indices point at. The cases are
//! bounded (`PROPTEST_CASES` raises them), so the test command runs them.

use proptest::prelude::*;
use refhunt_core::capture::{Capture, Module};
use refhunt_core::report::{NativeFrame, Report, SymbolSource, Symbolizer};
use refhunt_core::text;

/// Names a frame by its module and offset, as a stripped module would be.
struct Offsets;

impl Symbolizer for Offsets {
    fn symbolize(&mut self, pc: u64, module: Option<&Module>) -> Vec<NativeFrame> {
        vec![NativeFrame {
            pc,
            function: pc.is_multiple_of(3).then(|| format!("f{pc}")),
            file: pc.is_multiple_of(2).then(|| "zoo.c".to_string()),
            line: pc.is_multiple_of(2).then_some((pc % 500) as u32),
            module: module.map_or("?".into(), |m| m.path.clone()),
            offset: module.map_or(pc, |m| pc.wrapping_sub(m.start)),
            source: SymbolSource::Offset,
            inlined: pc.is_multiple_of(5),
            interpreter: pc.is_multiple_of(7),
        }]
    }

    fn in_runtime(&self, pc: u64, _module: Option<&Module>) -> bool {
        pc.is_multiple_of(7)
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the seed corpus")
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("a seed capture"))
        .collect()
}

/// Reads `bytes` as a capture; what is accepted must render, what is refused says so in one
/// line.
fn read_or_refuse(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    match Capture::from_json(&text) {
        Ok(capture) => {
            let report = Report::build(&capture, &mut Offsets);
            let _ = text::render(&report);
            let _ = report.to_json();
        }
        Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
    }
    Ok(())
}

#[test]
fn the_seed_captures_render() {
    for seed in corpus() {
        let capture = Capture::from_json(std::str::from_utf8(&seed).unwrap()).unwrap();
        assert!(!text::render(&Report::build(&capture, &mut Offsets)).is_empty());
    }
}

/// An edit of a capture: one byte set, a run copied from elsewhere, or a digit changed.
#[derive(Debug, Clone)]
enum Edit {
    Byte(usize, u8),
    Splice(usize, usize, usize),
    Digit(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
        (any::<usize>(), b'0'..=b'9').prop_map(|(at, d)| Edit::Digit(at, d)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match *edit {
        Edit::Byte(at, b) => {
            if let Some(x) = bytes.get_mut(at % len) {
                *x = b;
            }
        }
        Edit::Splice(from, to, n) => {
            let from = from % len;
            let run: Vec<u8> = bytes[from..(from + n).min(bytes.len())].to_vec();
            let to = to % len;
            bytes.splice(to..to, run);
        }
        Edit::Digit(at, d) => {
            // The n-th digit of the file: indices, counts and addresses are numbers.
            let digits: Vec<usize> = (0..bytes.len())
                .filter(|&i| bytes[i].is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                bytes[digits[at % digits.len()]] = d;
            }
        }
    }
}

fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0u64..64).prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(u32::MAX)),
        any::<f64>().prop_map(serde_json::Value::from),
    ]
}

fn collect_numbers(v: &mut serde_json::Value, out: &mut Vec<()>) {
    match v {
        serde_json::Value::Number(_) => out.push(()),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| collect_numbers(x, out)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| collect_numbers(x, out)),
        _ => {}
    }
}

fn replace_numbers(v: &mut serde_json::Value, i: &mut usize, set: &[Option<serde_json::Value>]) {
    match v {
        serde_json::Value::Number(_) => {
            if let Some(new) = &set[*i] {
                *v = new.clone();
            }
            *i += 1;
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| replace_numbers(x, i, set)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| replace_numbers(x, i, set)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn edited_captures_are_read_or_refused(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..12),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let corpus = corpus();
        let mut bytes = seed.get(&corpus).clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        read_or_refuse(&bytes)?;
    }

    #[test]
    fn captures_with_any_numbers_render(
        seed in any::<prop::sample::Index>(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), number()), 1..24),
    ) {
        // Indices of stacks and modules, counts, addresses and line numbers, set to anything
        // a JSON number can hold: what parses must render.
        let corpus = corpus();
        let seed: &Vec<u8> = seed.get(&corpus);
        let mut value: serde_json::Value = serde_json::from_slice(seed).unwrap();
        let mut numbers = Vec::new();
        collect_numbers(&mut value, &mut numbers);
        let n = numbers.len();
        let mut set: Vec<Option<serde_json::Value>> = vec![None; n];
        for (at, v) in changes {
            set[at.index(n)] = Some(v);
        }
        let mut i = 0;
        replace_numbers(&mut value, &mut i, &set);
        read_or_refuse(value.to_string().as_bytes())?;
    }

    #[test]
    fn arbitrary_text_is_refused_in_one_line(text in "\\PC{0,400}") {
        read_or_refuse(text.as_bytes())?;
    }
}
