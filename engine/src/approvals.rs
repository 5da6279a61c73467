//! Signed approvals (DESIGN section 7): `.stella/approvers.yaml` grants, approval files and
//! their sshsig signatures (namespace `stella-approval`), and the pure evaluation of one gate:
//! which files count, which do not and why, and what the gate decides. No I/O, no git.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::allowed_signers::{AllowedSigners, VerifyError};
use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::plan::PlanApproval;
use crate::yaml::decode::{Decoder, Obj, Unknown};
use crate::yaml::{self, Value};

pub const NAMESPACE: &str = "stella-approval";
pub const APPROVERS_PATH: &str = ".stella/approvers.yaml";
/// Largest approval file read (`<principal>.yaml`); a real one is a few hundred bytes.
pub const MAX_APPROVAL_BYTES: u64 = 64 * 1024;
/// Largest signature file read (`<principal>.yaml.sig`); a real sshsig armour is under 1 KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 16 * 1024;
/// Largest trust file read (`.stella/allowed_signers`, `.stella/approvers.yaml`).
pub const MAX_TRUST_FILE_BYTES: u64 = 1024 * 1024;

/// Grants: which principals hold which grant (`grants: { Packs.Approve: [alice, bob] }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvers {
    grants: BTreeMap<String, BTreeSet<String>>,
}

impl Approvers {
    pub fn parse(file: &str, text: &str) -> Result<Approvers, Diagnostics> {
        let root = yaml::parse(file, text, yaml::Limits::default()).map_err(|mut d| {
            d.code = Code::ApproversInvalid;
            Diagnostics::from(d)
        })?;
        let bad = |pos: Pos, field: &str, msg: &str| {
            Diagnostics::from(Diagnostic::new(Code::ApproversInvalid, file, pos, field, msg))
        };
        let mut out = Approvers::default();
        if matches!(root.value, Value::Null) {
            return Ok(out);
        }
        let grants = root.get("grants").ok_or_else(|| {
            bad(
                root.pos,
                "grants",
                "expected `grants:` mapping grant names to lists of principals",
            )
        })?;
        if matches!(grants.value, Value::Null) {
            return Ok(out);
        }
        for (grant, principals) in grants
            .as_map()
            .ok_or_else(|| bad(grants.pos, "grants", "expected a mapping of grant -> [principals]"))?
        {
            let field = format!("grants.{}", grant.name);
            let set = out.grants.entry(grant.name.clone()).or_default();
            match &principals.value {
                Value::Null => {}
                Value::Seq(items) => {
                    for p in items {
                        let name = p
                            .as_str()
                            .ok_or_else(|| bad(p.pos, &field, "expected a principal name"))?;
                        set.insert(name.to_string());
                    }
                }
                _ => return Err(bad(principals.pos, &field, "expected a list of principals")),
            }
        }
        Ok(out)
    }

    /// Whether `principal` holds any of `grants`.
    pub fn holds_any(&self, principal: &str, grants: &[String]) -> bool {
        grants
            .iter()
            .any(|g| self.grants.get(g).is_some_and(|s| s.contains(principal)))
    }

    /// Every grant named in the file.
    pub fn grant_names(&self) -> Vec<String> {
        self.grants.keys().cloned().collect()
    }

    /// Principals holding any of `grants` (for messages: who may approve).
    pub fn holders(&self, grants: &[String]) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for g in grants {
            out.extend(self.grants.get(g).into_iter().flatten().cloned());
        }
        out.into_iter().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

/// The fields of an approval file.
const APPROVAL_FIELDS: &[&str] = &["apiVersion", "kind", "run", "gate", "planHash", "decision", "comment"];

/// An approval file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub run: String,
    pub gate: String,
    pub plan_hash: String,
    pub decision: Decision,
    pub comment: Option<String>,
}

impl Approval {
    pub fn parse(text: &str) -> Result<Approval, String> {
        let root = yaml::parse(
            "approval",
            text,
            yaml::Limits {
                max_bytes: 64 * 1024,
                ..Default::default()
            },
        )
        .map_err(|d| d.message)?;
        let field = |k: &str| root.get(k).and_then(|n| n.as_str()).map(str::to_string);
        let need = |k: &str| field(k).ok_or_else(|| format!("missing `{k}`"));
        if field("apiVersion").as_deref() != Some("stella/v1") || field("kind").as_deref() != Some("Approval") {
            return Err("expected apiVersion: stella/v1 and kind: Approval".into());
        }
        // The first unknown field is the reason given; the reason carries no hint.
        let mut d = Decoder::new("approval", Code::ApprovalMalformed);
        d.unknown_fields(&Obj::new(&root, ""), APPROVAL_FIELDS, Unknown::Suggest);
        if let Some(unknown) = d.diags.0.into_iter().next() {
            return Err(unknown.message);
        }
        let decision = match need("decision")?.as_str() {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            other => return Err(format!("decision `{other}` is neither approve nor reject")),
        };
        Ok(Approval {
            run: need("run")?,
            gate: need("gate")?,
            plan_hash: need("planHash")?,
            decision,
            comment: field("comment"),
        })
    }

