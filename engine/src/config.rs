//! Repository policy, `.stella/config.yaml` (DESIGN section 2), read from the commit being
//! executed (never the working tree). Missing fields take their documented defaults.

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::decode::{Decoder, Obj, Unknown};
use crate::yaml::{self, Node, Value};

pub const CONFIG_PATH: &str = ".stella/config.yaml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The branch whose commits are executed.
    pub branch: String,
    pub sealed: bool,
    pub network_allow: Vec<String>,
    pub max_runs: usize,
    /// 0: the number of cores.
    pub max_steps: usize,
    pub artifact_bytes: u64,
    /// Output a step may store as `step.log` events (`limits.logBytes`); 0: no limit.
    pub log_bytes: u64,
    /// Output all steps of a run may store together (`limits.runLogBytes`); 0: no limit.
    pub run_log_bytes: u64,
    pub batch_ms: u64,
    /// Where the runner commits; `None`: the watched branch.
    pub ledger_branch: Option<String>,
    /// Pull-request ref patterns a daemon with `--remote` fetches and plans (one `*` each).
    pub pull_patterns: Vec<String>,
    /// How steps are kept away from the runner (DESIGN section 9).
    pub sandbox: SandboxPolicy,
    /// Where run events are sent (DESIGN section 12; `crate::notify`).
    pub notify: Vec<crate::notify::Target>,
    /// `requests: { signed: true }`: the commit that added a request must be signed by a key
    /// the trust commit's allowed_signers trusts for namespace `git`.
    pub requests_signed: bool,
    /// `secrets: { sources: [...] }`: where secrets come from after `--secrets` and the
    /// environment, in order (`crate::secrets::sources`).
    pub secret_sources: Vec<crate::secrets::Source>,
}

/// `sandbox:` in the config: how far a step is kept from the runner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SandboxPolicy {
    /// Every step runs in user, mount and PID namespaces of its own, or not at all.
    #[default]
    Required,
    /// No isolation: recorded in every run's events and attestation.
    Off,
    /// As `Required`, plus a Landlock allowlist: the workspace, the temporary directory, the
    /// read-only system and these paths.
    Strict { read: Vec<String>, write: Vec<String> },
}

impl SandboxPolicy {
    /// The name written to events, evidence and `doctor`.
    pub fn mode(&self) -> &'static str {
        match self {
            SandboxPolicy::Required => "required",
            SandboxPolicy::Off => "off",
            SandboxPolicy::Strict { .. } => "strict",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            branch: "main".into(),
            sealed: false,
            network_allow: Vec::new(),
            max_runs: 4,
            max_steps: 0,
            artifact_bytes: 10 << 20,
            log_bytes: crate::event::output::STEP_LOG_BYTES,
            run_log_bytes: crate::event::output::RUN_LOG_BYTES,
            batch_ms: 2000,
            ledger_branch: None,
            pull_patterns: vec!["refs/pull/*/head".into(), "refs/merge-requests/*/head".into()],
            sandbox: SandboxPolicy::Required,
            notify: Vec::new(),
            requests_signed: false,
            secret_sources: Vec::new(),
        }
    }
}

impl Config {
    /// The branch runner commits go to.
    pub fn ledger_branch(&self) -> &str {
        self.ledger_branch.as_deref().unwrap_or(&self.branch)
    }

    /// The output limits steps run under.
    pub fn log_limits(&self) -> crate::event::output::LogLimits {
        crate::event::output::LogLimits {
            step_bytes: self.log_bytes,
            run_bytes: self.run_log_bytes,
        }
    }

    /// The plan-shaping part of the policy.
    pub fn plan_config(&self) -> crate::plan::PlanConfig {
        crate::plan::PlanConfig {
            sealed: self.sealed,
            allow: self.network_allow.clone(),
        }
    }

