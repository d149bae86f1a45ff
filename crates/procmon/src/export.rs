//! `watch --csv` and `--json`: every sample, for a spreadsheet or a script.

use crate::curve::Summary;
use crate::sampler::Sample;
use std::fmt::Write;

const CSV_HEADER: &str = "t,rss,vms,shared,text,data,swap,minor_faults,major_faults,uss,pss";

/// One row a sample, sizes in bytes, time in seconds; USS and PSS empty when unread.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let optional = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in samples {
        let _ = writeln!(
            out,
            "{:.3},{},{},{},{},{},{},{},{},{},{}",
            s.t,
            s.rss,
            s.vms,
            s.shared,
            s.text,
            s.data,
            optional(s.swap),
            optional(s.minor_faults),
            optional(s.major_faults),
            optional(s.uss),
            optional(s.pss)
        );
    }
    out
}

/// What the JSON says about the watch besides its samples.
pub struct Watched<'a> {
    pub pid: u32,
    pub command: &'a str,
    pub interval: f64,
    /// How the watch ended, in words.
    pub ended: &'a str,
}

pub fn json(watched: &Watched, samples: &[Sample], summary: Option<&Summary>) -> String {
    let value = serde_json::json!({
        "pid": watched.pid,
        "command": watched.command,
        "interval": watched.interval,
        "ended": watched.ended,
        "units": {"t": "s", "sizes": "bytes", "slope": "bytes/s"},
        "summary": summary,
        "samples": samples,
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::summarize;

    fn samples() -> Vec<Sample> {
        (0..3)
            .map(|i| Sample {
                t: i as f64 * 0.5,
                rss: 1000 * (i + 1),
                uss: (i > 0).then_some(10),
                pss: (i > 0).then_some(20),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn csv_has_a_row_per_sample() {
        let text = csv(&samples());
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], CSV_HEADER);
        assert_eq!(rows[1], "0.000,1000,0,0,0,0,,,,,");
        assert_eq!(rows[3], "1.000,3000,0,0,0,0,,,,10,20");
    }

    #[test]
    fn json_holds_samples_and_summary() {
        let s = samples();
        let points: Vec<(f64, u64)> = s.iter().map(|s| (s.t, s.rss)).collect();
        let summary = summarize(&points);
        let watched = Watched {
            pid: 42,
            command: "python3",
            interval: 0.5,
            ended: "process exited",
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&watched, &s, summary.as_ref())).unwrap();
        assert_eq!(v["samples"].as_array().unwrap().len(), 3);
        assert_eq!(v["samples"][2]["rss"], 3000);
        assert_eq!(v["samples"][0]["uss"], serde_json::Value::Null);
        assert_eq!(v["summary"]["verdict"], "stable");
        assert_eq!(v["pid"], 42);
    }
}