    /// The file as `stella approve` writes it (what is signed, byte for byte).
    pub fn render(&self) -> String {
        let decision = match self.decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        };
        let q = |s: &str| yaml::json_text(&s);
        let mut out = format!(
            "apiVersion: stella/v1\nkind: Approval\nrun: {}\ngate: {}\nplanHash: {}\ndecision: {decision}\n",
            q(&self.run),
            q(&self.gate),
            q(&self.plan_hash)
        );
        if let Some(c) = &self.comment {
            out.push_str(&format!("comment: {}\n", q(c)));
        }
        out
    }
}

/// One approval file as found under `approvals/<run>/<gate>/`.
#[derive(Debug, Clone)]
pub struct ApprovalFile {
    /// The file name without `.yaml`: whose approval it claims to be.
    pub principal: String,
    pub path: String,
    pub yaml: Vec<u8>,
    pub sig: Option<Vec<u8>>,
    /// The size of an approval file too large to be read (`yaml` is then empty).
    pub yaml_too_large: Option<u64>,
    /// The size of a signature file too large to be read (`sig` is then empty).
    pub sig_too_large: Option<u64>,
}

impl ApprovalFile {
    /// An approval file and its signature as read, each within its limit.
    pub fn new(principal: &str, path: &str, yaml: Vec<u8>, sig: Option<Vec<u8>>) -> ApprovalFile {
        ApprovalFile {
            principal: principal.to_string(),
            path: path.to_string(),
            yaml,
            sig,
            yaml_too_large: None,
            sig_too_large: None,
        }
    }
}

/// What became of one approval file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub path: String,
    pub principal: String,
    /// `counted`, `rejected` (a valid reject), or `ignored`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// sha256 of the signature file, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_sha256: Option<String>,
    /// sha256 of the approval and its signature together: the same file seen again has the same key.
    pub key: String,
}

/// What a gate decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved { by: Vec<Verdict> },
    Waiting { counted: usize },
    Rejected { by: String, comment: Option<String> },
    Expired,
}

/// Everything needed to judge one gate.
pub struct GateInput<'a> {
    pub run: &'a str,
    pub gate: &'a str,
    pub plan_hash: &'a str,
    pub rule: &'a PlanApproval,
    pub signers: &'a AllowedSigners,
    pub approvers: &'a Approvers,
    pub files: &'a [ApprovalFile],
    /// The run's requester (`requestedBy`), whose approvals do not count unless the rule
    /// allows self-approval.
    pub requested_by: Option<&'a str>,
    /// When the run first waited at this gate (expiry counts from there).
    pub waiting_since: Option<SystemTime>,
    pub now: SystemTime,
}

/// Judges every approval file of a gate, then the gate.
pub fn evaluate(input: &GateInput) -> (Outcome, Vec<Verdict>) {
    let mut verdicts = Vec::new();
    let mut counted_principals = BTreeSet::new();
    let mut counted_keys: BTreeMap<String, String> = BTreeMap::new();
    let mut reject: Option<(String, Option<String>)> = None;
    let mut files: Vec<&ApprovalFile> = input.files.iter().collect();
    files.sort_by(|a, b| a.principal.cmp(&b.principal));
    for f in files {
        let sig_sha = f.sig.as_ref().map(|s| crate::pack::sha256_hex(s));
        let mut both = f.yaml.clone();
        both.extend_from_slice(f.sig.as_deref().unwrap_or_default());
        // Files too large to read differ by their sizes at least.
        if f.yaml_too_large.is_some() || f.sig_too_large.is_some() {
            both.extend_from_slice(format!("\0{:?}\0{:?}", f.yaml_too_large, f.sig_too_large).as_bytes());
        }
        let key = crate::pack::sha256_hex(&both);
        let mut v = Verdict {
            path: f.path.clone(),
            principal: f.principal.clone(),
            verdict: "ignored".into(),
            code: None,
            reason: None,
            signature_sha256: sig_sha,
            key,
        };
        match judge(input, f, &mut counted_keys) {
            Ok(approval) => {
                if approval.decision == Decision::Reject {
                    v.verdict = "rejected".into();
                    reject.get_or_insert((f.principal.clone(), approval.comment.clone()));
                } else if counted_principals.insert(f.principal.clone()) {
                    v.verdict = "counted".into();
                } else {
                    v.code = Some(Code::ApprovalDuplicate.as_str().into());
                    v.reason = Some(format!("{} already counted", f.principal));
                }
            }
            Err((code, reason)) => {
                v.code = Some(code.as_str().into());
                v.reason = Some(reason);
            }
        }
        verdicts.push(v);
    }
    let counted: Vec<Verdict> = verdicts.iter().filter(|v| v.verdict == "counted").cloned().collect();
    // Fail closed: past the deadline the gate has expired, even if approvals arrived late.
    let outcome = if let Some((by, comment)) = reject {
        Outcome::Rejected { by, comment }
    } else if expired(input) {
        Outcome::Expired
    } else if counted.len() >= input.rule.required_count as usize {
        Outcome::Approved { by: counted }
    } else {
        Outcome::Waiting { counted: counted.len() }
    };
    (outcome, verdicts)
}

