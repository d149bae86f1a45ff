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

pub fn report(path: &Path, format: Format, suppress: &[PathBuf]) -> Result<(), Error> {
    let rules = crate::gating::load(suppress)?;
    let mut report = build(&load_capture(path)?, Loaders::default());
    report.suppress(&rules);
    let out = match format {
        Format::Sarif => crate::gating::sarif_log(&report.findings()),
        Format::Text => text::render(&report),
        Format::Json => report.to_json() + "\n",
        Format::JsonText => report.to_json_with_text(&text::render(&report)) + "\n",
    };
    write_stdout(&out)
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
