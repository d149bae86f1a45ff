//! From a capture to a report: symbolized frames, creation sites, leaks biggest first.

use crate::capture::{BlockTally, Capture, Class, Counters, Module, PyFrame, PythonInfo, Watched};
use crate::children::Child;
use crate::holder::{self, Holder};
use crate::native::{self, ReportNative};
use crate::numfmt::thousands;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::HashMap;

/// Where a native frame's name came from, best first.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SymbolSource {
    /// DWARF debug info: function, file and line, inlined frames included.
    Dwarf,
    /// The ELF symbol table: a function name, no line.
    Symtab,
    /// Nothing: module and offset only.
    Offset,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NativeFrame {
    pub pc: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// File name of the module that holds `pc`.
    pub module: String,
    /// `pc` relative to the module's load address.
    pub offset: u64,
    pub source: SymbolSource,
    /// Inlined into the frame that follows it.
    pub inlined: bool,
    /// In the runtime (the interpreter, the C library, the loader) rather than an extension.
    pub interpreter: bool,
}

impl NativeFrame {
    /// `file:line` when DWARF gave both.
    pub fn location(&self) -> Option<String> {
        Some(format!("{}:{}", self.file.as_ref()?, self.line?))
    }
}

/// Turns one return address into frames, innermost (inlined) first.
pub trait Symbolizer {
    fn symbolize(&mut self, pc: u64, module: Option<&Module>) -> Vec<NativeFrame>;
    /// Whether `pc` lies in the runtime (interpreter, C library, loader), judged from the
    /// module alone, without symbols.
    fn in_runtime(&self, pc: u64, module: Option<&Module>) -> bool;
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportGroup {
    pub class: Class,
    pub type_name: String,
    pub count: u64,
    pub bytes: u64,
    /// The creation site: the first native frame outside the interpreter that has a line, or
    /// else the innermost Python frame.
    pub site: Option<String>,
    pub native: Vec<NativeFrame>,
    pub python: Vec<PyFrame>,
    /// Under repetition: survivors created in each measured run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<u64>,
    /// Under repetition: survivors per call, averaged over the measured runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call: Option<f64>,
    /// A path from a module to one of the group's objects, for reachable groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What the class rests on, e.g. "1,000 from one C line, referenced by nothing" or
    /// "grew in 4 of 4 runs".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Held outside Python by an extension's own memory.
    #[serde(skip)]
    pub held_by_extension: bool,
    /// The function that took a reference and never released it, from watched objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Lost native blocks that point to these objects, e.g. "1 malloc block allocated at
    /// native.c:88 (possibly lost)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    #[serde(skip)]
    pub watched: Vec<Watched>,
}

impl ReportGroup {
    /// Made by an extension's own code, not only by the interpreter's.
    fn made_by_extension(&self) -> bool {
        self.native.iter().any(|f| !f.interpreter)
    }

    /// The one-time work the group was made in, if any: a module's import or a class's
    /// creation, read from its stacks.
    fn one_time_work(&self) -> Option<String> {
        if let Some(init) = self
            .native
            .iter()
            .filter_map(function_name)
            .find(|n| n.starts_with("PyInit_"))
        {
            return Some(format!("during the import of {}", &init["PyInit_".len()..]));
        }
        if let Some(f) = self
            .native
            .iter()
            .filter_map(function_name)
            .find(|n| CLASS_CREATION.contains(n))
        {
            return Some(format!("during the creation of a class ({f})"));
        }
        // The module body that the import system runs is the frame just inside it.
        let importing = |f: &PyFrame| f.file.starts_with("<frozen importlib._bootstrap");
        let outer = self.python.iter().position(importing)?;
        Some(match outer.checked_sub(1).map(|i| &self.python[i]) {
            Some(body) if body.function == "<module>" => {
                format!("during the import of {}", body.file)
            }
            _ => "during an import".to_string(),
        })
    }

    /// How the site is named in evidence.
    fn site_kind(&self) -> &'static str {
        if self
            .native
            .iter()
            .any(|f| !f.interpreter && f.location().is_some())
        {
            "one C line"
        } else if self.made_by_extension() {
            "one C function"
        } else {
            "one Python line"
        }
    }

