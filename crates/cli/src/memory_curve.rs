//! The memory curve in the HTML report: the program's RSS every 100 ms while `refhunt run
//! --html` waits for it, or the samples a `refhunt watch --json` file kept, drawn as the
//! watch's SVG.

use crate::error::Error;
use refhunt_procmon::sampler::Sampler;
use refhunt_procmon::{curve, plot};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(100);

/// A thread reading a process's RSS until it exits or is told to stop.
pub struct Recording {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl Recording {
    /// None when the process cannot be read (gone already): the page then has no curve.
    pub fn start(pid: u32) -> Option<Recording> {
        let mut sampler = Sampler::open(pid, false).ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("refhunt-curve".into())
            .spawn(move || {
                let started = Instant::now();
                let mut points = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    match sampler.read(started.elapsed().as_secs_f64(), false) {
                        Some(sample) => points.push((sample.t, sample.rss)),
                        None => break,
                    }
                    std::thread::sleep(EVERY);
                }
                points
            })
            .ok()?;
        Some(Recording { stop, thread })
    }

    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The SVG of a curve, if it has samples enough to summarize.
pub fn svg(points: &[(f64, u64)], title: &str) -> Option<String> {
    let summary = curve::summarize(points)?;
    Some(plot::svg(points, &summary, title))
}

/// The (seconds, RSS) samples of a `refhunt watch --json` file.
pub fn from_watch_json(path: &Path) -> Result<Vec<(f64, u64)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |detail: &str| {
        Error::BadArgument(format!(
            "{} is not the JSON of `refhunt watch --json`: {detail}",
            path.display()
        ))
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let samples = value["samples"]
        .as_array()
        .ok_or_else(|| bad("no samples"))?;
    samples
        .iter()
        .map(|s| Some((s["t"].as_f64()?, s["rss"].as_u64()?)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a sample without t and rss"))
}
