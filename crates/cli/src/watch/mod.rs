//! `refhunt watch`: the seed's pidmon. It prints a process's RSS and its change at each
//! interval, then a summary and a verdict on the curve.

mod signals;
mod text;

use crate::error::Error;
use crate::run::{create, exit_code, write_to};
use refhunt_procmon::curve::{summarize, Summary};
use refhunt_procmon::export::{self, Watched};
use refhunt_procmon::plot;
use refhunt_procmon::sampler::{Sample, Sampler};
use signals::{Signal, Woken};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, IsTerminal};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The process to watch (or give a command after `--`).
    #[arg(value_name = "PID", required_unless_present = "command")]
    pid: Option<String>,
    /// Time between samples: seconds, or with a unit (`200ms`, `2s`, `1m`).
    #[arg(
        long,
        default_value = "1",
        value_name = "TIME",
        allow_hyphen_values = true
    )]
    interval: String,
    /// Stop watching after this long (same units as --interval).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    duration: Option<String>,
    /// Write every sample and the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write every sample as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Draw memory over time, the largest steps marked, as SVG to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Add the memory of every descendant process.
    #[arg(long)]
    children: bool,
    /// A command to start and watch, instead of a PID.
    #[arg(last = true, value_name = "CMD", conflicts_with = "pid")]
    command: Vec<OsString>,
}

/// How long a started command runs before its first sample.
const STARTUP: f64 = 0.1;

/// `0.2`, `200ms`, `2s`, `1.5m` → seconds; zero, negative and non-numbers are refused.
/// The longest interval or duration taken, in seconds: a week. Far beyond it a time no longer
/// fits the clock's arithmetic (`--interval 1e20` panicked).
const MAX_TIME: f64 = 7.0 * 24.0 * 3600.0;

fn parse_time(what: &str, text: &str) -> Result<f64, Error> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let seconds = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| {
            Error::BadArgument(format!(
                "--{what} {text:?} is not a time (examples: 1, 0.2, 500ms, 2m)"
            ))
        })?;
    if seconds <= 0.0 {
        return Err(Error::BadArgument(format!(
            "--{what} must be greater than zero (got {text})"
        )));
    }
    if seconds > MAX_TIME {
        return Err(Error::BadArgument(format!(
            "--{what} must be at most a week (got {text})"
        )));
    }
    Ok(seconds)
}

fn parse_pid(text: &str) -> Result<u32, Error> {
    text.parse::<u32>().ok().filter(|&p| p > 0).ok_or_else(|| {
        Error::BadArgument(format!("{text:?} is not a process ID (a positive number)"))
    })
}

/// The process being watched: one we were given, or one we started.
enum Target {
    Pid,
    Started { child: Child, name: String },
}

/// Why the watch ended.
enum Ended {
    Exited,
    Duration,
    Interrupted,
    Terminated,
}

struct Outputs {
    json: Option<File>,
    csv: Option<File>,
    plot: Option<File>,
}

