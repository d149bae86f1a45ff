//! `refhunt demo`: the seed scenario end to end on the extension that ships with refhunt
//! (`refhunt._demo`, a limited-API build, its C source beside it): notice the memory grow,
//! measure and locate the leak, and confirm it by repetition. No compiler is needed.

use crate::error::Error;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The Python to run the demo in (default: the one installed beside refhunt).
    #[arg(long, value_name = "PYTHON")]
    python: Option<PathBuf>,
    /// How many ints the demo leaks.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    count: u64,
}

pub fn demo(args: DemoArgs) -> Result<u8, Error> {
    let python = match args.python {
        Some(python) => python,
        None => beside_refhunt().ok_or_else(|| {
            Error::BadArgument(
                "no python beside this refhunt: name one with `refhunt demo --python PATH`".into(),
            )
        })?,
    };
    let python = OsString::from(python);
    let n = args.count;
    step(
        &format!("notice: refhunt watch, while a program leaks {n} ints after 1 s"),
        &["watch", "--interval", "0.25", "--"],
        &python,
        &[
            "-c",
            &format!(
                "import time, refhunt._demo as d; time.sleep(1); d.leak({n}); time.sleep(1.5)"
            ),
        ],
        0,
    )?;
    step(
        "measure and locate: refhunt run (the counters, then the C line that made them)",
        &["run", "--fail-on-leak", "--"],
        &python,
        &["-c", &format!("import refhunt._demo as d; d.leak({n})")],
        crate::EXIT_LEAKS,
    )?;
    step(
        "confirm: repeat the call, as regrtest -R does; a leak grows in every run",
        &[
            "run",
            "--fail-on-leak",
            "--repeat",
            "4",
            "--warmup",
            "5",
            "--",
        ],
        &python,
        &["-m", "refhunt.call", "refhunt._demo:leak", "1000"],
        crate::EXIT_LEAKS,
    )?;
    println!(
        "\n== refhunt demo: noticed, measured and located; the source is {}",
        demo_source().unwrap_or_else(|| "refhunt/_demo.c".into())
    );
    Ok(0)
}

/// Runs `refhunt ARGS PYTHON PROGRAM`, which must exit with `expected`.
fn step(
    title: &str,
    args: &[&str],
    python: &OsString,
    program: &[&str],
    expected: u8,
) -> Result<(), Error> {
    println!("\n== {title}");
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        command: "refhunt".into(),
        source,
    })?;
    let status = Command::new(&exe)
        .args(args)
        .arg(python)
        .args(program)
        .status()
        .map_err(|source| Error::Spawn {
            command: exe.display().to_string(),
            source,
        })?;
    if status.code() != Some(expected.into()) {
        return Err(Error::BadArgument(format!(
            "the demo's step `refhunt {}` ended with {status}, not exit {expected}",
            args[0]
        )));
    }
    Ok(())
}

/// `python3` (or `python`) in the directory of this executable: the venv refhunt is in.
fn beside_refhunt() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    ["python3", "python"]
        .iter()
        .map(|name| exe.with_file_name(name))
        .find(|p| p.is_file())
}

fn demo_source() -> Option<String> {
    let package = crate::package::own()?;
    Some(package.join("_demo.c").display().to_string())
}
