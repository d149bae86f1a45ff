//! Which Python a command will run, checked before anything runs: a command that is not
//! Python or a missing script each get one clear line. Whether that Python has refhunt is
//! found when it starts, by the bootstrap, which saves starting it twice.

use crate::error::Error;
use object::{Object, ObjectSymbol};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The interpreter that `command` runs, once it is known to be Python.
pub fn resolve(command: &[OsString]) -> Result<PathBuf, Error> {
    let program = command.first().ok_or(Error::NoCommand)?;
    let path = which(program).ok_or_else(|| Error::CommandNotFound(display(program)))?;
    let interpreter = if looks_like_python_name(&path) || is_python_elf(&path) {
        check_script(&command[1..])?;
        path
    } else if let Some(interpreter) = shebang_interpreter(&path) {
        if !(looks_like_python_name(&interpreter) || is_python_elf(&interpreter)) {
            return Err(Error::NotPython(display(program)));
        }
        interpreter
    } else {
        return Err(Error::NotPython(display(program)));
    };
    Ok(interpreter)
}

fn display(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// `PATH` lookup, as the shell does it; a name with a slash is taken as a path.
fn which(program: &OsStr) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(p))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `python`, `python3`, `python3.11`, `python3.11d`: names a wrapper (a pyenv shim) may carry.
fn looks_like_python_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("python").is_some_and(|rest| {
        rest.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c.is_ascii_lowercase())
    })
}

/// An ELF executable that embeds CPython: it defines or imports `Py_BytesMain`.
fn is_python_elf(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return false;
    };
    file.dynamic_symbols()
        .any(|s| matches!(s.name(), Ok("Py_BytesMain" | "Py_Main")))
}

/// The interpreter named by a `#!` line, following `/usr/bin/env NAME`.
fn shebang_interpreter(path: &Path) -> Option<PathBuf> {
    let head = std::fs::read(path).ok()?;
    let line = head.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if Path::new(first).file_name()? == "env" {
        which(OsStr::new(words.find(|w| !w.starts_with('-'))?))
    } else {
        Some(PathBuf::from(first))
    }
}

/// Fails early when `python [options] script.py` names a script that does not exist, or
/// turns off the site hooks that refhunt's bootstrap needs (`-I`, `-E`, `-S`), which would
/// leave the program untracked.
fn check_script(args: &[OsString]) -> Result<(), Error> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-" => return Ok(()),
            "--check-hash-based-pycs" => {
                args.next();
            }
            t if t.starts_with("--") => {}
            t if t.starts_with('-') => {
                // Short options combine (`-IS`); -c, -m, -W and -X take the rest, or the
                // next argument.
                for (i, flag) in t.char_indices().skip(1) {
                    match flag {
                        'I' | 'E' | 'S' => return Err(Error::NoSiteHooks(flag)),
                        'c' | 'm' => return Ok(()),
                        'W' | 'X' => {
                            if i + 1 == t.len() {
                                args.next();
                            }
                            break;
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                let script = PathBuf::from(arg);
                return if script.exists() {
                    Ok(())
                } else {
                    Err(Error::ScriptNotFound(script))
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_names() {
        for name in [
            "python",
            "python3",
            "python3.11",
            "python3.11d",
            "/usr/bin/python3.13t",
        ] {
            assert!(looks_like_python_name(Path::new(name)), "{name}");
        }
        for name in ["ls", "pythonista-helper", "ipython", "py"] {
            assert!(!looks_like_python_name(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn script_check_skips_options_and_stops_at_c_or_m() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(check_script(&args(&["-c", "missing.py"])).is_ok());
        assert!(check_script(&args(&["-X", "dev", "-m", "pytest"])).is_ok());
        assert!(matches!(
            check_script(&args(&["-u", "-X", "dev", "no/such/script.py"])),
            Err(Error::ScriptNotFound(_))
        ));
        assert!(check_script(&args(&["Cargo.toml"])).is_ok());
        assert!(check_script(&args(&["-Xdev", "-Wignore", "-cprint()"])).is_ok());
        for refused in [
            &["-I", "-c", "pass"][..],
            &["-uS", "x.py"],
            &["-W", "ignore", "-E"],
        ] {
            assert!(
                matches!(check_script(&args(refused)), Err(Error::NoSiteHooks(_))),
                "{refused:?}"
            );
        }
        assert!(
            check_script(&args(&["-c", "pass", "-I"])).is_ok(),
            "the program's own"
        );
    }
}
