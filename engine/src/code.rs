//! The one table of Stella's stable error codes and the exit code each maps to.
//! Every user-facing failure names exactly one `Code`; nothing else decides exit codes.

use std::fmt;

/// A stable, user-visible error code (`ERR_…`). The same code always means the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// A pack manifest (or a file it names) is malformed or inconsistent.
    PackInvalid,
    /// Inputs given to a pack do not satisfy its declared inputs or schema.
    PackInputInvalid,
    /// A step declares a network host that sealed mode does not allow.
    PackNetworkBlocked,
    /// The pack files no longer match the plan hash that was approved or pinned.
    PackHashMismatch,
    /// A required secret was not provided to the runner.
    PackSecretMissing,
    /// A step's process failed (non-zero exit, signal, or could not start).
    StepFailed,
    /// A step ran past its timeout and was terminated.
    StepTimeout,
    /// The run was cancelled (Ctrl-C, a cancel request).
    RunCancelled,
    /// A declared output path leaves the workspace (absolute, `..`, or a symlink out).
    ArtifactPath,
    /// A declared output is larger than the configured limit.
    ArtifactTooLarge,
    /// A declared output file was not left by the step.
    ArtifactMissing,
    /// A declared output holds a secret value; it is never stored.
    ArtifactSecret,
    /// A policy gate's expression was false (failAction halt).
    PolicyFailed,
    /// A run-time expression could not be evaluated.
    ExprFailed,
    /// `builtin:bundle.ingest`: the file's sha256 differs from the declared one.
    BundleChecksumMismatch,
    /// `builtin:bundle.ingest`: the file does not exist or cannot be read.
    BundleNotFound,
    /// Events could not be recorded; the run cannot be proven and is stopped.
    EventsWrite,
    /// A file given on the command line could not be read.
    Io,
    /// The command line itself is wrong.
    Usage,
}

impl Code {
    /// Every code, for parsing codes back out of events.
    pub const ALL: [Code; 19] = [
        Code::PackInvalid,
        Code::PackInputInvalid,
        Code::PackNetworkBlocked,
        Code::PackHashMismatch,
        Code::PackSecretMissing,
        Code::StepFailed,
        Code::StepTimeout,
        Code::RunCancelled,
        Code::ArtifactPath,
        Code::ArtifactTooLarge,
        Code::ArtifactMissing,
        Code::ArtifactSecret,
        Code::PolicyFailed,
        Code::ExprFailed,
        Code::BundleChecksumMismatch,
        Code::BundleNotFound,
        Code::EventsWrite,
        Code::Io,
        Code::Usage,
    ];

    /// The code as printed in messages, events and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PackInvalid => "ERR_PACK_INVALID",
            Code::PackInputInvalid => "ERR_PACK_INPUT_INVALID",
            Code::PackNetworkBlocked => "ERR_PACK_NETWORK_BLOCKED",
            Code::PackHashMismatch => "ERR_PACK_HASH_MISMATCH",
            Code::PackSecretMissing => "ERR_PACK_SECRET_MISSING",
            Code::StepFailed => "ERR_STEP_FAILED",
            Code::StepTimeout => "ERR_STEP_TIMEOUT",
            Code::RunCancelled => "ERR_RUN_CANCELLED",
            Code::ArtifactPath => "ERR_ARTIFACT_PATH",
            Code::ArtifactTooLarge => "ERR_ARTIFACT_TOO_LARGE",
            Code::ArtifactMissing => "ERR_ARTIFACT_MISSING",
            Code::ArtifactSecret => "ERR_ARTIFACT_SECRET",
            Code::PolicyFailed => "ERR_POLICY_FAILED",
            Code::ExprFailed => "ERR_EXPR_FAILED",
            Code::BundleChecksumMismatch => "ERR_BUNDLE_CHECKSUM_MISMATCH",
            Code::BundleNotFound => "ERR_BUNDLE_NOT_FOUND",
            Code::EventsWrite => "ERR_EVENTS_WRITE",
            Code::Io => "ERR_IO",
            Code::Usage => "ERR_USAGE",
        }
    }

    /// The process exit code for a command that stops with this error
    /// (DESIGN section 10: 1 the operation ran and failed, 2 bad input or usage).
    pub fn exit_code(self) -> i32 {
        match self {
            Code::PackHashMismatch
            | Code::StepFailed
            | Code::StepTimeout
            | Code::RunCancelled
            | Code::ArtifactPath
            | Code::ArtifactTooLarge
            | Code::ArtifactMissing
            | Code::ArtifactSecret
            | Code::PolicyFailed
            | Code::ExprFailed
            | Code::BundleChecksumMismatch
            | Code::BundleNotFound
            | Code::EventsWrite => 1,
            Code::PackInvalid
            | Code::PackInputInvalid
            | Code::PackNetworkBlocked
            | Code::PackSecretMissing
            | Code::Io
            | Code::Usage => 2,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
