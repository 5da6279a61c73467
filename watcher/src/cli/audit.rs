//! `stella runs export --since T --until T --ndjson [-o FILE]`: every event of every run in a
//! time window, from the ledger (`runs::audit`), to stdout or FILE; nothing else on stdout.

use std::io::Write;
use std::path::Path;

use stella_engine::Code;
use stella_engine::runs::audit::{self, Window};

use crate::failure::{Failure, Outcome};
use crate::repo;

pub fn export(
    repo_dir: &Path,
    since: Option<&str>,
    until: Option<&str>,
    out: Option<&Path>,
) -> Result<Outcome, Failure> {
    let bound = |flag: &str, t: Option<&str>| {
        let t = t.unwrap_or_default();
        audit::parse_time(t).ok_or_else(|| {
            Failure::one(
                Code::Usage,
                format!("--{flag} `{t}`: expected RFC 3339 (2026-12-01T10:00:00Z, 2026-12-01T12:00:00+02:00) or a date (2026-12-01)"),
            )
        })
    };
    let window = Window {
        since: bound("since", since)?,
        until: bound("until", until)?,
    };
    if window.until <= window.since {
        return Err(Failure::one(
            Code::Usage,
            "--until must be later than --since (the window is [since, until))",
        ));
    }
    let root = repo::find_root(repo_dir)?;
    let config = repo::config_at_head(&root)?;
    let ledger = repo::open_ledger(&root, &config)?;
    let mut index = repo::runs_index(&root, &ledger);
    let exported = match out {
        Some(path) => {
            super::init::write_replace(path, "")?;
            let file = std::fs::File::create(path).map_err(|e| Failure::io(path, e))?;
            let mut w = std::io::BufWriter::new(file);
            let done = audit::export(&ledger, &mut index, window, &mut w)?;
            w.into_inner()
                .map_err(|e| Failure::io(path, e.into_error()))?
                .sync_all()
                .map_err(|e| Failure::io(path, e))?;
            done
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let done = audit::export(&ledger, &mut index, window, &mut w)?;
            w.flush().map_err(|e| Failure::one(Code::Io, format!("stdout: {e}")))?;
            done
        }
    };
    for id in &exported.invalid {
        eprintln!(
            "warning: run {id} cannot be read as a run; its events are not in the export (see `stella runs show {id}`)"
        );
    }
    eprintln!(
        "exported {} events of {} runs ({} read) at {}, sha256 {}",
        exported.events,
        exported.runs,
        exported.read,
        exported.commit.as_deref().unwrap_or("no commit"),
        exported.sha256
    );
    Ok(Outcome::Done)
}
