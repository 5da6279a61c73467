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
    /// A file given on the command line could not be read.
    Io,
    /// The command line itself is wrong.
    Usage,
}

impl Code {
    /// The code as printed in messages, events and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PackInvalid => "ERR_PACK_INVALID",
            Code::PackInputInvalid => "ERR_PACK_INPUT_INVALID",
            Code::PackNetworkBlocked => "ERR_PACK_NETWORK_BLOCKED",
            Code::PackHashMismatch => "ERR_PACK_HASH_MISMATCH",
            Code::PackSecretMissing => "ERR_PACK_SECRET_MISSING",
            Code::Io => "ERR_IO",
            Code::Usage => "ERR_USAGE",
        }
    }

    /// The process exit code for a command that stops with this error
    /// (DESIGN section 10: 1 the operation ran and failed, 2 bad input or usage).
    pub fn exit_code(self) -> i32 {
        match self {
            Code::PackHashMismatch => 1,
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
