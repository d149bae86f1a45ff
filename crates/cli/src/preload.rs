//! The interpreter's debug information, read while the program runs: libpython's takes about
//! 10 ms to read, time that would otherwise pass between the program's end and its report.

use refhunt_symbolize::Loaders;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads, on a thread, the debug information of the interpreter that process `pid` becomes:
/// its executable and the libpython it maps. Gives up after a second, or when `pid` exits.
pub fn start(pid: u32) -> JoinHandle<Loaders> {
    std::thread::spawn(move || {
        let mut loaders = Loaders::default();
        let ours = std::env::current_exe().ok();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut exe: Option<PathBuf> = None;
        while Instant::now() < deadline {
            // Until the child has called exec, it runs refhunt itself.
            if exe.is_none() {
                let now = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                exe = now.filter(|e| Some(e) != ours.as_ref());
            }
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                break;
            };
            let libpython = maps
                .lines()
                .filter_map(|l| l.split_ascii_whitespace().nth(5))
                .find(|p| {
                    p.rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with("libpython"))
                });
            if let Some(lib) = libpython {
                loaders.load(lib);
                break;
            }
            // A statically linked interpreter maps no libpython: its executable is it.
            if exe.is_some() && maps.contains("[heap]") {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(exe) = exe.and_then(|e| e.to_str().map(str::to_string)) {
            loaders.load(&exe);
        }
        loaders
    })
}