    /// Under repetition, whether every measured run left survivors here.
    fn grew_every_run(&self, repeat: Option<u32>) -> bool {
        match repeat {
            Some(runs) => crate::verdict::grew_in_every_run(&self.runs, runs),
            None => true,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassTotal {
    pub class: Class,
    pub groups: u64,
    pub count: u64,
    pub bytes: u64,
}

/// What the report JSON says it is, and the version of its shape
/// (`schema/report.schema.json`); a new version changes or removes a field.
pub const FORMAT: &str = "refhunt-report";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub version: u32,
    /// The refhunt that wrote it.
    pub refhunt: &'static str,
    pub python: PythonInfo,
    pub pid: u32,
    pub argv: Vec<String>,
    pub counters: Counters,
    pub notes: Vec<String>,
    /// Leak groups (direct, then indirect), biggest first. Under repetition, only groups that
    /// grew in every measured run.
    pub leaks: Vec<ReportGroup>,
    /// Survivors that are not leaks but worth a look, one group each: what an extension holds
    /// outside Python, its cyclic garbage, and under repetition reachable objects that grew in
    /// every run.
    pub held: Vec<ReportGroup>,
    /// Every survivor that is not a leak, totalled by class.
    pub not_leaks: Vec<ClassTotal>,
    /// Objects whose references grew beyond what can be found, most first: in a plain run
    /// by 100 or more, under repetition in every measured run.
    pub unexplained: Vec<ReportUnexplained>,
    /// Native blocks that C code allocated and lost (a plain run) or that grew in every
    /// measured run, by allocation site, biggest first.
    pub native_leaks: Vec<ReportNative>,
    /// Native blocks of C code still allocated that are not leaks.
    pub native_kept: BlockTally,
    /// The Python children refhunt followed (`refhunt run`), each with its report's place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// Leaks that a suppression rule dropped (`--suppress`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<crate::gate::Suppressed>,
}

/// An object with references that nothing found accounts for.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportUnexplained {
    pub type_name: String,
    /// Its type and size, or the value of a str, an int or a tuple of them, truncated.
    pub repr: String,
    /// References nothing found accounts for, at the end.
    pub unexplained: i64,
    /// Of those, gained in the window.
    pub gained: i64,
    /// Under repetition: gained per measured call, and the runs it grew in, of how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_call: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grew: Option<u32>,
    /// Where it was made, if in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub native: Vec<NativeFrame>,
    pub python: Vec<PyFrame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    pub evidence: String,
}

impl Report {
    pub fn build(capture: &Capture, symbolizer: &mut dyn Symbolizer) -> Report {
        let repeat = capture.counters.repeat.map(|r| r.runs).filter(|&r| r > 0);
        let mut frames_of: HashMap<u64, Vec<NativeFrame>> = HashMap::new();
        let mut groups: Vec<ReportGroup> = Vec::new();
        for group in &capture.groups {
            let stack = capture
                .stacks
                .get(group.stack as usize)
                .cloned()
                .unwrap_or_default();
            // Symbols are the costly part: only groups that may be shown one by one get them.
            let shown = group.class.is_leak()
                || (repeat.is_some() && !group.runs.is_empty())
                || stack
                    .native
                    .iter()
                    .any(|&pc| !symbolizer.in_runtime(pc, module_of(&capture.modules, pc)));
            let mut native = Vec::new();
            for pc in stack.native.iter().filter(|_| shown) {
                let frames = frames_of
                    .entry(*pc)
                    .or_insert_with(|| symbolizer.symbolize(*pc, module_of(&capture.modules, *pc)));
                native.extend(frames.iter().cloned());
            }
            groups.push(ReportGroup {
                evidence: group.evidence.clone(),
                held_by_extension: group.held_by_extension,
                class: group.class,
                type_name: group.type_name.clone(),
                count: group.count,
                bytes: group.bytes,
                site: creation_site(&native, &stack.python),
                native,
                python: stack.python,
                runs: group.runs.clone(),
                per_call: None,
                path: group.path.clone(),
                holder: None,
                held_by: None,
                watched: group.watched.clone(),
            });
        }
        let mut leaks = Vec::new();
        let mut held = Vec::new();
        let mut totals: HashMap<Class, ClassTotal> = HashMap::new();
        for mut g in merge_by_site(groups) {
            g.holder = holder::find(&g.watched, &capture.stacks, &mut |pc| {
                frames_of
                    .entry(pc)
                    .or_insert_with(|| symbolizer.symbolize(pc, module_of(&capture.modules, pc)))
                    .clone()
            });
            let grew = g.grew_every_run(repeat);
            if let Some(runs) = repeat {
                g.runs.resize(runs as usize, 0);
                g.per_call = Some(g.count as f64 / runs as f64);
            }
            let found = g.evidence.take();
            // An unexplained reference that did not come back with every call is a cache
            // filled once, not a leak.
            if g.class.is_leak() && !grew {
                g.class = Class::HeldOutside;
            }
            // What only leaked objects hold goes with them: one-time work's contents are
            // made once too, however many.
            let once = match (repeat, g.class) {
                (None, Class::Leaked) if g.count < ONCE_MAX => g.one_time_work(),
                (None, Class::Indirect) => g.one_time_work(),
                _ => None,
            };
            g.evidence = match (repeat, &once) {
                (Some(runs), _) => Some(format!(
                    "grew in {} of {runs} runs",
                    g.runs.iter().filter(|&&n| n > 0).count()
                )),
                (None, Some(work)) => Some(format!(
                    "{} from {} {work}{}",
                    thousands(g.count),
                    g.site_kind(),
                    found.map(|f| format!(", {f}")).unwrap_or_default()
                )),
                (None, None) if g.class.is_leak() => Some(format!(
                    "{} from {}{}",
                    thousands(g.count),
                    g.site_kind(),
                    found.map(|f| format!(", {f}")).unwrap_or_default()
                )),
                (None, None) => found,
            };
            if once.is_some() {
                g.class = Class::Once;
            }
            if g.class.is_leak() {
                leaks.push(g);
                continue;
            }
            let t = totals.entry(g.class).or_insert(ClassTotal {
                class: g.class,
                groups: 0,
                count: 0,
                bytes: 0,
            });
            t.groups += 1;
            t.count += g.count;
            t.bytes += g.bytes;
            let listed = match g.class {
                Class::Once => true,
                Class::HeldOutside => {
                    g.made_by_extension() || g.held_by_extension || repeat.is_some()
                }
                Class::Garbage => g.made_by_extension() || repeat.is_some(),
                Class::Reachable => repeat.is_some() && grew,
                _ => false,
            };
            if listed {
                held.push(g);
            }
        }
        leaks.sort_by(biggest_first);
        held.sort_by(biggest_first);
        let mut not_leaks: Vec<ClassTotal> = totals.into_values().collect();
        not_leaks.sort_by_key(|t| t.class);
        let unexplained = capture
            .unexplained
            .iter()
            .map(|u| {
                let mut frames = |pc: u64| {
                    frames_of
                        .entry(pc)
                        .or_insert_with(|| {
                            symbolizer.symbolize(pc, module_of(&capture.modules, pc))
                        })
                        .clone()
                };
                let stack = u
                    .stack
                    .and_then(|i| capture.stacks.get(i as usize))
                    .cloned()
                    .unwrap_or_default();
                let native: Vec<NativeFrame> =
                    stack.native.iter().flat_map(|&pc| frames(pc)).collect();
                let per_call = repeat
                    .filter(|_| u.grew.is_some())
                    .map(|runs| u.gained as f64 / runs as f64);
                let evidence = match (repeat, u.grew) {
                    (Some(runs), Some(grew)) => format!(
                        "{} references more than were found; its refcount grew in {grew} of \
                         {runs} runs",
                        thousands(u.unexplained.max(0) as u64)
                    ),
                    _ => format!(
                        "{} references more than were found, {} of them gained in the window",
                        thousands(u.unexplained.max(0) as u64),
                        thousands(u.gained.max(0) as u64)
                    ),
                };
                ReportUnexplained {
                    type_name: u.type_name.clone(),
                    repr: u.repr.clone(),
                    unexplained: u.unexplained,
                    gained: u.gained,
                    per_call,
                    grew: u.grew,
                    site: (!stack.native.is_empty() || !stack.python.is_empty())
                        .then(|| creation_site(&native, &stack.python))
                        .flatten(),
                    holder: holder::find(&u.watched, &capture.stacks, &mut frames),
                    native,
                    python: stack.python,
                    evidence,
                }
            })
            .collect::<Vec<_>>();
        let mut notes = capture.notes.clone();
        // An object watched through a holder run in which no C code outside the interpreter
        // kept a reference gained its references from the interpreter's own bookkeeping,
        // where no traversal looks (a cache of its own): not a leak of the program's.
        let (unexplained, bookkeeping): (Vec<_>, Vec<_>) = unexplained
            .into_iter()
            .zip(&capture.unexplained)
            .partition(|(u, raw)| u.holder.is_some() || raw.watched.is_empty() || repeat.is_none());
        let unexplained: Vec<ReportUnexplained> = unexplained.into_iter().map(|(u, _)| u).collect();
        if !bookkeeping.is_empty() {
            notes.push(format!(
                "{} gained references that no C code outside the interpreter kept when a holder \
                 run watched {}: the interpreter's own bookkeeping, not counted ({})",
                if bookkeeping.len() == 1 {
                    "1 object".to_string()
                } else {
                    format!("{} objects", thousands(bookkeeping.len() as u64))
                },
                if bookkeeping.len() == 1 { "it" } else { "them" },
                bookkeeping
                    .iter()
                    .take(3)
                    .map(|(u, _)| format!("{} {}", u.type_name, u.repr))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(why) = &capture.watch_refused {
            if leaks.iter().any(|g| g.holder.is_none())
                || unexplained.iter().any(|u| u.holder.is_none())
            {
                notes.push(format!(
                    "no holder line (the C line that took a leaked reference): no refcount \
                     could be watched, because {why}"
                ));
            }
        }
        let (native_leaks, native_kept, held_by) = native::build(capture, repeat, &mut |pc| {
            frames_of
                .entry(pc)
                .or_insert_with(|| symbolizer.symbolize(pc, module_of(&capture.modules, pc)))
                .clone()
        });
        for g in &mut leaks {
            g.held_by = held_by.get(&(g.type_name.clone(), g.site.clone())).cloned();
        }
        Report {
            format: FORMAT,
            version: VERSION,
            refhunt: env!("CARGO_PKG_VERSION"),
            native_leaks,
            native_kept,
            python: capture.python.clone(),
            pid: capture.pid,
            argv: capture.argv.clone(),
            counters: capture.counters.clone(),
            notes,
            leaks,
            held,
            not_leaks,
            unexplained,
            children: Vec::new(),
            suppressed: Vec::new(),
        }
    }

    pub fn leaked_objects(&self) -> u64 {
        self.leaks.iter().map(|g| g.count).sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// The JSON report, on one line, with `text` (its rendering) as a field of its own.
    pub fn to_json_with_text(&self, text: &str) -> String {
        let mut value = serde_json::to_value(self).expect("report serializes");
        value["text"] = text.into();
        value.to_string()
    }
}

/// Direct leaks before indirect ones, then the most bytes and objects first.
pub(crate) fn biggest_first(a: &ReportGroup, b: &ReportGroup) -> std::cmp::Ordering {
    (a.class, Reverse(a.bytes), Reverse(a.count)).cmp(&(
        b.class,
        Reverse(b.bytes),
        Reverse(b.count),
    ))
}

/// Leak groups at least this large are leaks even when one-time work made them: a line
/// that left a hundred objects is no module's setup.
const ONCE_MAX: u64 = 100;

/// A frame's function, without the suffix of a part the compiler split off.
fn function_name(f: &NativeFrame) -> Option<&str> {
    f.function.as_deref().map(|n| n.trim_end_matches(".cold"))
}

/// Functions of the interpreter that create a class, whatever code asked for it.
const CLASS_CREATION: &[&str] = &[
    "type_new",
    "type_new_impl",
    "type_ready",
    "PyType_Ready",
    "PyType_FromSpec",
    "PyType_FromSpecWithBases",
    "PyType_FromModuleAndSpec",
    "PyType_FromMetaclass",
    "builtin___build_class__",
];

/// The native stacks of the parts of one merged group, by the path through the C code that
/// made them: two callers of one inlined helper share its site line, and the stack shown is
/// that of the path that made most of the group (the longest of its stacks: a warm call site
/// calls the C function straight from the eval loop, with fewer interpreter frames).
#[derive(Default)]
pub(crate) struct Paths(Vec<(Vec<Line>, Part)>);

/// A native frame's function, file and line.
type Line = (Option<String>, Option<String>, Option<u32>);

#[derive(Default)]
struct Part {
    count: u64,
    native: Vec<NativeFrame>,
}

impl Paths {
    pub(crate) fn add(&mut self, native: Vec<NativeFrame>, count: u64) {
        // The frames of the C code outside the runtime, from the first to the interpreter
        // that called it; by line, since a compiler may copy a call site.
        let path = native
            .iter()
            .skip_while(|f| f.interpreter)
            .take_while(|f| !f.interpreter)
            .map(|f| (f.function.clone(), f.file.clone(), f.line))
            .collect();
        let i = match self.0.iter().position(|(p, _)| *p == path) {
            Some(i) => i,
            None => {
                self.0.push((path, Part::default()));
                self.0.len() - 1
            }
        };
        let part = &mut self.0[i].1;
        part.count += count;
        if native.len() > part.native.len() {
            part.native = native;
        }
    }

    /// The stack shown; between equals, the path seen first, so that a report reads the same
    /// every time.
    pub(crate) fn shown(self) -> Vec<NativeFrame> {
        self.0
            .into_iter()
            .rev()
            .max_by_key(|(_, p)| (p.count, p.native.len()))
            .map(|(_, p)| p.native)
            .unwrap_or_default()
    }
}

/// One group per (class, type, creation site, Python stack); its stack is as [`Paths`] says.
fn merge_by_site(groups: Vec<ReportGroup>) -> Vec<ReportGroup> {
    let mut merged: Vec<(ReportGroup, Paths)> = Vec::new();
    let mut index: HashMap<(Class, String, Option<String>, Vec<PyFrame>), usize> = HashMap::new();
    for mut g in groups {
        let key = (
            g.class,
            g.type_name.clone(),
            g.site.clone(),
            g.python.clone(),
        );
        let native = std::mem::take(&mut g.native);
        match index.get(&key) {
            Some(&i) => {
                let (m, paths) = &mut merged[i];
                paths.add(native, g.count);
                m.count += g.count;
                m.bytes += g.bytes;
                if m.runs.len() < g.runs.len() {
                    m.runs.resize(g.runs.len(), 0);
                }
                for (total, n) in m.runs.iter_mut().zip(&g.runs) {
                    *total += n;
                }
                m.path = m.path.take().or(g.path);
                m.held_by_extension |= g.held_by_extension;
                m.watched.extend(g.watched);
            }
            None => {
                index.insert(key, merged.len());
                let mut paths = Paths::default();
                paths.add(native, g.count);
                merged.push((g, paths));
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut g, paths)| {
            g.native = paths.shown();
            g
        })
        .collect()
}

pub fn module_of(modules: &[Module], pc: u64) -> Option<&Module> {
    modules.iter().find(|m| m.start <= pc && pc < m.end)
}

/// The first native frame outside the interpreter that has a line (but Rust's standard
/// library, inlined into an extension), or else its first function, or the innermost Python
/// frame.
pub(crate) fn creation_site(native: &[NativeFrame], python: &[PyFrame]) -> Option<String> {
    let rust_std = |f: &&NativeFrame| f.file.as_deref().is_some_and(|p| p.starts_with("/rustc/"));
    native
        .iter()
        .filter(|f| !f.interpreter)
        .filter(|f| !rust_std(f))
        .find_map(NativeFrame::location)
        .or_else(|| {
            native.iter().find(|f| !f.interpreter).and_then(|f| {
                f.function
                    .clone()
                    .map(|name| format!("{name} ({})", f.module))
            })
        })
        .or_else(|| python.first().map(|f| format!("{}:{}", f.file, f.line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Group, Stack, FORMAT, VERSION};

    struct Table;
    impl Symbolizer for Table {
        fn in_runtime(&self, pc: u64, _module: Option<&Module>) -> bool {
            pc != 0x20
        }

        fn symbolize(&mut self, pc: u64, _module: Option<&Module>) -> Vec<NativeFrame> {
            let (function, file, line, interpreter) = match pc {
                0x10 => ("PyLong_FromLong", "Objects/longobject.c", 300, true),
                0x20 => ("leak_new_reference", "zoo/zoo.c", 42, false),
                _ => ("cfunction_call", "Objects/methodobject.c", 540, true),
            };
            vec![NativeFrame {
                pc,
                function: Some(function.into()),
                file: Some(file.into()),
                line: Some(line),
                module: "m.so".into(),
                offset: pc,
                source: SymbolSource::Dwarf,
                inlined: false,
                interpreter,
            }]
        }
    }

    fn capture(groups: Vec<Group>) -> Capture {
        Capture {
            format: FORMAT.into(),
            version: VERSION,
            python: PythonInfo {
                version: "3.11.7".into(),
                executable: "python3".into(),
                debug: false,
            },
            pid: 1,
            argv: vec![],
            modules: vec![],
            stacks: vec![
                Stack {
                    native: vec![0x10, 0x20, 0x30],
                    python: vec![PyFrame {
                        file: "<string>".into(),
                        function: "<module>".into(),
                        line: 1,
                    }],
                },
                Stack {
                    native: vec![0x30],
                    python: vec![PyFrame {
                        file: "app.py".into(),
                        function: "f".into(),
                        line: 7,
                    }],
                },
            ],
            groups,
            unexplained: vec![],
            native: vec![],
            counters: Counters::default(),
            notes: vec![],
            watch_refused: None,
        }
    }

    fn group(class: Class, count: u64, stack: u32) -> Group {
        Group {
            class,
            type_name: "int".into(),
            count,
            bytes: count * 32,
            stack,
            runs: vec![],
            path: None,
            evidence: None,
            held_by_extension: false,
            watched: vec![],
        }
    }

    #[test]
    fn site_is_first_extension_frame_with_a_line() {
        let c = capture(vec![group(Class::Leaked, 5, 0)]);
        let r = Report::build(&c, &mut Table);
        assert_eq!(r.leaks.len(), 1);
        assert_eq!(r.leaks[0].site.as_deref(), Some("zoo/zoo.c:42"));
        assert_eq!(r.leaks[0].native.len(), 3);
    }

    #[test]
    fn site_falls_back_to_python_frame_when_only_interpreter_frames() {
        let c = capture(vec![group(Class::Leaked, 5, 1)]);
        let r = Report::build(&c, &mut Table);
        assert_eq!(r.leaks[0].site.as_deref(), Some("app.py:7"));
    }

    #[test]
    fn leaks_sorted_direct_first_then_by_size_and_others_totalled() {
        let c = capture(vec![
            group(Class::Indirect, 100, 0),
            group(Class::Leaked, 5, 0),
            group(Class::Leaked, 50, 1),
            group(Class::Reachable, 7, 1),
            group(Class::Reachable, 3, 0),
            group(Class::HeldOutside, 1, 0),
        ]);
        let r = Report::build(&c, &mut Table);
        let order: Vec<(Class, u64)> = r.leaks.iter().map(|g| (g.class, g.count)).collect();
        assert_eq!(
            order,
            vec![
                (Class::Leaked, 50),
                (Class::Leaked, 5),
                (Class::Indirect, 100)
            ]
        );
        assert_eq!(r.leaked_objects(), 155);
        let reach = r
            .not_leaks
            .iter()
            .find(|t| t.class == Class::Reachable)
            .unwrap();
        assert_eq!((reach.groups, reach.count), (2, 10));
        // Listed one by one: what C code holds; plain
        // reachable objects only under repetition.
        let listed: Vec<(Class, u64)> = r.held.iter().map(|g| (g.class, g.count)).collect();
        assert_eq!(listed, vec![(Class::HeldOutside, 1)]);
    }

    #[test]
    fn under_repetition_a_leak_grows_in_every_run_and_has_a_rate() {
        let mut c = capture(vec![
            Group {
                runs: vec![1000, 1000, 1000, 1000],
                ..group(Class::Leaked, 4000, 0)
            },
            Group {
                runs: vec![1, 0, 0, 0],
                ..group(Class::Leaked, 1, 1)
            },
            Group {
                runs: vec![2, 2, 2, 2],
                path: Some("module zoo . _registry [list] -> int".into()),
                ..group(Class::Reachable, 8, 1)
            },
        ]);
        c.counters.repeat = Some(crate::capture::Repeat { runs: 4, warmup: 5 });
        let r = Report::build(&c, &mut Table);
        assert_eq!(r.leaks.len(), 1);
        assert_eq!(r.leaks[0].per_call, Some(1000.0));
        let classes: Vec<(Class, u64)> = r.held.iter().map(|g| (g.class, g.count)).collect();
        assert_eq!(
            classes,
            vec![(Class::HeldOutside, 1), (Class::Reachable, 8)]
        );
        assert_eq!(
            r.held[1].path.as_deref(),
            Some("module zoo . _registry [list] -> int")
        );
        assert_eq!(r.held[1].per_call, Some(2.0));
    }

    #[test]
    fn few_objects_from_an_import_are_made_once_and_many_are_still_a_leak() {
        let mut c = capture(vec![
            group(Class::Leaked, 3, 2),
            group(Class::Leaked, 500, 3),
        ]);
        let importing = vec![
            PyFrame {
                file: "/site/pkg/mod.py".into(),
                function: "<module>".into(),
                line: 4,
            },
            PyFrame {
                file: "<frozen importlib._bootstrap>".into(),
                function: "_call_with_frames_removed".into(),
                line: 241,
            },
        ];
        for line in [4, 5] {
            let mut python = importing.clone();
            python[0].line = line;
            c.stacks.push(Stack {
                native: vec![0x20],
                python,
            });
        }
        let r = Report::build(&c, &mut Table);
        let once: Vec<(Class, u64)> = r.held.iter().map(|g| (g.class, g.count)).collect();
        assert_eq!(once, vec![(Class::Once, 3)]);
        assert_eq!(
            r.held[0].evidence.as_deref(),
            Some("3 from one C line during the import of /site/pkg/mod.py")
        );
        assert_eq!(r.leaks.len(), 1);
        assert_eq!(r.leaks[0].count, 500);
        assert_eq!(r.leaks[0].evidence.as_deref(), Some("500 from one C line"));
    }

    #[test]
    fn held_outside_groups_are_listed_when_c_code_made_or_holds_them() {
        let mut c = capture(vec![
            Group {
                held_by_extension: true,
                ..group(Class::HeldOutside, 3, 1)
            },
            group(Class::HeldOutside, 4, 2),
        ]);
        let mut other_line = c.stacks[1].clone();
        other_line.python[0].line = 8;
        c.stacks.push(other_line);
        let r = Report::build(&c, &mut Table);
        let listed: Vec<u64> = r.held.iter().map(|g| g.count).collect();
        assert_eq!(listed, vec![3], "the interpreter's own are only totalled");
    }

    #[test]
    fn what_only_one_time_leaks_hold_is_made_once_however_many() {
        let mut c = capture(vec![group(Class::Indirect, 500, 2)]);
        c.stacks.push(Stack {
            native: vec![0x20],
            python: vec![PyFrame {
                file: "<frozen importlib._bootstrap>".into(),
                function: "_load".into(),
                line: 1,
            }],
        });
        let r = Report::build(&c, &mut Table);
        assert!(r.leaks.is_empty());
        assert_eq!(r.held[0].class, Class::Once);
        assert_eq!(r.held[0].count, 500);
    }

    #[test]
    fn runs_of_one_site_reached_by_two_native_paths_add_up() {
        // Run 1 through the slow call path, runs 2 and 3 through the specialized one.
        let mut c = capture(vec![
            Group {
                runs: vec![10, 0, 0],
                ..group(Class::Leaked, 10, 0)
            },
            Group {
                runs: vec![0, 10, 10],
                ..group(Class::Leaked, 20, 2)
            },
        ]);
        c.stacks.push(Stack {
            native: vec![0x20],
            python: c.stacks[0].python.clone(),
        });
        c.counters.repeat = Some(crate::capture::Repeat { runs: 3, warmup: 0 });
        let r = Report::build(&c, &mut Table);
        assert_eq!(r.leaks.len(), 1, "{:?}", r.held);
        assert_eq!(r.leaks[0].runs, vec![10, 10, 10]);
    }
}
