//! Everything that can stop refhunt itself, each said in one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no command given: put the Python command after `--`, e.g. `refhunt run -- python app.py`"
    )]
    NoCommand,
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("{0} is not a Python interpreter or a Python script; refhunt runs Python programs")]
    NotPython(String),
    #[error(
        "{interpreter} cannot import refhunt ({detail}); install refhunt into that Python \
         (`{interpreter} -m pip install PATH/TO/refhunt`, the source tree) or run the refhunt of \
         its environment"
    )]
    NoAgent { interpreter: String, detail: String },
    #[error("Python {0} is not supported (3.9 and newer are)")]
    NotSupported(String),
    #[error("script not found: {0}")]
    ScriptNotFound(PathBuf),
    #[error(
        "python -{0} turns off the site hooks that refhunt starts through, so nothing would be \
         tracked; run the command without -{0}"
    )]
    NoSiteHooks(char),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a suppression file: {detail}")]
    BadSuppressions { path: PathBuf, detail: String },
    #[error("{path} is not a refhunt capture: {detail}")]
    BadCapture { path: PathBuf, detail: String },
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "{0} ran but never started Python with refhunt's bootstrap, so there is nothing to report"
    )]
    NeverStarted(String),
    #[error("the agent could not start in the target: {0}")]
    AgentFailed(String),
    #[error("--repeat needs a window to repeat: `refhunt run --repeat 4 -- python -m refhunt.call module:function args...`")]
    NoWindow,
    #[error("{0}")]
    BadArgument(String),
    #[error("{0}")]
    Watch(String),
    #[error("output closed")]
    BrokenPipe,
}
