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
    /// `.stella/config.yaml` is malformed.
    ConfigInvalid,
    /// A run request (`runs/<id>/request.yaml`) is malformed.
    RequestInvalid,
    /// A request repeats the runToken of an earlier run; it is not executed.
    RunDuplicate,
    /// The ledger's history was rewritten, or a runner file changed outside a signed runner commit.
    LedgerTampered,
    /// `.stella/approvers.yaml` is malformed.
    ApproversInvalid,
    /// An approval's signature is missing, malformed, or not by a key allowed for its principal.
    ApprovalSignatureInvalid,
    /// The approval's principal holds none of the grants the gate asks for.
    ApprovalUnauthorized,
    /// The approval is bound to another run, gate or plan hash.
    ApprovalPlanMismatch,
    /// The approving key is expired (or not yet valid) in allowed_signers.
    ApprovalExpired,
    /// The approval file is not a valid approval.
    ApprovalMalformed,
    /// The approval comes from a principal or key that already counted.
    ApprovalDuplicate,
    /// A valid reject: the run fails.
    PackApprovalRejected,
    /// The gate's expiresAfter passed without enough approvals: the run fails.
    PackApprovalTimeout,
    /// An evidence archive or attestation does not verify.
    EvidenceInvalid,
    /// A git bundle is truncated, corrupted, not for this repository, or not a fast-forward.
    BundleInvalid,
    /// A file given on the command line could not be read.
    Io,
    /// The command line itself is wrong.
    Usage,
    /// An SSH key file is unreadable as an OpenSSH private key, encrypted, or not Ed25519.
    KeyInvalid,
    /// A key was to be written where a file already exists; keys are never overwritten.
    KeyExists,
    /// An allowed_signers file has malformed lines.
    SignersInvalid,
    /// An SSH signature is malformed, for another namespace, unsupported, or does not verify.
    SignatureInvalid,
    /// The signing key is not listed in allowed_signers for the claimed principal.
    SignerUnknown,
    /// The signer's allowed_signers line does not allow the signature's namespace.
    SignerNamespace,
    /// The signer's key is outside its valid-after/valid-before window (expired or not yet valid).
    SignerExpired,
    /// The local branch has commits the remote lacks that are not this runner's: never merged.
    BranchDiverged,
    /// A step could not be isolated from the runner (a kernel feature the sandbox needs is missing).
    SandboxUnavailable,
    /// A ledger commit would hold a private key (the runner's, or any PEM/OpenSSH key block).
    LedgerSecret,
}

impl Code {
    /// Every code, for parsing codes back out of events.
    pub const ALL: [Code; 44] = [
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
        Code::ConfigInvalid,
        Code::RequestInvalid,
        Code::RunDuplicate,
        Code::LedgerTampered,
        Code::ApproversInvalid,
        Code::ApprovalSignatureInvalid,
        Code::ApprovalUnauthorized,
        Code::ApprovalPlanMismatch,
        Code::ApprovalExpired,
        Code::ApprovalMalformed,
        Code::ApprovalDuplicate,
        Code::PackApprovalRejected,
        Code::PackApprovalTimeout,
        Code::EvidenceInvalid,
        Code::BundleInvalid,
        Code::Io,
        Code::Usage,
        Code::KeyInvalid,
        Code::KeyExists,
        Code::SignersInvalid,
        Code::SignatureInvalid,
        Code::SignerUnknown,
        Code::SignerNamespace,
        Code::SignerExpired,
        Code::BranchDiverged,
        Code::SandboxUnavailable,
        Code::LedgerSecret,
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
            Code::ConfigInvalid => "ERR_CONFIG_INVALID",
            Code::RequestInvalid => "ERR_REQUEST_INVALID",
            Code::RunDuplicate => "ERR_RUN_DUPLICATE",
            Code::LedgerTampered => "ERR_LEDGER_TAMPERED",
            Code::ApproversInvalid => "ERR_APPROVERS_INVALID",
            Code::ApprovalSignatureInvalid => "ERR_APPROVAL_SIGNATURE_INVALID",
            Code::ApprovalUnauthorized => "ERR_APPROVAL_UNAUTHORIZED",
            Code::ApprovalPlanMismatch => "ERR_APPROVAL_PLAN_MISMATCH",
            Code::ApprovalExpired => "ERR_APPROVAL_EXPIRED",
            Code::ApprovalMalformed => "ERR_APPROVAL_MALFORMED",
            Code::ApprovalDuplicate => "ERR_APPROVAL_DUPLICATE",
            Code::PackApprovalRejected => "ERR_PACK_APPROVAL_REJECTED",
            Code::PackApprovalTimeout => "ERR_PACK_APPROVAL_TIMEOUT",
            Code::EvidenceInvalid => "ERR_EVIDENCE_INVALID",
            Code::BundleInvalid => "ERR_BUNDLE_INVALID",
            Code::Io => "ERR_IO",
            Code::Usage => "ERR_USAGE",
            Code::KeyInvalid => "ERR_KEY_INVALID",
            Code::KeyExists => "ERR_KEY_EXISTS",
            Code::SignersInvalid => "ERR_SIGNERS_INVALID",
            Code::SignatureInvalid => "ERR_SIGNATURE_INVALID",
            Code::SignerUnknown => "ERR_SIGNER_UNKNOWN",
            Code::SignerNamespace => "ERR_SIGNER_NAMESPACE",
            Code::SignerExpired => "ERR_SIGNER_EXPIRED",
            Code::BranchDiverged => "ERR_BRANCH_DIVERGED",
            Code::SandboxUnavailable => "ERR_SANDBOX_UNAVAILABLE",
            Code::LedgerSecret => "ERR_LEDGER_SECRET",
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
            | Code::EventsWrite
            | Code::SignatureInvalid
            | Code::SignerUnknown
            | Code::SignerNamespace
            | Code::SignerExpired
            | Code::RunDuplicate
            | Code::LedgerTampered
            | Code::ApprovalSignatureInvalid
            | Code::ApprovalUnauthorized
            | Code::ApprovalPlanMismatch
            | Code::ApprovalExpired
            | Code::ApprovalMalformed
            | Code::ApprovalDuplicate
            | Code::PackApprovalRejected
            | Code::PackApprovalTimeout
            | Code::EvidenceInvalid
            | Code::BranchDiverged
            | Code::SandboxUnavailable
            | Code::LedgerSecret => 1,
            Code::PackInvalid
            | Code::PackInputInvalid
            | Code::PackNetworkBlocked
            | Code::PackSecretMissing
            | Code::ConfigInvalid
            | Code::BundleInvalid
            | Code::ApproversInvalid
            | Code::RequestInvalid
            | Code::Io
            | Code::Usage
            | Code::KeyInvalid
            | Code::KeyExists
            | Code::SignersInvalid => 2,
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
