//! What a run gives a CI job: suppressions read, a baseline and a SARIF log written, GitHub
//! annotations, and whether its leaks fail the job.

use crate::error::Error;
use refhunt_core::gate::{self, Finding, Suppressions};
use refhunt_core::report::Report;
use refhunt_core::sarif;
use std::path::{Path, PathBuf};

/// The rules of every `--suppress` file, in order.
pub fn load(paths: &[PathBuf]) -> Result<Suppressions, Error> {
    let mut rules = Suppressions::default();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let more = Suppressions::parse(&text).map_err(|detail| Error::BadSuppressions {
            path: path.clone(),
            detail,
        })?;
        rules.extend(more);
    }
    Ok(rules)
}

/// The findings of a program's report and its children's reports.
pub fn findings<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Vec<Finding> {
    reports.into_iter().flat_map(Report::findings).collect()
}

/// The SARIF log of `findings`, paths relative to the working directory.
pub fn sarif_log(findings: &[Finding]) -> String {
    let root = std::env::current_dir().unwrap_or_default();
    sarif::log(findings, &root)
}

/// Workflow commands for GitHub Actions, on stderr beside the report, when running there.
pub fn annotate(findings: &[Finding]) {
    if std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        eprint!("{}", gate::github_annotations(findings));
    }
}

/// Whether `--fail-on-leak=min` fails the job on these findings, said on stderr if so.
pub fn fails(findings: &[Finding], min: u64, path: Option<&Path>) -> bool {
    let n = gate::failing(findings, min);
    if n > 0 {
        let more = path
            .map(|p| format!("; the report is in {}", p.display()))
            .unwrap_or_default();
        eprintln!(
            "refhunt: {n} {} of at least {} found: exit {}{more}",
            if n == 1 { "leak" } else { "leaks" },
            min.max(1),
            crate::EXIT_LEAKS
        );
    }
    n > 0
}
