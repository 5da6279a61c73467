//! How a command ended: `Outcome` when it ran to its end (done, failed with a code and
//! problems, waiting at a gate), `Failure` when it could not (located problems in user files,
//! or one error with its code). Each engine error type the commands meet becomes a `Failure`
//! through its own `code()` and message. Nothing here prints or exits: only `main` does.

use std::path::Path;

use stella_engine::{Code, Diagnostic, Diagnostics};

/// How a command that ran to its end came out.
#[derive(Debug)]
pub enum Outcome {
    /// It did what was asked.
    Done,
    /// It ran and its verdict is a failure (a verification found problems): its own report is
    /// printed, and `main` adds each problem as `error[code]: …` on stderr, then the summary.
    Failed {
        code: Code,
        problems: Vec<String>,
        /// A closing line after the problems (`3 problems in 12 commits`).
        summary: Option<String>,
    },
    /// Its report, already printed, marks a check that failed (`stella doctor`'s `FAIL` lines).
    ChecksFailed,
    /// The run waits at an approval gate.
    Waiting,
}

/// Why a command stopped: located problems in user files, or one error.
#[derive(Debug)]
pub enum Failure {
    Diags(Diagnostics),
    One { code: Code, message: String },
}

impl Failure {
    pub fn one(code: Code, message: impl Into<String>) -> Failure {
        Failure::One {
            code,
            message: message.into(),
        }
    }

    /// A file or directory that could not be read or written: `path: what went wrong`.
    pub fn io(path: &Path, e: impl std::fmt::Display) -> Failure {
        Failure::one(Code::Io, format!("{}: {e}", path.display()))
    }

    /// The code the failure stops with.
    pub fn code(&self) -> Code {
        match self {
            Failure::Diags(d) => d.code(),
            Failure::One { code, .. } => *code,
        }
    }

    /// The failure as `--json` output: `{"error": {"code", "message", "problems": [...]}}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Failure::Diags(d) => serde_json::json!({ "error": {
                "code": d.code().as_str(),
                "message": format!("{} problem{} found", d.len(), if d.len() == 1 { "" } else { "s" }),
                "problems": d,
            }}),
            Failure::One { code, message } => {
                serde_json::json!({ "error": { "code": code.as_str(), "message": message } })
            }
        }
    }

    /// The failure as one line, for reports that go on after it.
    pub fn describe(&self) -> String {
        match self {
            Failure::Diags(d) => d.to_string(),
            Failure::One { code, message } => format!("{message} [{code}]"),
        }
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::Diags(d)
    }
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Self {
        Failure::Diags(d.into())
    }
}

/// One `From` per engine error type: the error's own `code()` and message.
macro_rules! from_engine_errors {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Failure {
            fn from(e: $error) -> Self {
                Failure::one(e.code(), e.to_string())
            }
        })*
    };
}

from_engine_errors!(
    stella_engine::bundle::Error,
    stella_engine::evidence::Error,
    stella_engine::git_cli::Error,
    stella_engine::journal::Error,
    stella_engine::keys::Error,
    stella_engine::ledger::Error,
    stella_engine::ledger::checkpoint::Error,
    stella_engine::remote::Error,
    stella_engine::runs::Error,
    stella_engine::sync::Error,
);
