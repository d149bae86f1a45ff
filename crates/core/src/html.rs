//! The report as one self-contained HTML page (no script, no network): the counters, the
//! leaks biggest first, each with the source lines around the line it points at (as the
//! caller can read them), its evidence and holder, and its native and Python stacks to
//! expand; then what C code lost, what was suppressed, and what is held but no leak.

use crate::capture::PyFrame;
use crate::gate::{Finding, Location};
use crate::numfmt::{bytes, rate, thousands};
use crate::report::{NativeFrame, Report, ReportGroup};
use std::fmt::Write;

/// Source lines around a line of a file: (number, text), or None when it cannot be read.
pub type Sources<'a> = dyn FnMut(&str, u32) -> Option<Vec<(u32, String)>> + 'a;

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#1d1d1f;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
.counters{color:#444} .argv{font-family:monospace;color:#555}
section.finding{border:1px solid #ddd;border-left:5px solid #c62828;border-radius:4px;
 padding:.6em 1em;margin:1em 0} section.native{border-left-color:#ef6c00}
section.held{border-left-color:#9e9e9e}
.evidence,.holder,.site{margin:.2em 0} .holder{color:#b71c1c}
pre.source{background:#f6f8fa;padding:.5em;overflow-x:auto;margin:.4em 0}
pre.source span{display:block} pre.source .hit{background:#ffe0e0;font-weight:bold}
details{margin:.3em 0} summary{cursor:pointer;color:#0b57d0}
ol.stack{font-family:monospace;font-size:12px;margin:.3em 0}
ol.stack .runtime{color:#888} code{font-size:12px}
.notes{color:#555;font-size:12px} .curve svg{max-width:100%;height:auto}
";

/// The page of `report`; `sources` gives the lines around each leak's line, and `curve` is
/// the SVG of the memory curve, if one was recorded.
pub fn render(report: &Report, sources: &mut Sources<'_>, curve: Option<&str>) -> String {
    let mut out = String::new();
    let findings = report.findings();
    let title = format!(
        "refhunt: {} · Python {} · pid {}",
        match findings.len() {
            1 => "1 leak".to_string(),
            n => format!("{n} leaks"),
        },
        report.python.version,
        report.pid
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        out,
        "<p class=\"argv\">{}</p>\n<p class=\"counters\">{}</p>",
        esc(&report.argv.join(" ")),
        esc(&crate::text::counters_line(&report.counters))
    );

    if let Some(svg) = curve {
        let _ = writeln!(
            out,
            "<h2 id=\"memory\">Memory</h2>\n<div class=\"curve\">{svg}</div>"
        );
    }
    let _ = writeln!(out, "<h2 id=\"leaks\">Leaks</h2>");
    if findings.is_empty() {
        let _ = writeln!(out, "<p>No leaks.</p>");
    }
    let (groups, rest) = findings.split_at(report.leaks.len());
    let (unexplained, native) = rest.split_at(report.unexplained.len());
    for (i, (f, g)) in groups.iter().zip(&report.leaks).enumerate() {
        group(&mut out, i + 1, f, g, sources);
    }
    for (i, (f, u)) in unexplained.iter().zip(&report.unexplained).enumerate() {
        section(
            &mut out,
            &format!("unexplained-{}", i + 1),
            "finding",
            f,
            sources,
        );
        stacks(&mut out, &u.native, &u.python);
        out.push_str("</section>\n");
    }
    if !native.is_empty() {
        let _ = writeln!(out, "<h2 id=\"native\">Native memory lost</h2>");
    }
    for (i, (f, n)) in native.iter().zip(&report.native_leaks).enumerate() {
        section(
            &mut out,
            &format!("native-{}", i + 1),
            "finding native",
            f,
            sources,
        );
        for h in &n.holds {
            let _ = writeln!(
                out,
                "<p class=\"evidence\">holds {} leaked {} objects{}</p>",
                thousands(h.count),
                esc(&h.type_name),
                h.site
                    .as_ref()
                    .map(|s| format!(" made at <code>{}</code>", esc(s)))
                    .unwrap_or_default()
            );
        }
        stacks(&mut out, &n.native, &n.python);
        out.push_str("</section>\n");
    }

    if !report.suppressed.is_empty() {
        let _ = writeln!(out, "<h2 id=\"suppressed\">Suppressed</h2><ul>");
        for s in &report.suppressed {
            let _ = writeln!(
                out,
                "<li>{} {} {} at <code>{}</code>, by the rule <code>{}</code></li>",
                thousands(s.count),
                esc(&s.type_name),
                s.kind.name(),
                esc(s.site.as_deref().unwrap_or("an unknown site")),
                esc(&s.rule)
            );
        }
        out.push_str("</ul>\n");
    }
    if !report.held.is_empty() {
        let _ = writeln!(
            out,
            "<h2 id=\"held\">Not leaks, listed because C code holds or made them</h2>"
        );
        for g in &report.held {
            let _ = writeln!(
                out,
                "<details class=\"held\"><summary>{}: {} {} objects, {}{}</summary>",
                esc(&g.class.to_string()),
                thousands(g.count),
                esc(&g.type_name),
                bytes(g.bytes),
                g.site
                    .as_ref()
                    .map(|s| format!(" at {}", esc(s)))
                    .unwrap_or_default()
            );
            if let Some(e) = &g.evidence {
                let _ = writeln!(out, "<p class=\"evidence\">evidence: {}</p>", esc(e));
            }
            stacks(&mut out, &g.native, &g.python);
            out.push_str("</details>\n");
        }
    }
    if !report.children.is_empty() {
        let _ = writeln!(out, "<h2 id=\"children\">Child processes followed</h2><ul>");
        for c in &report.children {
            let _ = writeln!(out, "<li>{}</li>", esc(&crate::children::line(c)));
        }
        out.push_str("</ul>\n");
    }
    if !report.notes.is_empty() {
        out.push_str("<ul class=\"notes\">");
        for n in &report.notes {
            let _ = write!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn group(out: &mut String, rank: usize, f: &Finding, g: &ReportGroup, sources: &mut Sources<'_>) {
    section(out, &format!("leak-{rank}"), "finding", f, sources);
    if let Some(per_call) = g.per_call {
        let _ = writeln!(
            out,
            "<p class=\"evidence\">{} {} per call, in {} measured runs</p>",
            rate(per_call),
            esc(&g.type_name),
            g.runs.len()
        );
    }
    if let Some(h) = &g.holder {
        let _ = writeln!(
            out,
            "<details><summary>where the reference was taken</summary>"
        );
        stacks(out, &h.native, &h.python);
        out.push_str("</details>\n");
    }
    stacks(out, &g.native, &g.python);
    out.push_str("</section>\n");
}

/// Opens a finding's section: its message, and the source around its line.
fn section(out: &mut String, id: &str, class: &str, f: &Finding, sources: &mut Sources<'_>) {
    let _ = writeln!(
        out,
        "<section class=\"{class}\" id=\"{id}\" data-kind=\"{}\" data-type=\"{}\">\n\
         <h3>{}</h3>",
        f.kind.name(),
        esc(&f.type_name),
        esc(&f.message)
    );
    if let Some(site) = &f.site {
        let _ = writeln!(
            out,
            "<p class=\"site\">site: <code>{}</code></p>",
            esc(site)
        );
    }
    if let Some(holder) = &f.holder {
        let _ = writeln!(
            out,
            "<p class=\"holder\">kept by <code>{}</code></p>",
            esc(holder)
        );
    }
    if let Some(Location { file, line }) = &f.location {
        if let Some(lines) = sources(file, *line) {
            let place = format!("{file}:{line}");
            if f.site.as_ref() != Some(&place) {
                let _ = write!(out, "<p class=\"site\"><code>{}</code></p>", esc(&place));
            }
            out.push_str("<pre class=\"source\">");
            for (n, text) in lines {
                let hit = if n == *line { " class=\"hit\"" } else { "" };
                let _ = write!(out, "<span{hit}>{n:>5}  {}</span>", esc(&text));
            }
            out.push_str("</pre>\n");
        }
    }
}

fn stacks(out: &mut String, native: &[NativeFrame], python: &[PyFrame]) {
    if !native.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>native stack ({} frames)</summary><ol class=\"stack\">",
            native.len()
        );
        for f in native {
            let name = f.function.as_deref().unwrap_or("??");
            let place = f
                .location()
                .unwrap_or_else(|| format!("{}+{:#x}", f.module, f.offset));
            let runtime = if f.interpreter {
                " class=\"runtime\""
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "<li{runtime}>{}{} <span>{}</span> · {}</li>",
                esc(name),
                if f.inlined { " (inlined)" } else { "" },
                esc(&place),
                esc(&f.module)
            );
        }
        out.push_str("</ol></details>\n");
    }
    if !python.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Python stack ({} frames)</summary><ol class=\"stack\">",
            python.len()
        );
        for f in python {
            let _ = writeln!(
                out,
                "<li>{}:{} in {}</li>",
                esc(&f.file),
                f.line,
                esc(&f.function)
            );
        }
        out.push_str("</ol></details>\n");
    }
}

/// Text made safe for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
