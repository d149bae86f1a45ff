//! `refhunt`: find reference leaks in Python C extensions.

mod children;
mod demo;
mod error;
mod forward;
mod gating;
mod memory_curve;
mod package;
mod perf_warm;
mod preload;
mod report_cmd;
mod run;
mod target;
mod watch;

use clap::{CommandFactory, Parser, Subcommand};
use error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code when refhunt itself fails (bad input, unreadable capture); a traced program's own
/// exit code is passed through unchanged.
pub const EXIT_REFHUNT_ERROR: u8 = 2;

/// Exit code of `refhunt run --fail-on-leak` when the program succeeded and leaked.
pub const EXIT_LEAKS: u8 = 3;

#[derive(Parser)]
#[command(
    name = "refhunt",
    version,
    about = "Find reference leaks in Python C extensions: notice, measure, locate.",
    after_help = "Examples:\n  \
        refhunt run -- python -c \"import zoo; zoo.leakNewRefs(1000, 1000000)\"\n  \
        refhunt run --json leaks.json -o run.capture -- python -m pytest tests/\n  \
        refhunt run --fail-on-leak --sarif leaks.sarif -- python -m pytest tests/\n  \
        refhunt report run.capture --format json\n  \
        refhunt watch 14488 --interval 0.2\n\n\
        Exit codes: a traced program's own code (or its signal, as 128+N); 2 when refhunt \
        itself fails; 3 from `run --fail-on-leak` when the program succeeded and leaked."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch a process's memory (RSS) over time and say what the curve means.
    #[command(
        after_help = "Prints the memory once, then RSS and its change at each interval, as the \
        seed's pidmon.py does; at the end, a summary and a verdict: steady growth, step growth, \
        stable or shrinking. On a terminal Ctrl-C pauses, Enter resumes and a second Ctrl-C \
        ends; otherwise Ctrl-C or SIGTERM ends the watch.\n\nExamples:\n  \
        refhunt watch 14488\n  \
        refhunt watch 14488 --interval 0.2 --duration 30s --plot mem.svg\n  \
        refhunt watch --csv mem.csv -- python app.py"
    )]
    Watch(watch::WatchArgs),
    /// Run a Python command with the tracker loaded and report the objects it leaked.
    #[command(
        after_help = "The command's stdout, stderr and exit code pass through unchanged; \
        the report goes to stderr when the program exits.\n\nExamples:\n  \
        refhunt run -- python app.py\n  \
        refhunt run --json r.json -- python -c \"import zoo; zoo.leakNewRefs(1000, 1000)\"\n  \
        refhunt run -- pytest -x tests/"
    )]
    Run(run::RunArgs),
    /// Render a capture written by `refhunt run -o` again.
    #[command(after_help = "Examples:\n  \
        refhunt report run.capture\n  \
        refhunt report run.capture --format sarif --suppress known.supp > leaks.sarif")]
    Report {
        /// The capture file.
        capture: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: report_cmd::Format,
        /// Drop the leaks that a rule of FILE matches (as `refhunt run --suppress`).
        #[arg(long, value_name = "FILE")]
        suppress: Vec<PathBuf>,
        /// With --format html: draw the memory curve that `refhunt watch --json FILE` kept.
        #[arg(long, value_name = "FILE")]
        curve: Option<PathBuf>,
    },
    /// The seed scenario end to end, on the leaking extension that ships with refhunt.
    #[command(
        after_help = "Notice (the memory grows by a million ints), measure (the \
        counters: live objects +1M, gc.collect() freed nothing) and locate (the C line), then \
        confirm by repetition. No compiler is needed: refhunt._demo is a limited-API build \
        that serves every CPython.\n\nExamples:\n  \
        refhunt demo\n  \
        refhunt demo --python python3.13 --count 100000"
    )]
    Demo(demo::DemoArgs),
    /// Print a shell's completion script for refhunt.
    #[command(after_help = "Examples:\n  \
        refhunt completions bash > ~/.local/share/bash-completion/completions/refhunt\n  \
        refhunt completions zsh > ~/.zfunc/_refhunt\n  \
        refhunt completions fish > ~/.config/fish/completions/refhunt.fish")]
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Watch(args) => watch::watch(args),
        Command::Demo(args) => demo::demo(args),
        Command::Report {
            capture,
            format,
            suppress,
            curve,
        } => report_cmd::report(&capture, format, &suppress, curve.as_deref()).map(|()| 0),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "refhunt", &mut out);
            report_cmd::write_stdout(&String::from_utf8_lossy(&out)).map(|()| 0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refhunt: error: {e}");
            ExitCode::from(EXIT_REFHUNT_ERROR)
        }
    }
}
