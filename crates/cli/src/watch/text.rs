//! The lines `watch` prints: pidmon's columns, then a summary in words.

use refhunt_core::numfmt::thousands;
use refhunt_procmon::curve::{Summary, Verdict};
use refhunt_procmon::sampler::Sample;
use std::fmt::Write;

fn mb(bytes: u64) -> String {
    format!("{:.3} MB", bytes as f64 / 1e6)
}

fn signed_mb(bytes: i64) -> String {
    format!("{:+.3} MB", bytes as f64 / 1e6)
}

/// The opening line: the whole memory picture once, as pidmon prints `pextmem(...)`.
pub fn memory_line(pid: u32, comm: &str, s: &Sample) -> String {
    let mut line = format!(
        "PID {pid} ({comm}): rss {} · vms {} · shared {} · text {} · data {} · swap {} · faults {} minor, {} major",
        mb(s.rss),
        mb(s.vms),
        mb(s.shared),
        mb(s.text),
        mb(s.data),
        s.swap.map_or_else(|| "unreadable".into(), mb),
        s.minor_faults.map_or_else(|| "?".into(), thousands),
        s.major_faults.map_or_else(|| "?".into(), thousands),
    );
    if let (Some(uss), Some(pss)) = (s.uss, s.pss) {
        let _ = write!(line, " · uss {} · pss {}", mb(uss), mb(pss));
    }
    line
}

/// One sample in the seed's two columns, in MB of 10^6 bytes: `    56.443 [MB]    +48.759 [MB]`.
pub fn sample_line(s: &Sample, previous: Option<&Sample>) -> String {
    let rss = format!("{:10.3} [MB]", s.rss as f64 / 1e6);
    match previous {
        None => rss,
        Some(p) => format!("{rss} {:+10.3} [MB]", (s.rss as f64 - p.rss as f64) / 1e6),
    }
}

fn explain(summary: &Summary) -> String {
    match summary.verdict {
        Verdict::StepGrowth => {
            let up: Vec<_> = summary.steps.iter().filter(|s| s.change > 0).collect();
            let biggest = up.iter().max_by_key(|s| s.change);
            match biggest {
                Some(step) => format!(
                    "memory rose in {} and did not come back down; the largest, {}, at {:.2} s",
                    match up.len() {
                        1 => "one step".to_string(),
                        n => format!("{n} steps"),
                    },
                    signed_mb(step.change),
                    step.t
                ),
                None => format!("the floor rose {}", signed_mb(summary.growth)),
            }
        }
        Verdict::SteadyGrowth => format!(
            "memory rises steadily, {:+.2} MB/min",
            summary.slope_mb_per_min()
        ),
        Verdict::Stable => format!(
            "no lasting change; the floor moved {}",
            signed_mb(summary.growth)
        ),
        Verdict::Shrinking => format!("memory fell; the floor moved {}", signed_mb(summary.growth)),
    }
}

/// The closing block. `ended` says in words why the watch stopped.
pub fn summary(ended: &str, interval: f64, s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{ended}");
    let _ = writeln!(
        out,
        "samples       {} over {:.2} s, every {interval} s",
        s.samples, s.duration
    );
    let _ = writeln!(out, "start         {}", mb(s.start));
    let _ = writeln!(out, "end           {}", mb(s.end));
    let _ = writeln!(out, "peak          {} at {:.2} s", mb(s.peak), s.peak_t);
    let _ = writeln!(out, "total change  {}", signed_mb(s.total_change));
    match &s.largest_step {
        Some(step) => {
            let _ = writeln!(
                out,
                "largest step  {} at {:.2} s (between {:.2} s and {:.2} s)",
                signed_mb(step.change),
                step.t,
                step.from_t,
                step.t
            );
        }
        None => out.push_str("largest step  none\n"),
    }
    let _ = writeln!(
        out,
        "steady slope  {:+.2} MB/min (steps excluded)",
        s.slope_mb_per_min()
    );
    let _ = writeln!(out, "verdict       {}: {}", s.verdict.words(), explain(s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use refhunt_procmon::curve::summarize;

    #[test]
    fn columns_match_the_seed() {
        let a = Sample {
            rss: 7_684_000,
            ..Sample::default()
        };
        let b = Sample {
            rss: 56_443_000,
            ..Sample::default()
        };
        assert_eq!(sample_line(&a, None), "     7.684 [MB]");
        assert_eq!(sample_line(&b, Some(&a)), "    56.443 [MB]    +48.759 [MB]");
        assert_eq!(sample_line(&a, Some(&b)), "     7.684 [MB]    -48.759 [MB]");
    }

    #[test]
    fn summary_names_the_step() {
        let points: Vec<(f64, u64)> = (0..10)
            .map(|i| (i as f64 * 0.2, if i < 5 { 10_000_000 } else { 45_000_000 }))
            .collect();
        let text = summary("process 9 exited", 0.2, &summarize(&points).unwrap());
        assert!(
            text.contains("largest step  +35.000 MB at 1.00 s"),
            "{text}"
        );
        assert!(
            text.contains("verdict       step growth: memory rose in one step"),
            "{text}"
        );
    }
}
