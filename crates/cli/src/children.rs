//! The Python children that `refhunt run` followed: each tracked child leaves, in the folder
//! that REFHUNT_CHILDREN names, `PID.status` when it starts ("started" and its command line,
//! or "error: why") and `PID.capture` when it reaches its exit path (an exit handler, or
//! `os._exit` in a forked child), written whole under another name first.

use crate::report_cmd::load_capture;
use refhunt_core::capture::Capture;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long refhunt waits, once the program has ended, for children still at their exit.
const GRACE: Duration = Duration::from_secs(2);

pub struct Followed {
    pub pid: u32,
    pub argv: Vec<String>,
    /// Its capture, or why it has none.
    pub capture: Result<Capture, String>,
}

/// The children that started tracking, by PID, once each has ended or the grace has passed.
pub fn collect(folder: &Path) -> Vec<Followed> {
    let deadline = Instant::now() + GRACE;
    let mut pids = started(folder);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|&pid| !captured(folder, pid) && running(pid))
    {
        std::thread::sleep(Duration::from_millis(20));
        pids = started(folder);
    }
    pids.into_iter().map(|pid| followed(folder, pid)).collect()
}

fn followed(folder: &Path, pid: u32) -> Followed {
    let status = std::fs::read_to_string(folder.join(format!("{pid}.status"))).unwrap_or_default();
    let (first, rest) = status.split_once('\n').unwrap_or((&status, ""));
    let argv = serde_json::from_str(rest).unwrap_or_default();
    let capture = if let Some(why) = first.strip_prefix("error: ") {
        Err(format!("it could not be tracked: {why}"))
    } else if captured(folder, pid) {
        load_capture(&folder.join(format!("{pid}.capture")))
            .map_err(|e| format!("its capture is unreadable: {e}"))
    } else if running(pid) {
        Err("it was still running when the program ended".into())
    } else {
        Err(
            "it ended without reaching its exit path: killed by a signal (the SIGTERM of \
             Pool.terminate(), say), or os._exit called from C code"
                .into(),
        )
    };
    Followed { pid, argv, capture }
}

/// The PIDs with a status file, in order.
fn started(folder: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".status")?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn captured(folder: &Path, pid: u32) -> bool {
    folder.join(format!("{pid}.capture")).is_file()
}

/// Whether `pid` runs and is not a zombie (one its parent has not waited for).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_ascii_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Where a child's copy of an output goes: beside it, with the PID before the extension
/// (`report.json` gives `report.4242.json`).
pub fn beside(path: &Path, pid: u32) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = match name.as_deref().and_then(|n| n.rsplit_once('.')) {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{pid}.{ext}"),
        _ => format!("{}.{pid}", name.unwrap_or_default()),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_output_goes_beside_the_parents_with_its_pid() {
        assert_eq!(
            beside(Path::new("out/report.json"), 42),
            Path::new("out/report.42.json")
        );
        assert_eq!(beside(Path::new("capture"), 42), Path::new("capture.42"));
        assert_eq!(beside(Path::new(".hidden"), 7), Path::new(".hidden.7"));
    }

    #[test]
    fn a_child_is_named_with_its_capture_or_why_it_has_none() {
        let dir =
            std::env::temp_dir().join(format!("refhunt-children-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Not a process that runs here: PIDs stop far below.
        let gone = 4_000_000_001u32;
        std::fs::write(
            dir.join(format!("{gone}.status")),
            "started\n[\"python\",\"w.py\"]",
        )
        .unwrap();
        std::fs::write(dir.join("4000000002.status"), "error: no agent").unwrap();
        std::fs::write(dir.join("4000000003.status"), "started\n[]").unwrap();
        std::fs::write(dir.join("4000000003.capture"), "{not json").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let found = collect(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let pids: Vec<u32> = found.iter().map(|f| f.pid).collect();
        assert_eq!(pids, [gone, 4_000_000_002, 4_000_000_003]);
        assert_eq!(found[0].argv, ["python", "w.py"]);
        assert!(found[0]
            .capture
            .as_ref()
            .unwrap_err()
            .contains("killed by a signal"));
        assert!(found[1]
            .capture
            .as_ref()
            .unwrap_err()
            .contains("could not be tracked: no agent"));
        assert!(found[2]
            .capture
            .as_ref()
            .unwrap_err()
            .starts_with("its capture is unreadable"));
    }
}
