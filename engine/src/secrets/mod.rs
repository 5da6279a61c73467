//! Secrets for a run: from a file outside the repository (`--secrets`), the runner's
//! environment (`STELLA_SECRET_<NAME>`), then the configured sources (`sources`: SOPS files,
//! Vault), checked against what the plan needs. Values never leave this module except as step
//! environment variables or secret files (`as: file`) and redaction patterns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub mod sops;
pub mod sources;
pub mod vault;

pub use sources::{Error, Source};

use crate::code::Code;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::plan::Plan;
use crate::yaml;

/// Secret values by declared name.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// Where each value came from (`file` or `env`), recorded in evidence; never the value.
    sources: BTreeMap<String, &'static str>,
    /// Values masked like secrets but never given to a step (the runner key's forms).
    masked: Vec<String>,
    /// Secrets the pack asks for `as: file`: never exported as variables.
    files: BTreeSet<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The environment variable a secret is exported as: `STELLA_SECRET_` + upper-cased name.
pub fn env_name(name: &str) -> String {
    format!("STELLA_SECRET_{}", name.to_ascii_uppercase())
}

/// The variable naming an `as: file` secret's file: `STELLA_SECRET_FILE_` + upper-cased name.
pub fn file_env_name(name: &str) -> String {
    format!("STELLA_SECRET_FILE_{}", name.to_ascii_uppercase())
}

impl Secrets {
    /// Reads a YAML file of `name: value`.
    pub fn from_file(path: &Path) -> Result<BTreeMap<String, String>, Diagnostics> {
        let shown = path.display().to_string();
        let fail =
            |pos: Pos, field: &str, msg: String| Diagnostic::new(Code::PackSecretMissing, &shown, pos, field, msg);
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(Pos::UNKNOWN, "", format!("cannot read secrets file: {e}")))?;
        let root = yaml::parse(&shown, &text, yaml::Limits::default()).map_err(|mut d| {
            d.code = Code::PackSecretMissing;
            // The YAML parser may quote source text; a secrets file's text must never be shown.
            d.message = "secrets file is not valid YAML".into();
            Diagnostics::from(d)
        })?;
        let mut out = BTreeMap::new();
        let entries = root
            .as_map()
            .ok_or_else(|| fail(root.pos, "", "secrets file must map names to values".into()))?;
        for (k, v) in entries {
            let value = match &v.value {
                yaml::Value::Str(s) => s.clone(),
                yaml::Value::Int(i) => i.to_string(),
                yaml::Value::Float(f) => f.to_string(),
                yaml::Value::Bool(b) => b.to_string(),
                _ => return Err(fail(v.pos, &k.name, format!("secret `{}` must be a string", k.name)).into()),
            };
            out.insert(k.name.clone(), value);
        }
        Ok(out)
    }

    /// Gathers the secrets `plan` declares: from `file_values` first, then from `env`
    /// (`STELLA_SECRET_<NAME>`). A missing required secret is ERR_PACK_SECRET_MISSING.
    pub fn for_plan(
        plan: &Plan,
        file_values: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, Diagnostics> {
        Secrets::gather(plan, file_values, env, &[])
    }

    /// As `for_plan`, then from `sourced`: what each configured source held (its kind and
    /// values), in the config's order. The first that has a secret wins.
    pub fn gather(
        plan: &Plan,
        file_values: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
        sourced: &[(&'static str, sources::Values)],
    ) -> Result<Secrets, Diagnostics> {
        let mut s = Secrets::default();
        let mut diags = Diagnostics::default();
        for decl in &plan.secrets {
            let found = file_values
                .get(&decl.name)
                .map(|v| (v.clone(), "file"))
                .or_else(|| env(&env_name(&decl.name)).map(|v| (v, "env")))
                .or_else(|| {
                    sourced
                        .iter()
                        .find_map(|(kind, values)| values.get(&decl.name).map(|v| (v.clone(), *kind)))
                });
            match found {
                Some((v, source)) => {
                    s.values.insert(decl.name.clone(), v);
                    s.sources.insert(decl.name.clone(), source);
                    if decl.as_file() {
                        s.files.insert(decl.name.clone());
                    }
                }
                None if decl.required => diags.push(
                    Diagnostic::new(
                        Code::PackSecretMissing,
                        "secrets",
                        Pos::UNKNOWN,
                        &decl.name,
                        format!("required secret `{}` was not provided", decl.name),
                    )
                    .hint(if sourced.is_empty() {
                        format!(
                            "put `{}: ...` in the --secrets file, or set {}",
                            decl.name,
                            env_name(&decl.name)
                        )
                    } else {
                        format!(
                            "put `{}: ...` in the --secrets file, set {}, or add it to a source of `secrets.sources`",
                            decl.name,
                            env_name(&decl.name)
                        )
                    }),
                ),
                None => {}
            }
        }
        diags.into_result(s)
    }

    /// Every value to mask: the secrets, then what `mask_also` added.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values
            .values()
            .map(String::as_str)
            .chain(self.masked.iter().map(String::as_str))
    }

    /// Masks `values` too, without exporting them to steps (the runner key: defence in depth).
    pub fn mask_also(&mut self, values: impl IntoIterator<Item = String>) {
        self.masked.extend(values);
    }

    /// `(STELLA_SECRET_<NAME>, value)` pairs for a step's environment (not `as: file` ones).
    pub fn env_pairs(&self) -> impl Iterator<Item = (String, &str)> {
        self.values
            .iter()
            .filter(|(k, _)| !self.files.contains(*k))
            .map(|(k, v)| (env_name(k), v.as_str()))
    }

    /// `(name, value)` of the secrets a step gets as files (`as: file`).
    pub fn file_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(|(k, _)| self.files.contains(*k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn source(&self, name: &str) -> Option<&'static str> {
        self.sources.get(name).copied()
    }
}