pub fn watch(args: WatchArgs) -> Result<u8, Error> {
    let interval = parse_time("interval", &args.interval)?;
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_time("duration", d))
        .transpose()?;
    let pid = args.pid.as_deref().map(parse_pid).transpose()?;
    let outputs = Outputs {
        json: args.json.as_deref().map(create).transpose()?,
        csv: args.csv.as_deref().map(create).transpose()?,
        plot: args.plot.as_deref().map(create).transpose()?,
    };
    let detail = args.json.is_some() || args.csv.is_some();

    let (mut target, pid) = match pid {
        Some(pid) => (Target::Pid, pid),
        None => {
            let name = args.command[0].to_string_lossy().into_owned();
            let child = Command::new(&args.command[0])
                .args(&args.command[1..])
                .spawn()
                .map_err(|source| Error::Spawn {
                    command: name.clone(),
                    source,
                })?;
            let pid = child.id();
            (Target::Started { child, name }, pid)
        }
    };
    let mut sampler = Sampler::open(pid, args.children).map_err(|e| Error::Watch(e.to_string()))?;
    signals::install();
    let interactive = std::io::stdout().is_terminal();

    let started = Instant::now();
    // A started command is first read a moment in, so that the exec and the interpreter's
    // start-up do not pass for growth.
    let mut next = match target {
        Target::Pid => started,
        Target::Started { .. } => started + Duration::from_secs_f64(interval.min(STARTUP)),
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut paused = false;
    let deadline = duration.map(|d| started + Duration::from_secs_f64(d));
    let ended = loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break Ended::Duration;
        }
        // The duration ends the watch even in the middle of a long interval.
        let wake = deadline.map_or(next, |d| next.min(d));
        if now < wake {
            match signals::wait(wake - now, paused) {
                Woken::Timeout => {}
                Woken::Input => {
                    let mut line = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut line);
                    paused = false;
                    println!("(resumed)");
                    continue;
                }
                Woken::Signal => match signals::take() {
                    Some(Signal::Terminate) => break Ended::Terminated,
                    Some(Signal::Interrupt) if interactive && !paused => {
                        paused = true;
                        println!("(paused: Enter resumes, Ctrl-C ends)");
                        continue;
                    }
                    Some(Signal::Interrupt) => break Ended::Interrupted,
                    None => continue,
                },
            }
            continue;
        }
        let t = started.elapsed().as_secs_f64();
        // The opening line shows every field; later samples read them all only for export.
        let Some(sample) = sampler.read(t, detail || samples.is_empty()) else {
            break Ended::Exited;
        };
        if !paused {
            if samples.is_empty() {
                println!("{}", text::memory_line(pid, sampler.comm(), &sample));
            }
            println!("{}", text::sample_line(&sample, samples.last()));
        }
        samples.push(sample);
        next += Duration::from_secs_f64(interval);
        if next < Instant::now() {
            next = Instant::now() + Duration::from_secs_f64(interval);
        }
    };

    let (words, code) = ending(&mut target, pid, sampler.comm(), &ended, duration);
    let points: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.rss)).collect();
    let summary = summarize(&points);
    match &summary {
        Some(s) => print!("{}", text::summary(&words, interval, s)),
        None => println!("\n{words}; no sample was taken"),
    }
    let command = match &target {
        Target::Pid => sampler.comm().to_string(),
        Target::Started { name, .. } => name.clone(),
    };
    let watched = Watched {
        pid,
        command: &command,
        interval,
        ended: &words,
    };
    write_outputs(outputs, &args, &watched, &samples, summary.as_ref())?;
    Ok(code)
}

/// The ending in words, and the exit code: a started command's own code once it has exited,
/// otherwise 0.
fn ending(
    target: &mut Target,
    pid: u32,
    comm: &str,
    ended: &Ended,
    duration: Option<f64>,
) -> (String, u8) {
    let who = format!("PID {pid} ({comm})");
    if let Target::Started { child, .. } = target {
        if let Ok(Some(status)) = child.try_wait() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                _ => "exited".into(),
            };
            return (format!("{who} {how}"), exit_code(status));
        }
    }
    let words = match ended {
        Ended::Exited => format!("{who} exited"),
        Ended::Duration => format!(
            "watch ended after {}s; {who} is still running",
            duration.unwrap_or_default()
        ),
        Ended::Interrupted => format!("watch ended by Ctrl-C; {who} is still running"),
        Ended::Terminated => format!("watch ended by SIGTERM; {who} is still running"),
    };
    (words, 0)
}

fn write_outputs(
    outputs: Outputs,
    args: &WatchArgs,
    watched: &Watched,
    samples: &[Sample],
    summary: Option<&Summary>,
) -> Result<(), Error> {
    write_to(
        outputs.json,
        args.json.as_deref(),
        &export::json(watched, samples, summary),
    )?;
    write_to(outputs.csv, args.csv.as_deref(), &export::csv(samples))?;
    if let Some(summary) = summary {
        let points: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.rss)).collect();
        let title = format!("refhunt watch: PID {} ({})", watched.pid, watched.command);
        write_to(
            outputs.plot,
            args.plot.as_deref(),
            &plot::svg(&points, summary, &title),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_units() {
        assert_eq!(parse_time("interval", "0.2").unwrap(), 0.2);
        assert_eq!(parse_time("interval", "200ms").unwrap(), 0.2);
        assert_eq!(parse_time("interval", "2s").unwrap(), 2.0);
        assert_eq!(parse_time("interval", "1.5m").unwrap(), 90.0);
        assert!(parse_time("interval", "1e20").is_err());
        assert_eq!(parse_time("duration", "7d").ok(), None);
    }

    #[test]
    fn bad_times_and_pids_are_refused() {
        for bad in ["0", "-1", "abc", "", "nan", "inf", "0ms"] {
            assert!(parse_time("interval", bad).is_err(), "{bad}");
        }
        for bad in ["0", "-5", "12x", "abc"] {
            assert!(parse_pid(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pid("123").unwrap(), 123);
    }
}
