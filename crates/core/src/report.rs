//! From a capture to a report: symbolized frames, creation sites, leaks biggest first.

use crate::capture::{Capture, Class, Counters, Module, PyFrame, PythonInfo};
use serde::Serialize;
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
    /// In the interpreter itself rather than an extension.
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
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassTotal {
    pub class: Class,
    pub groups: u64,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub python: PythonInfo,
    pub pid: u32,
    pub argv: Vec<String>,
    pub counters: Counters,
    pub notes: Vec<String>,
    /// Leak groups (direct, then indirect), biggest first.
    pub leaks: Vec<ReportGroup>,
    /// Survivors that are not leaks, totalled by class.
    pub not_leaks: Vec<ClassTotal>,
}

impl Report {
    pub fn build(capture: &Capture, symbolizer: &mut dyn Symbolizer) -> Report {
        let mut frames_of: HashMap<u64, Vec<NativeFrame>> = HashMap::new();
        let mut leaks: Vec<ReportGroup> = Vec::new();
        let mut totals: HashMap<Class, ClassTotal> = HashMap::new();
        for group in &capture.groups {
            if !group.class.is_leak() {
                let t = totals.entry(group.class).or_insert(ClassTotal {
                    class: group.class,
                    groups: 0,
                    count: 0,
                    bytes: 0,
                });
                t.groups += 1;
                t.count += group.count;
                t.bytes += group.bytes;
                continue;
            }
            let stack = capture
                .stacks
                .get(group.stack as usize)
                .cloned()
                .unwrap_or_default();
            let mut native = Vec::new();
            for pc in &stack.native {
                let frames = frames_of
                    .entry(*pc)
                    .or_insert_with(|| symbolizer.symbolize(*pc, module_of(&capture.modules, *pc)));
                native.extend(frames.iter().cloned());
            }
            let site = creation_site(&native, &stack.python);
            leaks.push(ReportGroup {
                class: group.class,
                type_name: group.type_name.clone(),
                count: group.count,
                bytes: group.bytes,
                site,
                native,
                python: stack.python,
            });
        }
        let mut leaks = merge_by_site(leaks);
        leaks.sort_by(|a, b| {
            (
                a.class,
                std::cmp::Reverse(a.bytes),
                std::cmp::Reverse(a.count),
            )
                .cmp(&(
                    b.class,
                    std::cmp::Reverse(b.bytes),
                    std::cmp::Reverse(b.count),
                ))
        });
        let mut not_leaks: Vec<ClassTotal> = totals.into_values().collect();
        not_leaks.sort_by_key(|t| t.class);
        Report {
            python: capture.python.clone(),
            pid: capture.pid,
            argv: capture.argv.clone(),
            counters: capture.counters.clone(),
            notes: capture.notes.clone(),
            leaks,
            not_leaks,
        }
    }

    pub fn leaked_objects(&self) -> u64 {
        self.leaks.iter().map(|g| g.count).sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}

/// One group per (class, type, creation site, Python stack). The same line can be reached
/// through different native paths (3.11+ specializes a call site once it is warm and then
/// calls the C function straight from the eval loop); the longest native stack is kept.
fn merge_by_site(groups: Vec<ReportGroup>) -> Vec<ReportGroup> {
    let mut merged: Vec<ReportGroup> = Vec::new();
    let mut index: HashMap<(Class, String, Option<String>, Vec<PyFrame>), usize> = HashMap::new();
    for g in groups {
        let key = (
            g.class,
            g.type_name.clone(),
            g.site.clone(),
            g.python.clone(),
        );
        match index.get(&key) {
            Some(&i) => {
                let m = &mut merged[i];
                m.count += g.count;
                m.bytes += g.bytes;
                if g.native.len() > m.native.len() {
                    m.native = g.native;
                }
            }
            None => {
                index.insert(key, merged.len());
                merged.push(g);
            }
        }
    }
    merged
}

pub fn module_of(modules: &[Module], pc: u64) -> Option<&Module> {
    modules.iter().find(|m| m.start <= pc && pc < m.end)
}

fn creation_site(native: &[NativeFrame], python: &[PyFrame]) -> Option<String> {
    native
        .iter()
        .filter(|f| !f.interpreter)
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
            counters: Counters::default(),
            notes: vec![],
        }
    }

    fn group(class: Class, count: u64, stack: u32) -> Group {
        Group {
            class,
            type_name: "int".into(),
            count,
            bytes: count * 32,
            stack,
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
            group(Class::HeldByStatic, 1, 0),
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
    }
}
