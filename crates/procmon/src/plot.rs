//! `watch --plot FILE.svg`: memory over time, the largest steps marked, the verdict in the title.
//! Hand-written SVG, so the picture needs no plotting library and opens in any browser.

use crate::curve::Summary;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 60.0;
/// Steps marked on the plot, biggest first; more would clutter it.
const MARKED_STEPS: usize = 3;

/// A round tick spacing (1, 2 or 5 times a power of ten) that cuts `span` into about 6 parts.
fn tick_spacing(span: f64) -> f64 {
    let raw = (span / 6.0).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn label(value: f64, spacing: f64) -> String {
    let decimals = if spacing >= 1.0 {
        0
    } else {
        (-spacing.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// `samples` are `(seconds, bytes)`; `title` names the process.
pub fn svg(samples: &[(f64, u64)], summary: &Summary, title: &str) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    // Time runs from the start of the watch, not from the first sample.
    let t0 = samples.first().map_or(0.0, |s| s.0.min(0.0));
    let t1 = samples.last().map_or(1.0, |s| s.0).max(t0 + 1e-3);
    let y_tick = tick_spacing(mb(summary.peak).max(1.0));
    let y_max = (mb(summary.peak) / y_tick).ceil().max(1.0) * y_tick;
    let x_tick = tick_spacing(t1 - t0);
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (WIDTH - LEFT - RIGHT);
    let y = |bytes: u64| HEIGHT - BOTTOM - mb(bytes) / y_max * (HEIGHT - TOP - BOTTOM);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="30" font-size="18" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="54" fill="#444">{}: {:+.3} MB in {:.1} s, peak {:.3} MB, steady slope {:+.2} MB/min</text>"##,
        summary.verdict.words(),
        summary.total_change as f64 / 1e6,
        summary.duration,
        mb(summary.peak),
        summary.slope_mb_per_min()
    );

    // Grid and axes.
    let mut v = 0.0;
    while v <= y_max + y_tick / 2.0 {
        let py = HEIGHT - BOTTOM - v / y_max * (HEIGHT - TOP - BOTTOM);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            py + 4.0,
            label(v, y_tick)
        );
        v += y_tick;
    }
    let mut t = (t0 / x_tick).ceil() * x_tick;
    while t <= t1 + 1e-9 {
        let px = x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 20.0,
            label(t, x_tick)
        );
        t += x_tick;
    }
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}" stroke="black"/><line x1="{LEFT}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="black"/>"#,
        WIDTH - RIGHT,
        b = HEIGHT - BOTTOM
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(25 {:.1}) rotate(-90)" text-anchor="middle">RSS (MB)</text>"#,
        (TOP + HEIGHT - BOTTOM) / 2.0
    );

    // The curve.
    let points: Vec<String> = samples
        .iter()
        .map(|&(t, b)| format!("{:.1},{:.1}", x(t), y(b)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#1f5fbf" stroke-width="2"/>"##,
        points.join(" ")
    );

    // The largest steps, each with its size and time.
    let mut marked = summary.steps.clone();
    marked.sort_by_key(|s| std::cmp::Reverse(s.change.unsigned_abs()));
    for step in marked.iter().take(MARKED_STEPS) {
        let Some(&(_, after)) = samples.iter().find(|s| s.0 == step.t) else {
            continue;
        };
        let (px, py) = (x(step.t), y(after));
        let text_x = px.min(WIDTH - RIGHT - 150.0) + 6.0;
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="4 4"/><circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#c0392b"/><text x="{text_x:.1}" y="{:.1}" fill="#c0392b">{:+.1} MB at {:.2} s</text>"##,
            HEIGHT - BOTTOM,
            (py - 10.0).max(TOP + 14.0),
            step.change as f64 / 1e6,
            step.t
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::summarize;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_spacing(60.0), 10.0);
        assert_eq!(tick_spacing(3.0), 0.5);
        assert_eq!(tick_spacing(45.0), 10.0);
        assert_eq!(tick_spacing(1200.0), 200.0);
    }

    #[test]
    fn marks_the_step_and_escapes_the_title() {
        let samples: Vec<(f64, u64)> = (0..10)
            .map(|i| (i as f64 * 0.5, if i < 4 { 10_000_000 } else { 45_000_000 }))
            .collect();
        let summary = summarize(&samples).unwrap();
        let svg = svg(&samples, &summary, "PID 7 <python3>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("PID 7 &lt;python3&gt;"));
        assert!(svg.contains("+35.0 MB at 2.00 s"), "{svg}");
        assert!(svg.contains("step growth"));
        assert_eq!(svg.matches("<circle").count(), 1);
    }
}
