//! The JSON routes over runs: `GET /api/v1/runs` (filters, limit, opaque cursor) and `GET
//! /api/v1/runs/{id}`. Every parameter is checked and a bad one is a 400 naming it; lists are
//! filtered on the scan's summaries and only the page's runs are read whole. Reads only.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use base64::Engine as _;
use serde_json::{Value, json};
use stella_engine::Code;
use stella_engine::runs::Summary;

use super::errors::{ApiError, blocking};
use super::shape::{self, Files};
use super::shared::Shared;
use super::source::{At, run_id};

/// At most this many runs a page (`limit`), and the default.
pub const MAX_LIMIT: usize = 500;
pub const DEFAULT_LIMIT: usize = 50;

/// The states a `state` filter may name (the workspace's form offers the same).
pub const STATES: &[&str] = &[
    "requested",
    "planned",
    "waiting",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "invalid",
];

/// What `GET /api/v1/runs` was asked for.
#[derive(Debug, Default)]
struct Filter {
    states: Vec<String>,
    pack: Option<String>,
    code: Option<Code>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    limit: usize,
    /// Runs after this id (the list is ordered by id, descending).
    after: Option<String>,
}

impl Filter {
    fn parse(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        let time = |k: &str, v: &str| {
            humantime::parse_rfc3339_weak(v)
                .map_err(|_| ApiError::bad(format!("`{k}` must be an RFC 3339 time (2026-12-02T10:00:00Z)")))
        };
        for (k, v) in q {
            match k.as_str() {
                "state" => {
                    for s in v.split(',') {
                        if !STATES.contains(&s) {
                            return Err(ApiError::bad(format!("`state` must be one of {}", STATES.join(", "))));
                        }
                        f.states.push(s.to_string());
                    }
                }
                "pack" => f.pack = Some(v.trim_start_matches("packs/").to_string()),
                "code" => {
                    f.code = Some(
                        v.parse()
                            .map_err(|_| ApiError::bad("`code` must be an ERR_… code of DESIGN's table"))?,
                    )
                }
                "since" => f.since = Some(time(k, v)?),
                "until" => f.until = Some(time(k, v)?),
                "limit" => {
                    f.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| ApiError::bad(format!("`limit` must be a number from 1 to {MAX_LIMIT}")))?
                }
                "cursor" => f.after = Some(decode_cursor(v)?),
                other => {
                    return Err(ApiError::bad(format!(
                        "unknown parameter `{}`; the list takes state, pack, since, until, code, limit, cursor",
                        other.escape_default().take(60).collect::<String>()
                    )));
                }
            }
        }
        Ok(f)
    }

    /// Whether a run's summary passes the filters (all but the cursor).
    fn keeps(&self, s: &Summary) -> bool {
        let f = &s.facts;
        let state = if s.invalid.is_some() {
            "invalid"
        } else if f.events == 0 {
            "requested"
        } else {
            f.status.as_str()
        };
        let started = f.started.as_deref().and_then(|t| humantime::parse_rfc3339(t).ok());
        let code = s
            .invalid
            .as_ref()
            .map(|i| i.code.as_str().to_string())
            .or(f.code.clone());
        (self.states.is_empty() || self.states.iter().any(|x| x == state))
            && self
                .pack
                .as_ref()
                .is_none_or(|p| f.pack.as_deref().is_some_and(|q| q.trim_start_matches("packs/") == p))
            && self.code.is_none_or(|c| code.as_deref() == Some(c.as_str()))
            && self.since.is_none_or(|t| started.is_some_and(|s| s >= t))
            && self.until.is_none_or(|t| started.is_some_and(|s| s < t))
    }
}

/// A cursor names the last run of the page before: opaque to clients (base64url of
/// `v1:<id>`), checked like any run id.
fn encode_cursor(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

fn decode_cursor(c: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad("`cursor` is not a cursor this server gave (use `next` of a page)");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix("v1:").ok_or_else(bad)?;
    run_id(id).map_err(|_| bad())?;
    Ok(id.to_string())
}

/// `GET /api/v1/runs`: `{runs: [headline], next}`, newest id first.
pub async fn list(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let filter = Filter::parse(&q)?;
    let source = s.source.clone();
    let body = blocking(move || {
        let at = source.at()?;
        let mut kept: Vec<Summary> = source.summaries(&at)?.into_iter().filter(|r| filter.keeps(r)).collect();
        kept.sort_by(|a, b| b.id.cmp(&a.id));
        let start = filter
            .after
            .as_ref()
            .map_or(0, |after| kept.partition_point(|r| r.id.as_str() >= after.as_str()));
        let page: Vec<&Summary> = kept.iter().skip(start).take(filter.limit).collect();
        let more = kept.len() > start + page.len();
        let runs: Vec<Value> = page.iter().map(|r| row(&at, &r.id)).collect::<Result<_, _>>()?;
        let next = more.then(|| page.last().map(|r| encode_cursor(&r.id))).flatten();
        Ok(json!({ "runs": runs, "next": next }))
    })
    .await?;
    Ok(Json(body))
}

/// One run's headline, read whole but for its log lines.
fn row(at: &At, id: &str) -> Result<Value, ApiError> {
    let view = at.listed(id)?;
    let st = view.state();
    Ok(shape::headline(&view, &st, &Files::read(at, id)?))
}

/// `GET /api/v1/runs/{id}`: the headline plus steps, gates, artifacts and evidence.
pub async fn show(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?.to_string();
    let source = s.source.clone();
    let body = blocking(move || {
        let at = source.at()?;
        let view = at.run(&id, false)?;
        let st = view.state();
        let files = Files::read(&at, &id)?;
        Ok(shape::detail(&view, &st, &files, evidence(&at, &id)))
    })
    .await?;
    Ok(Json(body))
}

/// `{present, verified}`: whether the run's attestation is on the branch, and whether the
/// archive `stella runs export` would write verifies (`stella evidence verify`'s checks,
/// against the archive's own signers); `verified` is null without evidence.
fn evidence(at: &At, id: &str) -> Value {
    let Some(tip) = at.tip else {
        return json!({ "present": false, "verified": null });
    };
    match stella_engine::evidence::export_run(&at.ledger, tip, id) {
        Ok(exported) => {
            let bytes = exported.bytes;
            let verified = stella_engine::evidence::verify_archive(&bytes, None).is_ok_and(|c| c.iter().all(|c| c.ok));
            json!({ "present": true, "verified": verified, "sha256": stella_engine::pack::sha256_hex(&bytes) })
        }
        Err(stella_engine::evidence::Error::NoEvidence(_) | stella_engine::evidence::Error::RunNotFound(_)) => {
            json!({ "present": false, "verified": null })
        }
        Err(_) => json!({ "present": true, "verified": false }),
    }
}
