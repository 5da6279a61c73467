//! `stella doctor`'s `check.secrets.sources`: each secret source the config at HEAD lists
//! answers and decrypts (a SOPS file committed at HEAD opened with the runner's identities and
//! its MAC checked; a Vault secret read with its token). Says the names a source holds, never
//! a value.

use std::path::Path;

use stella_engine::config::Config;
use stella_engine::keys::SshKey;
use stella_engine::secrets::sops::Identities;
use stella_engine::secrets::sources::{self, Context, Source};

use super::{Level, Report};

const ID: &str = "check.secrets.sources";
/// The most secret names one line shows.
const SHOWN: usize = 20;

pub(super) fn check(r: &mut Report, root: &Path, config: &Config, key: Option<&SshKey>) {
    if config.secret_sources.is_empty() {
        r.say(
            ID,
            Level::Ok,
            "no secret sources configured (secrets come from --secrets and STELLA_SECRET_<NAME>)",
        );
        return;
    }
    let needs_ids = config.secret_sources.iter().any(|s| matches!(s, Source::Sops { .. }));
    let ids = match key {
        Some(k) if needs_ids => match Identities::for_runner(k) {
            Ok(ids) => ids,
            Err(e) => {
                r.say(ID, Level::Fail, format!("secret sources: {e}"));
                return;
            }
        },
        _ => Identities::default(),
    };
    let read_file = |path: &str| -> Result<Vec<u8>, String> {
        stella_engine::git_cli::run(root, &["show", &format!("HEAD:{path}")])
            .map(String::into_bytes)
            .map_err(|_| format!("{path} is not committed at HEAD"))
    };
    let cx = Context {
        read_file: &read_file,
        identities: &ids,
        timeout: stella_engine::runs::secret_sources::VAULT_TIMEOUT,
    };
    for source in &config.secret_sources {
        match sources::read(source, &cx) {
            Ok(values) => {
                let n = values.len();
                let plural = if n == 1 { "" } else { "s" };
                let mut names: Vec<&str> = values.keys().map(String::as_str).take(SHOWN).collect();
                if n > SHOWN {
                    names.push("…");
                }
                let what = match source {
                    Source::Sops { .. } => "decrypts, MAC verified",
                    Source::Vault(_) => "answers",
                };
                r.say(
                    ID,
                    Level::Ok,
                    format!(
                        "secret source {}: {what}; {} secret{plural} ({})",
                        source.describe(),
                        n,
                        names.join(", ")
                    ),
                );
            }
            Err(e) => r.say(ID, Level::Fail, format!("{e} [ERR_SECRET_SOURCE]")),
        }
    }
}