/// The moment the gate expires, if it has a TTL and has been reached.
pub fn deadline(rule: &PlanApproval, waiting_since: Option<SystemTime>) -> Option<SystemTime> {
    Some(waiting_since? + Duration::from_millis(rule.expires_after_ms?))
}

fn expired(input: &GateInput) -> bool {
    deadline(input.rule, input.waiting_since).is_some_and(|d| input.now >= d)
}

/// Whether one file counts; the error says why not.
fn judge(
    input: &GateInput,
    f: &ApprovalFile,
    counted_keys: &mut BTreeMap<String, String>,
) -> Result<Approval, (Code, String)> {
    let yaml_size = f.yaml_too_large.unwrap_or(f.yaml.len() as u64);
    if yaml_size > MAX_APPROVAL_BYTES {
        return Err((
            Code::ApprovalMalformed,
            format!("the approval file is {yaml_size} bytes; at most {MAX_APPROVAL_BYTES} are read"),
        ));
    }
    let sig_size = f.sig_too_large.or(f.sig.as_ref().map(|s| s.len() as u64)).unwrap_or(0);
    if sig_size > MAX_SIGNATURE_BYTES {
        return Err((
            Code::ApprovalSignatureInvalid,
            format!(
                "{}.sig is {sig_size} bytes; at most {MAX_SIGNATURE_BYTES} are read (an ssh signature is under 1 KiB)",
                f.path
            ),
        ));
    }
    let sig = f.sig.as_ref().ok_or((
        Code::ApprovalSignatureInvalid,
        format!("no signature ({}.sig is missing)", f.path),
    ))?;
    let sig = std::str::from_utf8(sig)
        .map_err(|_| (Code::ApprovalSignatureInvalid, "the signature is not text".to_string()))?;
    let entry = input
        .signers
        .verify(&f.principal, NAMESPACE, &f.yaml, sig, input.now)
        .map_err(|e| match e {
            VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => (Code::ApprovalExpired, e.to_string()),
            other => (Code::ApprovalSignatureInvalid, other.to_string()),
        })?;
    let text = std::str::from_utf8(&f.yaml).map_err(|_| (Code::ApprovalMalformed, "not UTF-8".to_string()))?;
    let a = Approval::parse(text).map_err(|e| (Code::ApprovalMalformed, e))?;
    if a.run != input.run || a.gate != input.gate {
        return Err((
            Code::ApprovalPlanMismatch,
            format!(
                "it approves run {} gate {}, not run {} gate {}",
                a.run, a.gate, input.run, input.gate
            ),
        ));
    }
    if a.plan_hash != input.plan_hash {
        return Err((
            Code::ApprovalPlanMismatch,
            format!(
                "it approves plan {}, but the run's plan is {}",
                a.plan_hash, input.plan_hash
            ),
        ));
    }
    if !input.approvers.holds_any(&f.principal, &input.rule.grants) {
        return Err((
            Code::ApprovalUnauthorized,
            format!(
                "{} holds none of the grants {}",
                f.principal,
                input.rule.grants.join(", ")
            ),
        ));
    }
    // Separation of duties: the requester, under its own name or with a key it signs
    // commits with, does not approve its own run (rejecting it stays possible).
    if let Some(requester) = input.requested_by
        && a.decision == Decision::Approve
        && !input.rule.allow_self_approval
        && (f.principal == requester
            || input
                .signers
                .find_principals(&entry.key, "git", input.now)
                .iter()
                .any(|p| p == requester))
    {
        return Err((
            Code::ApprovalSelf,
            format!(
                "{} requested this run and may not approve it (separation of duties; the rule does not say allowSelfApproval: true)",
                f.principal
            ),
        ));
    }
    // One person, one vote: a key listed under several principals counts once.
    let fp = crate::keys::fingerprint_of(&entry.key);
    if let Some(first) = counted_keys.get(&fp) {
        return Err((
            Code::ApprovalDuplicate,
            format!("the same key already approved as {first}"),
        ));
    }
    counted_keys.insert(fp, f.principal.clone());
    Ok(a)
}
