//! The report as text, for a terminal or a CI log.

use crate::capture::{Counters, PyFrame};
use crate::native::ReportNative;
use crate::numfmt::{bytes, compact, rate, thousands};
use crate::report::{NativeFrame, Report, ReportGroup, ReportUnexplained, SymbolSource};
use std::fmt::Write;

/// Interpreter frames above the creation site are folded into one line past this many.
const INTERPRETER_FRAMES_SHOWN: usize = 2;
/// Python frames shown from the innermost; test runners add dozens more outside.
const PYTHON_FRAMES_SHOWN: usize = 8;
/// Groups listed under "not leaks" in the text; the JSON has them all.
const HELD_SHOWN: usize = 10;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let leaked = report.leaked_objects();
    let leak_bytes: u64 = report.leaks.iter().map(|g| g.bytes).sum();
    let native_leaks = &report.native_leaks;
    let native = if native_leaks.is_empty() {
        String::new()
    } else {
        format!(
            "; {} native blocks, {}",
            thousands(native_leaks.iter().map(|n| n.count).sum()),
            bytes(native_leaks.iter().map(|n| n.bytes).sum())
        )
    };
    let groups = (report.leaks.len() + native_leaks.len()) as u64;
    let _ = writeln!(
        out,
        "refhunt: {} ({} objects, {}{native}) · Python {} · pid {}",
        plural(groups, "leak group", "leak groups"),
        thousands(leaked),
        bytes(leak_bytes),
        report.python.version,
        report.pid,
    );
    let _ = writeln!(out, "  {}", counters_line(&report.counters));
    if let Some(r) = report.counters.repeat {
        let _ = writeln!(
            out,
            "  repeated: {} measured {} after {} warm-up {}; a leak grew in every measured run",
            r.runs,
            if r.runs == 1 { "run" } else { "runs" },
            r.warmup,
            if r.warmup == 1 { "call" } else { "calls" },
        );
    }
    if !report.leaks.is_empty() && report.counters.gc_freed == 0 {
        let _ = writeln!(
            out,
            "  not collectable: gc.collect() freed nothing, and no garbage collection frees a \
             reference that C code never released"
        );
    }
    for (i, group) in report.leaks.iter().enumerate() {
        out.push('\n');
        render_group(&mut out, &format!("#{}", i + 1), group);
    }
    for (i, u) in report.unexplained.iter().enumerate() {
        out.push('\n');
        render_unexplained(
            &mut out,
            &format!("#{}", report.leaks.len() + i + 1),
            u,
            report,
        );
    }
    let shown = report.leaks.len() + report.unexplained.len();
    for (i, n) in native_leaks.iter().enumerate() {
        out.push('\n');
        render_native_leak(&mut out, &format!("#{}", shown + i + 1), n);
    }
    if !report.held.is_empty() {
        let _ = writeln!(
            out,
            "\nnot leaks, listed because C code holds or made them, they were made once, or they grew:"
        );
        for group in report.held.iter().take(HELD_SHOWN) {
            render_group(&mut out, "-", group);
        }
        if report.held.len() > HELD_SHOWN {
            let _ = writeln!(
                out,
                "- ... {} more in the JSON report",
                report.held.len() - HELD_SHOWN
            );
        }
    }
    if !report.not_leaks.is_empty() || report.native_kept.count > 0 {
        out.push('\n');
        let mut parts: Vec<String> = report
            .not_leaks
            .iter()
            .map(|t| format!("{} {} ({})", thousands(t.count), t.class, bytes(t.bytes)))
            .collect();
        let kept = report.native_kept;
        if kept.count > 0 {
            parts.push(format!(
                "{} native blocks still held ({})",
                thousands(kept.count),
                bytes(kept.bytes)
            ));
        }
        let _ = writeln!(out, "not leaks: {}", parts.join(" · "));
    }
    if !report.children.is_empty() {
        let _ = writeln!(out, "\nchild processes followed: {}", report.children.len());
        for c in &report.children {
            let _ = writeln!(out, "  {}", crate::children::line(c));
        }
    }
    for s in &report.suppressed {
        let _ = writeln!(
            out,
            "suppressed: {} {} {} at {}, by the rule `{}`",
            thousands(s.count),
            s.type_name,
            s.kind.name(),
            s.site.as_deref().unwrap_or("an unknown site"),
            s.rule
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// The whole-process counters in one line, e.g.
/// `total refcount +1.00M (debug build) · live objects +1.00M · gc.collect() freed 0`.
pub(crate) fn counters_line(c: &Counters) -> String {
    let mut parts = Vec::new();
    if let Some(r) = c.total_refcount {
        parts.push(format!(
            "total refcount {} (debug build)",
            compact(r.delta())
        ));
    }
    parts.push(format!("live objects {}", compact(c.live_objects as i64)));
    if let Some(b) = c.allocated_blocks {
        parts.push(format!("allocated blocks {}", compact(b.delta())));
    }
    if let Some(r) = c.rss {
        let sign = if r.delta() < 0 { "-" } else { "+" };
        parts.push(format!("RSS {sign}{}", bytes(r.delta().unsigned_abs())));
    }
    if let Some(peak) = c.peak_rss {
        parts.push(format!("peak RSS {}", bytes(peak)));
    }
    parts.push(format!("gc.collect() freed {}", thousands(c.gc_freed)));
    parts.join(" · ")
}

fn render_group(out: &mut String, rank: &str, g: &ReportGroup) {
    let mut title = format!(
        "{rank} {}: {} {} objects, {}",
        g.class,
        thousands(g.count),
        g.type_name,
        bytes(g.bytes)
    );
    if let Some(per_call) = g.per_call {
        let grew = g.runs.iter().filter(|&&n| n > 0).count();
        let _ = write!(
            title,
            " · {} {} per call, grew in {grew} of {} runs",
            rate(per_call),
            g.type_name,
            g.runs.len().max(grew)
        );
    }
    let _ = writeln!(out, "{title}");
    if let Some(h) = &g.holder {
        let made = g
            .site
            .as_ref()
            .map(|s| format!("; the object was made at {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "   reference taken at {} in {} and never released: {}{made}",
            h.site,
            h.function,
            h.amount()
        );
    }
    if let Some(evidence) = &g.evidence {
        let _ = writeln!(out, "   evidence: {evidence}");
    }
    if let Some(held_by) = &g.held_by {
        let _ = writeln!(out, "   held by {held_by}");
    }
    if let Some(path) = &g.path {
        let _ = writeln!(out, "   path: {path}");
    }
    if let Some(site) = &g.site {
        let _ = writeln!(out, "   created at {site}");
    }
    if !g.native.is_empty() {
        let _ = writeln!(out, "   native stack:");
        render_native(out, &g.native);
    }
    render_python(out, "python stack", &g.python);
    if let Some(h) = &g.holder {
        let _ = writeln!(out, "   where the reference was taken:");
        render_native(out, &h.native);
        render_python(out, "its python stack", &h.python);
    }
}

fn render_native_leak(out: &mut String, rank: &str, n: &ReportNative) {
    let mut title = format!(
        "{rank} leaked native memory: {} blocks from {}, {}",
        thousands(n.count),
        n.allocator,
        bytes(n.bytes)
    );
    if let Some(per_call) = n.per_call {
        let _ = write!(title, " · {} blocks per call", rate(per_call));
    }
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "   evidence: {}", n.evidence);
    if let Some(site) = &n.site {
        let _ = writeln!(out, "   allocated at {site}");
    }
    for h in &n.holds {
        let _ = writeln!(
            out,
            "   holds {} leaked {} objects{}",
            thousands(h.count),
            h.type_name,
            h.site
                .as_ref()
                .map(|s| format!(" made at {s}"))
                .unwrap_or_default()
        );
    }
    if !n.native.is_empty() {
        let _ = writeln!(out, "   native stack:");
        render_native(out, &n.native);
    }
    render_python(out, "python stack", &n.python);
}

fn render_unexplained(out: &mut String, rank: &str, u: &ReportUnexplained, report: &Report) {
    let amount = match u.per_call {
        Some(per_call) => format!("{} references per call", signed_rate(per_call)),
        None => format!("+{} references", thousands(u.gained.max(0) as u64)),
    };
    let _ = writeln!(
        out,
        "{rank} unexplained references: {} {} · {amount}",
        u.type_name, u.repr
    );
    match &u.holder {
        Some(h) => {
            let _ = writeln!(
                out,
                "   reference taken at {} in {} and never released: {}",
                h.site,
                h.function,
                h.amount()
            );
        }
        None if report.counters.repeat.is_none() => {
            let _ = writeln!(
                out,
                "   holder: watched under repetition (`refhunt run --repeat`, refhunt.check() \
                 or pytest --refhunt), which runs the code once more with a breakpoint on it"
            );
        }
        None => {}
    }
    let _ = writeln!(out, "   evidence: {}", u.evidence);
    if let Some(site) = &u.site {
        let _ = writeln!(out, "   made at {site}");
    }
    if let Some(h) = &u.holder {
        let _ = writeln!(out, "   where the reference was taken:");
        render_native(out, &h.native);
        render_python(out, "its python stack", &h.python);
    }
}

fn signed_rate(n: f64) -> String {
    if n >= 0.0 {
        format!("+{}", rate(n))
    } else {
        format!("-{}", rate(-n))
    }
}

fn render_python(out: &mut String, title: &str, frames: &[PyFrame]) {
    if frames.is_empty() {
        return;
    }
    let _ = writeln!(out, "   {title}:");
    for f in frames.iter().take(PYTHON_FRAMES_SHOWN) {
        let _ = writeln!(out, "     {}:{} in {}", f.file, f.line, f.function);
    }
    if frames.len() > PYTHON_FRAMES_SHOWN {
        let _ = writeln!(
            out,
            "     ... {} outer frames",
            frames.len() - PYTHON_FRAMES_SHOWN
        );
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
