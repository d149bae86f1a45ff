//! The report as text, for a terminal or a CI log.

use crate::numfmt::{bytes, thousands};
use crate::report::{NativeFrame, Report, ReportGroup, SymbolSource};
use std::fmt::Write;

/// Interpreter frames above the creation site are folded into one line past this many.
const INTERPRETER_FRAMES_SHOWN: usize = 2;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let leaked = report.leaked_objects();
    let leak_bytes: u64 = report.leaks.iter().map(|g| g.bytes).sum();
    let _ = writeln!(
        out,
        "refhunt: {} ({} objects, {}) · Python {} · pid {}",
        plural(report.leaks.len() as u64, "leak group", "leak groups"),
        thousands(leaked),
        bytes(leak_bytes),
        report.python.version,
        report.pid,
    );
    let _ = writeln!(
        out,
        "  live objects +{} · gc.collect() freed {}",
        thousands(report.counters.live_objects),
        thousands(report.counters.gc_freed),
    );
    for (i, group) in report.leaks.iter().enumerate() {
        out.push('\n');
        render_group(&mut out, i + 1, group);
    }
    if !report.not_leaks.is_empty() {
        out.push('\n');
        let parts: Vec<String> = report
            .not_leaks
            .iter()
            .map(|t| format!("{} {} ({})", thousands(t.count), t.class, bytes(t.bytes)))
            .collect();
        let _ = writeln!(out, "not leaks: {}", parts.join(" · "));
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn render_group(out: &mut String, rank: usize, g: &ReportGroup) {
    let _ = writeln!(
        out,
        "#{rank} {}: {} {} objects, {}",
        g.class,
        thousands(g.count),
        g.type_name,
        bytes(g.bytes)
    );
    if let Some(site) = &g.site {
        let _ = writeln!(out, "   created at {site}");
    }
    if !g.native.is_empty() {
        let _ = writeln!(out, "   native stack:");
        render_native(out, &g.native);
    }
    if !g.python.is_empty() {
        let _ = writeln!(out, "   python stack:");
        for f in &g.python {
            let _ = writeln!(out, "     {}:{} in {}", f.file, f.line, f.function);
        }
    }
}

/// Frames up to and including the last extension frame are shown whole; the interpreter's
/// call machinery above them is folded.
fn render_native(out: &mut String, frames: &[NativeFrame]) {
    let last_ext = frames.iter().rposition(|f| !f.interpreter);
    let keep = match last_ext {
        Some(i) => (i + 1 + INTERPRETER_FRAMES_SHOWN).min(frames.len()),
        None => frames.len().min(INTERPRETER_FRAMES_SHOWN + 2),
    };
    for f in &frames[..keep] {
        let name = f.function.as_deref().unwrap_or("??");
        let place = match (f.location(), f.source) {
            (Some(loc), _) => loc,
            (None, _) => format!("{}+{:#x}", f.module, f.offset),
        };
        let source = match f.source {
            SymbolSource::Dwarf => "dwarf",
            SymbolSource::Symtab => "symtab",
            SymbolSource::Offset => "offset",
        };
        let inlined = if f.inlined { " (inlined)" } else { "" };
        let _ = writeln!(
            out,
            "     {name}{inlined}  {place}  [{source}] {}",
            f.module
        );
    }
    if keep < frames.len() {
        let _ = writeln!(
            out,
            "     ... {} more interpreter frames",
            frames.len() - keep
        );
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}
