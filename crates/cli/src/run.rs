//! `refhunt run`: start the program with the agent, pass its I/O and exit code through, and
//! report when it ends.

use crate::children;
use crate::error::Error;
use crate::forward;
use crate::gating;
use crate::preload;
use crate::report_cmd::{build, load_capture};
use crate::target;
use refhunt_core::capture::Capture;
use refhunt_core::children::{Child, ChildLeaks};
use refhunt_core::report::Report;
use refhunt_core::text;
use refhunt_symbolize::Loaders;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the raw capture in FILE, to render again with `refhunt report`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Repeat the window N times and call a group a leak only if it grew in every run. The
    /// window is named by the command: `python -m refhunt.call module:function args...`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    repeat: Option<u16>,
    /// Untracked calls before the measured runs (default 5, as regrtest -R).
    #[arg(long, value_name = "N", requires = "repeat")]
    warmup: Option<u16>,
    /// Walk the creation stack of every object. The measured runs of `--repeat` always do.
    #[arg(long, conflicts_with = "sample")]
    exact: bool,
    /// Walk the stack of one object in about N of each kind (Python line, size or type, and
    /// C stack depth); counts stay exact, and sites are estimated only where one line makes
    /// objects of one kind at several C sites at one depth.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    sample: Option<u32>,
    /// Watch no refcount with hardware breakpoints: no holder lines, and none of their cost.
    #[arg(long)]
    no_watch: bool,
    /// Track no native memory (the malloc family, and C code's own PyMem and PyObject
    /// blocks): objects only, and none of its cost.
    #[arg(long)]
    no_native: bool,
    /// Leave the program's Python children untracked. By default forked children,
    /// `multiprocessing` workers and Python subprocesses of the same environment are tracked,
    /// and each one's report follows the program's (with --json, beside it: NAME.PID.json).
    #[arg(long, conflicts_with = "merge_children")]
    no_children: bool,
    /// Add the children's leaks to the program's report instead of reporting each apart.
    #[arg(long)]
    merge_children: bool,
    /// Exit with code 3 when the program succeeded and left a leak of at least N objects,
    /// references or native blocks (default 1); the program's own failure or signal comes
    /// first.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    fail_on_leak: Option<u64>,
    /// Drop the leaks that a rule of FILE matches. One rule a line, of key=pattern terms
    /// that must all match (keys: kind, type, site, holder, module; `*` and `?` as in the
    /// shell; `#` comments): `type=int site=*zoo.c:19`. May be given more than once.
    #[arg(long, value_name = "FILE")]
    suppress: Vec<PathBuf>,
    /// Write the run's leaks to FILE as suppression rules, to gate on new ones later.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write the leaks as a SARIF 2.1.0 log to FILE, for code scanning.
    #[arg(long, value_name = "FILE")]
    sarif: Option<PathBuf>,
    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print no report; files asked for are still written and errors still said.
    #[arg(short, long)]
    quiet: bool,
    /// The Python command to run.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Files the agent writes, in a private directory removed at the end.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A new directory of the temporary directory, readable by this user alone, under a name
    /// nobody can guess: a name from the PID alone let another user plant a symlink there
    /// first and have refhunt write the bootstrap through it.
    fn new() -> Result<Scratch, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let mut last = None;
        for _ in 0..16 {
            let dir = std::env::temp_dir().join(format!(
                "refhunt-{}-{:016x}",
                std::process::id(),
                random_u64()
            ));
            // `create` fails on anything already there, a symlink included.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((dir, e)),
                Err(source) => return Err(Error::Write { path: dir, source }),
            }
        }
        let (path, source) = last.expect("sixteen tries");
        Err(Error::Write { path, source })
    }

    fn capture(&self) -> PathBuf {
        self.dir.join("capture.json")
    }

    fn status(&self) -> PathBuf {
        self.dir.join("status")
    }

    /// Where the program's Python children leave their status and capture (see children.rs).
    fn children(&self) -> Result<PathBuf, Error> {
        let dir = self.dir.join("children");
        std::fs::create_dir(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// A directory holding only a link to `package`, for the end of the path of a target
    /// that cannot import refhunt of its own.
    fn lent(&self, package: &Path) -> Result<PathBuf, Error> {
        let dir = self.dir.join("lent");
        std::fs::create_dir(&dir)
            .and_then(|()| std::os::unix::fs::symlink(package, dir.join("refhunt")))
            .map_err(|source| Error::Write {
                path: dir.clone(),
                source,
            })?;
        Ok(dir)
    }

    /// A directory holding only the bootstrap `sitecustomize.py`, for the front of PYTHONPATH.
    fn bootstrap(&self) -> Result<PathBuf, Error> {
        let dir = self.dir.join("bootstrap");
        let file = dir.join("sitecustomize.py");
        // Inside the private directory, which nobody else can write to.
        std::fs::create_dir(&dir)
            .and_then(|()| std::fs::write(&file, BOOTSTRAP))
            .map_err(|source| Error::Write { path: file, source })?;
        Ok(dir)
    }
}

/// 64 bits from the kernel's random pool, or from the clock when it is refused.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

/// Starts the agent in the target before its program runs.
const BOOTSTRAP: &str = include_str!("sitecustomize.py");

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether two open files are one, whatever names, links or symlinks led to them.
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

pub(crate) fn create(path: &Path) -> Result<File, Error> {
    File::create(path).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub fn run(args: RunArgs) -> Result<u8, Error> {
    // Every output is opened before the program runs, so that a bad path fails in a second
    // rather than after an hour of tracing.
    let json_out = args.json.as_deref().map(create).transpose()?;
    let capture_out = args.capture.as_deref().map(create).transpose()?;
    if let (Some(json), Some(capture)) = (&json_out, &capture_out) {
        if same_file(json, capture) {
            return Err(Error::BadArgument(
                "--json and -o name the same file: the report would overwrite the capture".into(),
            ));
        }
    }
    let baseline_out = args.baseline.as_deref().map(create).transpose()?;
    let sarif_out = args.sarif.as_deref().map(create).transpose()?;
    let html_out = args.html.as_deref().map(create).transpose()?;
    let rules = gating::load(&args.suppress)?;
    let interpreter = target::resolve(&args.command)?;
    if args.repeat.is_some() && !names_a_window(&args.command) {
        return Err(Error::NoWindow);
    }
    let scratch = Scratch::new()?;
    if !args.no_watch {
        crate::perf_warm::start();
    }

    let mut pythonpath = OsString::from(scratch.bootstrap()?);
    let original = std::env::var_os("PYTHONPATH");
    if let Some(existing) = original.as_ref().filter(|p| !p.is_empty()) {
        pythonpath.push(":");
        pythonpath.push(existing);
    }
    let children = (!args.no_children)
        .then(|| scratch.children())
        .transpose()?;
    let lent = crate::package::own()
        .map(|package| scratch.lent(&package))
        .transpose()?;
    let mut command = Command::new(&args.command[0]);
    forward::die_with_parent(&mut command);
    // The bootstrap gives the program back the user's PYTHONPATH, exactly.
    match &original {
        Some(value) => command.env("REFHUNT_PYTHONPATH", value),
        None => command.env_remove("REFHUNT_PYTHONPATH"),
    };
    let child = command
        .args(&args.command[1..])
        .env("PYTHONPATH", pythonpath)
        .env("REFHUNT_CAPTURE", scratch.capture())
        .env("REFHUNT_STATUS", scratch.status())
        .env(
            "REFHUNT_REPEAT",
            args.repeat.map(|n| n.to_string()).unwrap_or_default(),
        )
        .env(
            "REFHUNT_WARMUP",
            args.warmup.map(|n| n.to_string()).unwrap_or_default(),
        )
        .env("REFHUNT_SAMPLE", sampling(&args).to_string())
        .envs(args.no_watch.then_some(("REFHUNT_NO_WATCH", "1")))
        .envs(args.no_native.then_some(("REFHUNT_NO_NATIVE", "1")))
        .envs(children.as_ref().map(|dir| ("REFHUNT_CHILDREN", dir)))
        .envs(lent.as_ref().map(|dir| ("REFHUNT_LENT", dir)))
        .spawn()
        .map_err(|source| Error::Spawn {
            command: args.command[0].to_string_lossy().into_owned(),
            source,
        })?;
    let loaders = preload::start(child.id());
    let recording = args
        .html
        .is_some()
        .then(|| crate::memory_curve::Recording::start(child.id()))
        .flatten();
    // The program decides what a signal means; refhunt passes on what was sent to it, and
    // stays to report (see forward.rs).
    let (status, peak_rss) = {
        let _forwarding = forward::Forwarding::install();
        forward::wait(child.id()).map_err(|source| Error::Spawn {
            command: args.command[0].to_string_lossy().into_owned(),
            source,
        })?
    };

    let curve = recording.map(crate::memory_curve::Recording::finish);
    match std::fs::read_to_string(scratch.status()).ok().as_deref() {
        Some("started") => {}
        Some(other) if other.starts_with("noagent: ") => {
            return Err(no_agent(&interpreter, &other["noagent: ".len()..]))
        }
        Some(other) => {
            return Err(Error::AgentFailed(
                other.trim_start_matches("error: ").into(),
            ))
        }
        None => {
            return Err(Error::NeverStarted(
                args.command[0].to_string_lossy().into_owned(),
            ))
        }
    }
    let capture_path = scratch.capture();
    if capture_path.exists() {
        let mut capture = load_capture(&capture_path)?;
        capture.counters.peak_rss = Some(peak_rss);
        let mut report = build(&capture, loaders.join().unwrap_or_default());
        let followed = children
            .as_deref()
            .map(children::collect)
            .unwrap_or_default();
        let mut apart = report_children(&mut report, followed, &args);
        report.suppress(&rules);
        for (child, _) in &mut apart {
            child.suppress(&rules);
        }
        let reports = || std::iter::once(&report).chain(apart.iter().map(|(r, _)| r));
        if !args.quiet {
            for r in reports() {
                eprint!("\n{}", text::render(r));
            }
        }
        let findings = gating::findings(reports());
        gating::annotate(&findings);
        write_to(
            baseline_out,
            args.baseline.as_deref(),
            &refhunt_core::gate::baseline(&findings),
        )?;
        write_to(
            sarif_out,
            args.sarif.as_deref(),
            &gating::sarif_log(&findings),
        )?;
        write_to(
            html_out,
            args.html.as_deref(),
            &crate::report_cmd::html(&report, curve.as_deref()),
        )?;
        write_to(json_out, args.json.as_deref(), &report.to_json())?;
        write_to(capture_out, args.capture.as_deref(), &capture.to_json())?;
        for (child, capture) in &apart {
            if let Some(path) = &args.json {
                write_new(&children::beside(path, child.pid), &child.to_json())?;
            }
            if let Some(path) = &args.capture {
                write_new(&children::beside(path, child.pid), &capture.to_json())?;
            }
        }
        let code = exit_code(status);
        if let Some(min) = args.fail_on_leak.filter(|_| code == 0) {
            if gating::fails(&findings, min, args.json.as_deref()) {
                return Ok(crate::EXIT_LEAKS);
            }
        }
    } else {
        eprintln!(
            "refhunt: the program ended without running its exit handlers (os._exit() or a \
             signal), so there is no report"
        );
    }
    forward::end_like(status);
    Ok(exit_code(status))
}

/// Names each followed child in `report`, and merges its report into it when asked; returns
/// the reports that go apart, with their captures.
fn report_children(
    report: &mut Report,
    followed: Vec<children::Followed>,
    args: &RunArgs,
) -> Vec<(Report, Capture)> {
    let mut apart = Vec::new();
    for f in followed {
        let mut child = Child {
            pid: f.pid,
            argv: f.argv,
            leaks: None,
            report: None,
            no_report: None,
        };
        match f.capture {
            Ok(capture) => {
                let built = build(&capture, Loaders::default());
                // The kernel's command line, if the child left one: `python -c` has ['-c'].
                if child.argv.is_empty() {
                    child.argv = built.argv.clone();
                }
                child.leaks = Some(ChildLeaks::of(&built));
                if args.merge_children {
                    child.report = Some("merged".into());
                    report.merge(built);
                } else {
                    child.report = Some(match &args.json {
                        Some(path) => children::beside(path, f.pid).display().to_string(),
                        None => "below".into(),
                    });
                    apart.push((built, capture));
                }
            }
            Err(why) => child.no_report = Some(why),
        }
        report.children.push(child);
    }
    apart
}

/// Writes a new file, refusing to follow a symlink planted at its name.
fn write_new(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// One walk in this many objects of a kind; 1 walks every stack. (The measured runs of a
/// repeated window walk every stack whatever this says: `_window.repeat` sees to it.)
fn sampling(args: &RunArgs) -> u32 {
    if args.exact {
        1
    } else {
        args.sample.unwrap_or(DEFAULT_SAMPLING)
    }
}

/// See docs/benchmarks.md for the measurements behind the default.
const DEFAULT_SAMPLING: u32 = 64;

/// Why an interpreter could not import refhunt, from the bootstrap's `X.Y: error` line: too
/// old a Python, or refhunt missing from it.
fn no_agent(interpreter: &Path, status: &str) -> Error {
    let (version, detail) = status.split_once(": ").unwrap_or(("", status));
    let parsed = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some((major, minor)) if (major, minor) < (3, 9) => {
            Error::NotSupported(format!("{major}.{minor}"))
        }
        _ => Error::NoAgent {
            interpreter: interpreter.display().to_string(),
            detail: detail.to_string(),
        },
    }
}

/// Whether the command runs `python -m refhunt.call`, the window that `--repeat` repeats.
fn names_a_window(command: &[OsString]) -> bool {
    command
        .windows(2)
        .any(|w| w[0] == "-m" && w[1] == "refhunt.call")
}

/// Writes `text` to an output opened before the run, if that output was asked for.
pub(crate) fn write_to(file: Option<File>, path: Option<&Path>, text: &str) -> Result<(), Error> {
    if let (Some(mut file), Some(path)) = (file, path) {
        file.write_all(text.as_bytes())
            .map_err(|source| Error::Write {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// The program's exit code; a death by signal is passed on as the shell reports it.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_old_a_python_is_not_supported_and_a_missing_package_is_named() {
        let python = Path::new("/usr/bin/python3.8");
        let old = no_agent(python, "3.8: No module named 'refhunt'").to_string();
        assert_eq!(old, "Python 3.8 is not supported (3.9 and newer are)");
        assert!(no_agent(python, "2.7: No module named refhunt")
            .to_string()
            .contains("Python 2.7 is not supported"));
        let missing = no_agent(
            Path::new("/venv/bin/python"),
            "3.11: No module named 'refhunt'",
        );
        assert!(matches!(missing, Error::NoAgent { .. }), "{missing}");
        assert!(missing.to_string().contains("No module named 'refhunt'"));
    }
}
