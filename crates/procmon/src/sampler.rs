//! Reads one process's memory from `/proc`, cheaply enough to do it thousands of times a second.
//!
//! The files stay open between samples and are re-read from offset 0: that saves two system
//! calls per file, and an open `/proc/PID` file keeps referring to the process it was opened
//! for, so a recycled PID reads as "exited" instead of as somebody else's memory.

use crate::proc_text;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// One reading. Sizes are bytes. Faults, swap, USS and PSS are there in a full reading (swap,
/// USS and PSS when readable).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the watch started.
    pub t: f64,
    pub rss: u64,
    pub vms: u64,
    pub shared: u64,
    pub text: u64,
    pub data: u64,
    pub swap: Option<u64>,
    pub minor_faults: Option<u64>,
    pub major_faults: Option<u64>,
    pub uss: Option<u64>,
    pub pss: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error("permission denied: cannot read the memory of PID {0} (it belongs to another user; run as that user or as root)")]
    PermissionDenied(u32),
    #[error("cannot read /proc/{pid}: {source}")]
    Io { pid: u32, source: io::Error },
}

/// The open `/proc` files of one process.
struct ProcFiles {
    stat: File,
    statm: File,
    status: File,
    rollup: Option<File>,
}

impl ProcFiles {
    fn open(pid: u32) -> Result<ProcFiles, OpenError> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let open = |name: &str| File::open(dir.join(name));
        let classify = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => OpenError::NoSuchProcess(pid),
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied(pid),
            _ => OpenError::Io { pid, source },
        };
        let stat = open("stat").map_err(classify)?;
        let statm = open("statm").map_err(classify)?;
        let status = open("status").map_err(classify)?;
        // The kernel guards smaps_rollup like ptrace: being able to open it is what "may read
        // this process's memory" means. Kernels before 4.14 lack the file; that only costs
        // USS and PSS.
        let rollup = match open("smaps_rollup") {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.exists() => None,
            Err(e) => return Err(classify(e)),
        };
        Ok(ProcFiles {
            stat,
            statm,
            status,
            rollup,
        })
    }
}

/// Reads a whole `/proc` file from offset 0 into `buf`. `None` once the process is gone.
fn read_into(file: &File, buf: &mut Vec<u8>) -> Option<()> {
    const CHUNK: usize = 4096;
    buf.clear();
    loop {
        let filled = buf.len();
        buf.resize(filled + CHUNK, 0);
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(n) => {
                buf.truncate(filled + n);
                // These files are produced whole on each read: a short read is the end, and
                // saves the system call that would return 0.
                if n < CHUNK {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(filled),
            Err(_) => return None,
        }
    }
    (!buf.is_empty()).then_some(())
}

pub struct Sampler {
    pid: u32,
    page_size: u64,
    files: ProcFiles,
    comm: String,
    children: bool,
    buf: Vec<u8>,
}

impl Sampler {
    /// `children` adds every descendant's memory.
    pub fn open(pid: u32, children: bool) -> Result<Sampler, OpenError> {
        if pid == 0 {
            return Err(OpenError::NoSuchProcess(pid));
        }
        let files = ProcFiles::open(pid)?;
        let mut buf = Vec::new();
        let stat = read_into(&files.stat, &mut buf)
            .and_then(|()| proc_text::parse_stat(std::str::from_utf8(&buf).ok()?))
            .ok_or(OpenError::NoSuchProcess(pid))?;
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Ok(Sampler {
            pid,
            page_size,
            files,
            comm: stat.comm,
            children,
            buf,
        })
    }

    /// The process's command name, as `ps` shows it.
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Reads the process now. A basic reading is `statm` alone, about 3 µs; `full` adds faults
    /// from `stat`, and swap, USS and PSS from `smaps_rollup`, which walks the page tables in
    /// the kernel (about 1 ms for 50 MB). `None` when the process has exited: a zombie counts
    /// as exited, and a recycled PID too, since the open files still name the old process.
    pub fn read(&mut self, t: f64, full: bool) -> Option<Sample> {
        let (mut sample, comm) = read_process(&self.files, self.page_size, full, &mut self.buf)?;
        sample.t = t;
        // The name changes when the process execs, as a started command does at once.
        if let Some(comm) = comm.filter(|c| *c != self.comm) {
            self.comm = comm;
        }
        if self.children {
            for child in descendants(self.pid) {
                let Ok(files) = ProcFiles::open(child) else {
                    continue;
                };
                // A descendant may exit between listing and reading; it then adds nothing.
                if let Some((c, _)) = read_process(&files, self.page_size, full, &mut self.buf) {
                    sample.add(&c);
                }
            }
        }
        Some(sample)
    }
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.rss += other.rss;
        self.vms += other.vms;
        self.shared += other.shared;
        self.text += other.text;
        self.data += other.data;
        let sum = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        self.minor_faults = sum(self.minor_faults, other.minor_faults);
        self.major_faults = sum(self.major_faults, other.major_faults);
        self.swap = sum(self.swap, other.swap);
        self.uss = sum(self.uss, other.uss);
        self.pss = sum(self.pss, other.pss);
    }
}

