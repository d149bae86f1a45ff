//! `refhunt report`: render a capture, and the symbolization shared with `run`.

use crate::error::Error;
use refhunt_core::capture::Capture;
use refhunt_core::report::Report;
use refhunt_core::text;
use refhunt_symbolize::{interpreter_predicate, ElfSymbolizer, Loaders};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// The JSON report with the text one as its `text` field: what the Python API reads, in
    /// one start of the CLI.
    JsonText,
    /// A SARIF 2.1.0 log of the leaks, for code scanning.
    Sarif,
    /// One self-contained HTML page.
    Html,
}

pub fn load_capture(path: &Path) -> Result<Capture, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Capture::from_json(&text).map_err(|e| Error::BadCapture {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The report of a capture; `loaders` may hold debug information read already.
pub fn build(capture: &Capture, loaders: Loaders) -> Report {
    let is_interpreter = interpreter_predicate(&capture.python.executable);
    Report::build(capture, &mut ElfSymbolizer::new(is_interpreter, loaders))
}

pub fn report(
    path: &Path,
    format: Format,
    suppress: &[PathBuf],
    curve: Option<&Path>,
) -> Result<(), Error> {
    if curve.is_some() && !matches!(format, Format::Html) {
        return Err(Error::BadArgument(
            "--curve draws into the HTML page: give it with --format html".into(),
        ));
    }
    let curve = curve
        .map(crate::memory_curve::from_watch_json)
        .transpose()?;
    let rules = crate::gating::load(suppress)?;
    let mut report = build(&load_capture(path)?, Loaders::default());
    report.suppress(&rules);
    let out = match format {
        Format::Sarif => crate::gating::sarif_log(&report.findings()),
        Format::Html => html(&report, curve.as_deref()),
        Format::Text => text::render(&report),
        Format::Json => report.to_json() + "\n",
        Format::JsonText => report.to_json_with_text(&text::render(&report)) + "\n",
    };
    write_stdout(&out)
}

/// The HTML page of `report`, with the source lines around each leak's line read from the
/// files that are here, and the memory curve if there is one.
pub fn html(report: &Report, curve: Option<&[(f64, u64)]>) -> String {
    let title = format!("RSS of PID {} under refhunt", report.pid);
    let svg = curve.and_then(|points| crate::memory_curve::svg(points, &title));
    refhunt_core::html::render(report, &mut source_lines, svg.as_deref())
}

/// Lines around `line` of `file` (four each side), if it is a readable text file of a sane
/// size.
fn source_lines(file: &str, line: u32) -> Option<Vec<(u32, String)>> {
    const MAX: u64 = 16 << 20;
    const AROUND: u32 = 4;
    let f = std::fs::File::open(file).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX {
        return None;
    }
    let text = std::io::read_to_string(f).ok()?;
    let first = line.saturating_sub(AROUND).max(1);
    let lines: Vec<(u32, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i as u32 + 1, l.to_string()))
        .skip(first as usize - 1)
        .take((line + AROUND + 1 - first) as usize)
        .collect();
    lines.iter().any(|(n, _)| *n == line).then_some(lines)
}

pub fn write_stdout(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::BrokenPipe),
        Err(source) => Err(Error::Write {
            path: "<stdout>".into(),
            source,
        }),
        Ok(()) => Ok(()),
    }
}