    /// Parses the config text; every problem is reported with its line.
    pub fn parse(file: &str, text: &str) -> Result<Config, Diagnostics> {
        let root = yaml::parse(file, text, yaml::Limits::default()).map_err(Diagnostics::from)?;
        let mut c = Config::default();
        let mut d = Decoder::new(file, Code::ConfigInvalid).terse();
        if matches!(root.value, Value::Null) {
            return Ok(c);
        }
        let Some(entries) = root.as_map() else {
            d.error(root.pos, "", "config must be a mapping");
            return Err(d.diags);
        };
        const TOP: &[&str] = &[
            "branch",
            "sealed",
            "network",
            "limits",
            "commit",
            "ledger",
            "pullRequests",
            "sandbox",
            "notify",
            "requests",
            "secrets",
        ];
        let top = Obj::new(&root, "");
        for (k, v) in entries {
            match k.name.as_str() {
                "branch" => match v.as_str() {
                    Some(s) if valid_branch(s) => c.branch = s.into(),
                    _ => _ = d.error(v.pos, "branch", "expected a branch name"),
                },
                "sealed" => c.sealed = d.boolean(&top, "sealed", c.sealed),
                "network" => match v.get("allow").map(|a| &a.value) {
                    Some(Value::Seq(items)) => {
                        for i in items {
                            match i.as_str() {
                                Some(h) => c.network_allow.push(h.into()),
                                None => _ = d.error(i.pos, "network.allow", "expected a host name"),
                            }
                        }
                    }
                    None if v.as_map().is_some() => {}
                    _ => _ = d.error(v.pos, "network", "expected { allow: [hosts] }"),
                },
                "limits" => {
                    for (lk, lv) in v.as_map().unwrap_or_default() {
                        let field = format!("limits.{}", lk.name);
                        let n = match lv.value {
                            Value::Int(i) if i >= 0 => i as u64,
                            _ => {
                                d.type_error(lv, &field, "a whole number");
                                continue;
                            }
                        };
                        match lk.name.as_str() {
                            "maxRuns" => c.max_runs = (n as usize).max(1),
                            "maxSteps" => c.max_steps = n as usize,
                            "artifactBytes" => c.artifact_bytes = n,
                            "logBytes" => c.log_bytes = n,
                            "runLogBytes" => c.run_log_bytes = n,
                            other => _ = d.error(lv.pos, &field, format!("unknown limit `{other}`")),
                        }
                    }
                }
                "commit" => match v.get("batchMs").map(|b| &b.value) {
                    Some(Value::Int(ms)) if *ms >= 0 => c.batch_ms = *ms as u64,
                    _ => _ = d.error(v.pos, "commit.batchMs", "expected { batchMs: <milliseconds> }"),
                },
                "pullRequests" => match &v.value {
                    Value::Seq(items) => {
                        c.pull_patterns.clear();
                        for i in items {
                            match i.as_str() {
                                Some(p) if valid_pull_pattern(p) => c.pull_patterns.push(p.into()),
                                _ => _ = d.error(
                                    i.pos,
                                    "pullRequests",
                                    "expected a ref pattern such as refs/pull/*/head (under refs/, one `*`, no spaces, `:`, `+` or `..`)",
                                ),
                            }
                        }
                    }
                    _ => d.type_error(v, "pullRequests", "a list of ref patterns"),
                },
                "sandbox" => match sandbox(file, v) {
                    Ok(p) => c.sandbox = p,
                    Err(found) => found.0.into_iter().for_each(|f| d.diags.push(f)),
                },
                "secrets" => match crate::secrets::sources::parse(file, v) {
                    Ok(s) => c.secret_sources = s,
                    Err(found) => found.0.into_iter().for_each(|f| d.diags.push(f)),
                },
                "notify" => match crate::notify::parse(file, v) {
                    Ok(t) => c.notify = t,
                    Err(found) => found.0.into_iter().for_each(|f| d.diags.push(f)),
                },
                "ledger" => match v.get("branch").and_then(Node::as_str) {
                    Some(b) if valid_branch(b) => c.ledger_branch = Some(b.into()),
                    _ => _ = d.error(v.pos, "ledger.branch", "expected a branch name"),
                },
                "requests" => {
                    if let Some(o) = d.obj(v, "requests", &["signed"]) {
                        c.requests_signed = d.boolean(&o, "signed", false);
                    }
                }
                _ => d.unknown_field(k, "", TOP, Unknown::Suggest),
            }
        }
        d.diags.into_result(c)
    }
}

/// `sandbox: required | off | {mode: strict, read: [PATHS], write: [PATHS]}`. A mode that does
/// not fit the lists is the one problem reported.
fn sandbox(file: &str, v: &Node) -> Result<SandboxPolicy, Diagnostics> {
    let mut d = Decoder::new(file, Code::ConfigInvalid).terse();
    let bad = |n: &Node, field: &str, msg: &str| {
        Diagnostics::from(Diagnostic::new(Code::ConfigInvalid, file, n.pos, field, msg))
    };
    const EXPECTED: &str = "expected required, off, or { mode: strict, read: [paths], write: [paths] }";
    let simple = |mode: &str, n: &Node| match mode {
        "required" => Ok(SandboxPolicy::Required),
        "off" => Ok(SandboxPolicy::Off),
        _ => Err(bad(n, "sandbox", EXPECTED)),
    };
    if let Some(mode) = v.as_str() {
        return simple(mode, v);
    }
    let Some(entries) = v.as_map() else {
        return Err(bad(v, "sandbox", EXPECTED));
    };
    let mut mode = None;
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for (k, val) in entries {
        match k.name.as_str() {
            "mode" => mode = Some((val.as_str().unwrap_or("").to_string(), val)),
            list @ ("read" | "write") => {
                let field = format!("sandbox.{list}");
                let Value::Seq(items) = &val.value else {
                    d.type_error(val, &field, "a list of absolute paths");
                    continue;
                };
                for i in items {
                    match i.as_str() {
                        Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                            if list == "read" {
                                read.push(p.to_string())
                            } else {
                                write.push(p.to_string())
                            }
                        }
                        _ => _ = d.error(i.pos, &field, "expected an absolute path without `..`"),
                    }
                }
            }
            _ => d.unknown_field(k, "sandbox", &["mode", "read", "write"], Unknown::ListInMessage),
        }
    }
    let policy = match mode {
        Some((m, _)) if m == "strict" => SandboxPolicy::Strict { read, write },
        Some((m, n)) if read.is_empty() && write.is_empty() => {
            simple(&m, n).map_err(|_| bad(n, "sandbox.mode", "expected required, off or strict"))?
        }
        Some((_, n)) => return Err(bad(n, "sandbox.mode", "read and write lists need mode: strict")),
        None => return Err(bad(v, "sandbox.mode", "missing field `mode` (required, off or strict)")),
    };
    if d.diags.is_empty() { Ok(policy) } else { Err(d.diags) }
}

