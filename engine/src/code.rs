//! The one table of Stella's stable error codes: each code's name, its `ERR_…` string, the
//! exit code it maps to, and its description, written once in `codes!` below; every list and
//! lookup is generated from it. Nothing else decides exit codes.

use std::fmt;

/// Writes the `Code` enum (each row's doc comment is its description), `Code::ALL`,
/// `Code::as_str`, `Code::exit_code` and `FromStr` from one table of
/// `Name = "ERR_…", exit N;` rows.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $text:literal, exit $exit:literal;)*) => {
        /// A stable, user-visible error code (`ERR_…`). The same code always means the same thing.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &[Code] = &[$(Code::$name,)*];

            /// The code as printed in messages, events and `--json` output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// The process exit code for a command that stops with this error
            /// (DESIGN section 10: 1 the operation ran and failed, 2 bad input or usage).
            pub fn exit_code(self) -> u8 {
                match self {
                    $(Code::$name => $exit,)*
                }
            }
        }

        impl std::str::FromStr for Code {
            type Err = UnknownCode;

            /// Reads a code back from its `ERR_…` string (as events and `--json` output hold it).
            fn from_str(s: &str) -> Result<Code, UnknownCode> {
                match s {
                    $($text => Ok(Code::$name),)*
                    _ => Err(UnknownCode(s.to_string())),
                }
            }
        }
    };
}