/// One process's reading, and its name when `stat` was read.
fn read_process(
    files: &ProcFiles,
    page_size: u64,
    full: bool,
    buf: &mut Vec<u8>,
) -> Option<(Sample, Option<String>)> {
    let stat = if full {
        read_into(&files.stat, buf)?;
        let stat = proc_text::parse_stat(std::str::from_utf8(buf).ok()?)?;
        if stat.has_exited() {
            return None;
        }
        Some(stat)
    } else {
        None
    };
    read_into(&files.statm, buf)?;
    let statm = proc_text::parse_statm(std::str::from_utf8(buf).ok()?, page_size)?;
    // A zombie has no memory map left: every field reads 0.
    if statm.vms == 0 {
        return None;
    }
    let mut sample = Sample {
        rss: statm.rss,
        vms: statm.vms,
        shared: statm.shared,
        text: statm.text,
        data: statm.data,
        minor_faults: stat.as_ref().map(|s| s.minor_faults),
        major_faults: stat.as_ref().map(|s| s.major_faults),
        ..Sample::default()
    };
    if full {
        let rollup = files.rollup.as_ref().and_then(|file| {
            read_into(file, buf)?;
            proc_text::parse_smaps_rollup(std::str::from_utf8(buf).ok()?)
        });
        match rollup {
            Some(r) => {
                sample.swap = Some(r.swap);
                sample.uss = Some(r.uss);
                sample.pss = Some(r.pss);
            }
            None => {
                read_into(&files.status, buf)?;
                sample.swap = proc_text::parse_status_swap(std::str::from_utf8(buf).ok()?);
            }
        }
    }
    Some((sample, stat.map(|s| s.comm)))
}

/// Every live descendant of `pid`, children first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in proc_text::parse_children(&text) {
                if !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn reads_its_own_process() {
        let mut s = Sampler::open(std::process::id(), false).unwrap();
        let sample = s.read(1.5, true).unwrap();
        assert_eq!(sample.t, 1.5);
        assert!(sample.rss > 0 && sample.vms >= sample.rss);
        assert!(sample.minor_faults.unwrap() > 0);
        assert!(sample.uss.is_some() && sample.pss.is_some() && sample.swap.is_some());
        let basic = s.read(1.6, false).unwrap();
        assert_eq!((basic.uss, basic.pss, basic.swap), (None, None, None));
        assert_eq!(basic.minor_faults, None);
        assert!(basic.rss > 0);
    }

    #[test]
    fn unknown_pid_is_refused() {
        // PIDs never exceed 2^22 on Linux.
        let err = Sampler::open(4_194_305, false).err().unwrap();
        assert!(matches!(err, OpenError::NoSuchProcess(4_194_305)), "{err}");
        assert!(matches!(
            Sampler::open(0, false),
            Err(OpenError::NoSuchProcess(0))
        ));
    }

    #[test]
    fn exit_ends_the_readings_even_before_the_parent_reaps() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let mut s = Sampler::open(child.id(), false).unwrap();
        assert!(s.read(0.0, false).is_some());
        std::thread::sleep(std::time::Duration::from_millis(500));
        // Not reaped yet: the child is a zombie.
        assert!(s.read(0.5, false).is_none());
        assert!(s.read(0.5, true).is_none());
        child.wait().unwrap();
        assert!(s.read(0.6, false).is_none());
        assert!(s.read(0.6, true).is_none());
    }

    #[test]
    fn children_are_summed() {
        let mut parent = Command::new("sh")
            .args(["-c", "sleep 2 & sleep 2 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let alone = Sampler::open(parent.id(), false)
            .unwrap()
            .read(0.0, false)
            .unwrap();
        let family = Sampler::open(parent.id(), true)
            .unwrap()
            .read(0.0, false)
            .unwrap();
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert_eq!(descendants(parent.id()).len(), 0);
        assert!(family.rss > alone.rss, "{family:?} vs {alone:?}");
    }
}