/// A pull-request ref pattern: under `refs/`, exactly one `*`, and nothing a refspec would
/// read as more than a pattern.
fn valid_pull_pattern(p: &str) -> bool {
    p.starts_with("refs/")
        && p.matches('*').count() == 1
        && !p.contains("..")
        && !p.contains("//")
        && !p.ends_with('/')
        && p.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ':' | '+' | '^' | '~' | '?' | '[' | '\\'))
}

fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line, field and code of the first error `Config::parse` gives for `text`.
    fn first_error(text: &str) -> (u64, String, Code) {
        let d = Config::parse("config.yaml", text).unwrap_err();
        let d = d.iter().next().unwrap();
        (d.line, d.field.clone(), d.code)
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            "config.yaml",
            "branch: main\nsealed: true\nnetwork: { allow: [registry.local] }\nlimits: { maxRuns: 2, maxSteps: 0, artifactBytes: 1024 }\ncommit: { batchMs: 500 }\nledger: { branch: stella/ledger }\n",
        )
        .unwrap();
        assert_eq!((c.max_runs, c.batch_ms, c.ledger_branch()), (2, 500, "stella/ledger"));
        assert!(c.sealed);
    }

    #[test]
    fn pull_request_patterns_are_checked() {
        let c = Config::parse("config.yaml", "pullRequests: [refs/pull/*/head, refs/heads/review/*]\n").unwrap();
        assert_eq!(c.pull_patterns, ["refs/pull/*/head", "refs/heads/review/*"]);
        for bad in [
            "pull/*/head",
            "refs/pull/head",
            "refs/*/*",
            "+refs/pull/*/head",
            "refs/a/*:refs/b/*",
            "refs/../*",
        ] {
            let d = Config::parse("config.yaml", &format!("pullRequests:\n  - \"{bad}\"\n")).unwrap_err();
            let d = d.iter().next().unwrap();
            assert_eq!(
                (d.line, d.field.as_str(), d.code),
                (2, "pullRequests", Code::ConfigInvalid),
                "{bad}"
            );
        }
        assert_eq!(Config::default().pull_patterns.len(), 2);
    }

    #[test]
    fn sandbox_modes() {
        assert_eq!(Config::default().sandbox, SandboxPolicy::Required);
        assert_eq!(
            Config::parse("c", "sandbox: off\n").unwrap().sandbox,
            SandboxPolicy::Off
        );
        let strict = Config::parse(
            "c",
            "sandbox: { mode: strict, read: [/opt/tools], write: [/var/cache/x] }\n",
        )
        .unwrap();
        assert_eq!(
            strict.sandbox,
            SandboxPolicy::Strict {
                read: vec!["/opt/tools".into()],
                write: vec!["/var/cache/x".into()]
            }
        );
        for (bad, field) in [
            ("sandbox: maybe\n", "sandbox"),
            ("sandbox: { mode: strict, read: [relative/path] }\n", "sandbox.read"),
            ("sandbox: { mode: required, write: [/x] }\n", "sandbox.mode"),
            ("sandbox: { read: [/x] }\n", "sandbox.mode"),
            ("sandbox: { mode: strict, extra: 1 }\n", "sandbox.extra"),
        ] {
            assert_eq!(first_error(bad), (1, field.to_string(), Code::ConfigInvalid), "{bad}");
        }
    }

    #[test]
    fn signed_requests() {
        assert!(!Config::default().requests_signed);
        assert!(
            Config::parse("c", "requests: { signed: true }\n")
                .unwrap()
                .requests_signed
        );
        for (bad, field) in [
            ("requests: { signed: yes please }\n", "requests.signed"),
            ("requests: { sigend: true }\n", "requests.sigend"),
            ("requests: true\n", "requests"),
        ] {
            assert_eq!(first_error(bad), (1, field.to_string(), Code::ConfigInvalid), "{bad}");
        }
    }

    #[test]
    fn mistakes_are_located() {
        let d = Config::parse("config.yaml", "branch: main\nlimit: { maxRuns: 2 }\n").unwrap_err();
        let d = d.iter().next().unwrap();
        assert_eq!((d.line, d.code), (2, Code::ConfigInvalid));
        assert_eq!(d.hint.as_deref(), Some("did you mean `limits`?"));
    }
}