codes! {
    /// A pack manifest (or a file it names) is malformed or inconsistent.
    PackInvalid = "ERR_PACK_INVALID", exit 2;
    /// Inputs given to a pack do not satisfy its declared inputs or schema.
    PackInputInvalid = "ERR_PACK_INPUT_INVALID", exit 2;
    /// A step declares a network host that sealed mode does not allow.
    PackNetworkBlocked = "ERR_PACK_NETWORK_BLOCKED", exit 2;
    /// The pack files no longer match the plan hash that was approved or pinned.
    PackHashMismatch = "ERR_PACK_HASH_MISMATCH", exit 1;
    /// A required secret was not provided to the runner.
    PackSecretMissing = "ERR_PACK_SECRET_MISSING", exit 2;
    /// A configured secret source (a SOPS file, a Vault server) cannot be reached, read,
    /// decrypted or verified; the run fails before any step.
    SecretSource = "ERR_SECRET_SOURCE", exit 1;
    /// A step's process failed (non-zero exit, signal, or could not start).
    StepFailed = "ERR_STEP_FAILED", exit 1;
    /// A step ran past its timeout and was terminated.
    StepTimeout = "ERR_STEP_TIMEOUT", exit 1;
    /// The run was cancelled (Ctrl-C, a cancel request).
    RunCancelled = "ERR_RUN_CANCELLED", exit 1;
    /// A declared output path leaves the workspace (absolute, `..`, or a symlink out).
    ArtifactPath = "ERR_ARTIFACT_PATH", exit 1;
    /// A declared output is larger than the configured limit.
    ArtifactTooLarge = "ERR_ARTIFACT_TOO_LARGE", exit 1;
    /// A declared output file was not left by the step.
    ArtifactMissing = "ERR_ARTIFACT_MISSING", exit 1;
    /// A declared output holds a secret value; it is never stored.
    ArtifactSecret = "ERR_ARTIFACT_SECRET", exit 1;
    /// A policy gate's expression was false (failAction halt).
    PolicyFailed = "ERR_POLICY_FAILED", exit 1;
    /// A run-time expression could not be evaluated.
    ExprFailed = "ERR_EXPR_FAILED", exit 1;
    /// `builtin:bundle.ingest`: the file's sha256 differs from the declared one.
    BundleChecksumMismatch = "ERR_BUNDLE_CHECKSUM_MISMATCH", exit 1;
    /// `builtin:bundle.ingest`: the file does not exist or cannot be read.
    BundleNotFound = "ERR_BUNDLE_NOT_FOUND", exit 1;
    /// Events could not be recorded; the run cannot be proven and is stopped.
    EventsWrite = "ERR_EVENTS_WRITE", exit 1;
    /// `.stella/config.yaml` is malformed.
    ConfigInvalid = "ERR_CONFIG_INVALID", exit 2;
    /// A run request (`runs/<id>/request.yaml`) is malformed.
    RequestInvalid = "ERR_REQUEST_INVALID", exit 2;
    /// A request repeats the runToken of an earlier run; it is not executed.
    RunDuplicate = "ERR_RUN_DUPLICATE", exit 1;
    /// With `requests: { signed: true }`, the commit that added the request is unsigned or
    /// signed by a key the trust commit's allowed_signers does not trust for namespace `git`.
    RequestUnsigned = "ERR_REQUEST_UNSIGNED", exit 1;
    /// The ledger's history was rewritten, or a runner file changed outside a signed runner commit.
    LedgerTampered = "ERR_LEDGER_TAMPERED", exit 1;
    /// `.stella/approvers.yaml` is malformed.
    ApproversInvalid = "ERR_APPROVERS_INVALID", exit 2;
    /// An approval's signature is missing, malformed, or not by a key allowed for its principal.
    ApprovalSignatureInvalid = "ERR_APPROVAL_SIGNATURE_INVALID", exit 1;
    /// The approval's principal holds none of the grants the gate asks for.
    ApprovalUnauthorized = "ERR_APPROVAL_UNAUTHORIZED", exit 1;
    /// The approval is bound to another run, gate or plan hash.
    ApprovalPlanMismatch = "ERR_APPROVAL_PLAN_MISMATCH", exit 1;
    /// The approving key is expired (or not yet valid) in allowed_signers.
    ApprovalExpired = "ERR_APPROVAL_EXPIRED", exit 1;
    /// The approval file is not a valid approval.
    ApprovalMalformed = "ERR_APPROVAL_MALFORMED", exit 1;
    /// The approval comes from a principal or key that already counted.
    ApprovalDuplicate = "ERR_APPROVAL_DUPLICATE", exit 1;
    /// The approval comes from the run's requester, and the rule does not say `allowSelfApproval: true`.
    ApprovalSelf = "ERR_APPROVAL_SELF", exit 1;
    /// A valid reject: the run fails.
    PackApprovalRejected = "ERR_PACK_APPROVAL_REJECTED", exit 1;
    /// The gate's expiresAfter passed without enough approvals: the run fails.
    PackApprovalTimeout = "ERR_PACK_APPROVAL_TIMEOUT", exit 1;
    /// An evidence archive or attestation does not verify.
    EvidenceInvalid = "ERR_EVIDENCE_INVALID", exit 1;
    /// A git bundle is truncated, corrupted, not for this repository, or not a fast-forward.
    BundleInvalid = "ERR_BUNDLE_INVALID", exit 2;
    /// A file given on the command line could not be read.
    Io = "ERR_IO", exit 2;
    /// The command line itself is wrong.
    Usage = "ERR_USAGE", exit 2;
    /// No run of that id on the branch (HTTP 404).
    RunNotFound = "ERR_RUN_NOT_FOUND", exit 2;
    /// An SSH key file is unreadable as an OpenSSH private key, encrypted, or not Ed25519.
    KeyInvalid = "ERR_KEY_INVALID", exit 2;
    /// A key was to be written where a file already exists; keys are never overwritten.
    KeyExists = "ERR_KEY_EXISTS", exit 2;
    /// An allowed_signers file has malformed lines.
    SignersInvalid = "ERR_SIGNERS_INVALID", exit 2;
    /// An SSH signature is malformed, for another namespace, unsupported, or does not verify.
    SignatureInvalid = "ERR_SIGNATURE_INVALID", exit 1;
    /// The signing key is not listed in allowed_signers for the claimed principal.
    SignerUnknown = "ERR_SIGNER_UNKNOWN", exit 1;
    /// The signer's allowed_signers line does not allow the signature's namespace.
    SignerNamespace = "ERR_SIGNER_NAMESPACE", exit 1;
    /// The signer's key is outside its valid-after/valid-before window (expired or not yet valid).
    SignerExpired = "ERR_SIGNER_EXPIRED", exit 1;
    /// The local branch has commits the remote lacks that are not this runner's: never merged.
    BranchDiverged = "ERR_BRANCH_DIVERGED", exit 1;
    /// A step could not be isolated from the runner (a kernel feature the sandbox needs is missing).
    SandboxUnavailable = "ERR_SANDBOX_UNAVAILABLE", exit 1;
    /// A ledger commit would hold a private key (the runner's, or any PEM/OpenSSH key block).
    LedgerSecret = "ERR_LEDGER_SECRET", exit 1;
    /// `resumeOf` names a run that succeeded or has not finished: only a failed or cancelled
    /// run can be resumed.
    RunNotResumable = "ERR_RUN_NOT_RESUMABLE", exit 2;
    /// `.stella/schedules.yaml` is malformed (a bad schedule is skipped; the others run).
    ScheduleInvalid = "ERR_SCHEDULE_INVALID", exit 2;
    /// A notification was not delivered: the receiver refused it or could not be reached
    /// (`stella notify test`; `notify.failed` after the retry horizon).
    NotifyFailed = "ERR_NOTIFY_FAILED", exit 1;
    /// A pack bundle's signature or a file digest does not verify, its publisher is not trusted
    /// for `stella-pack`, or an imported pack changed since its import (`.provenance.json`).
    PackProvenance = "ERR_PACK_PROVENANCE", exit 2;
}

/// A string that is no `ERR_…` code of the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code `{0}`")]
pub struct UnknownCode(pub String);

/// Exit codes of commands that end without an error (DESIGN section 10); a command that stops
/// with an error exits with its code's `exit_code()`.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The command ran to its end and its verdict is a failure (a check or verification failed).
    pub const FAILED: u8 = 1;
    /// The run waits at an approval gate.
    pub const WAITING: u8 = 3;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_string() {
        for code in Code::ALL {
            assert_eq!(code.as_str().parse::<Code>(), Ok(*code));
            assert!(code.as_str().starts_with("ERR_"), "{code}");
            assert!(matches!(code.exit_code(), 1 | 2), "{code}");
        }
        assert_eq!(Code::ALL.len(), 52);
        assert_eq!("ERR_NOPE".parse::<Code>(), Err(UnknownCode("ERR_NOPE".into())));
        assert_eq!((Code::StepFailed.exit_code(), Code::Usage.exit_code()), (1, 2));
    }
}
