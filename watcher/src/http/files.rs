//! The routes that serve a run's bytes: `logs` (text/plain, the lines `stella runs logs`
//! prints, or one step's raw lines with `?step=`), `artifacts/{step}/{name}` (a declared
//! output as committed; the path parameters are only keys looked up among the artifacts the
//! run recorded, never joined into a path), and `export` (`evidence::export_run`, the bytes
//! `stella runs export` writes). Reads only.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stella_engine::Code;

use super::errors::{ApiError, blocking};
use super::shared::Shared;
use super::source::run_id;
use crate::display;

/// `GET /api/v1/runs/{id}/logs[?step=ID]`.
pub async fn logs(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?.to_string();
    if let Some(k) = q.keys().find(|k| *k != "step") {
        return Err(ApiError::bad(format!(
            "unknown parameter `{}`; logs take step",
            k.escape_default().take(60).collect::<String>()
        )));
    }
    let step = q.get("step").cloned();
    let source = s.source.clone();
    let text = blocking(move || {
        let at = source.at()?;
        let view = at.run(&id, true)?;
        let mut out = String::new();
        match &step {
            Some(step) => {
                if !view.events().iter().any(|e| e.step.as_deref() == Some(step.as_str())) {
                    return Err(ApiError::not_found(format!(
                        "run {id} has no step `{}`",
                        step.escape_default().take(120).collect::<String>()
                    )));
                }
                for e in view.events() {
                    if e.kind == "step.log" && e.step.as_deref() == Some(step.as_str()) {
                        out.push_str(e.msg.as_deref().unwrap_or(""));
                        out.push('\n');
                    }
                }
            }
            None => {
                for line in view.events().iter().filter_map(display::log_line) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `GET /api/v1/runs/{id}/artifacts/{step}/{name}`: the bytes, as committed.
pub async fn artifact(
    State(s): State<Shared>,
    Path((id, step, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?.to_string();
    let source = s.source.clone();
    let (bytes, sha256) = blocking(move || {
        let at = source.at()?;
        let view = at.run(&id, false)?;
        let st = view.state();
        let quoted = |s: &str| s.escape_default().take(120).collect::<String>();
        let recorded = st
            .step(&step)
            .and_then(|s| s.artifacts.iter().find(|a| a.name == name))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "run {id} has no artifact `{}` of step `{}`",
                    quoted(&name),
                    quoted(&step)
                ))
            })?;
        // The recorded path is the runner's; still, nothing but a plain relative path under
        // the run's artifacts/ is read.
        let plain = recorded.path.starts_with("artifacts/")
            && recorded.path.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        let dir = at.locate(&id)?.ok_or_else(|| ApiError::no_run(&id))?;
        let bytes = if plain {
            at.read(&dir.file(&recorded.path))?
        } else {
            None
        };
        let bytes = bytes.ok_or_else(|| {
            ApiError::not_found(format!(
                "artifact `{}` of step `{}` is not committed yet",
                quoted(&name),
                quoted(&step)
            ))
        })?;
        Ok((bytes, recorded.sha256.clone()))
    })
    .await?;
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&format!("sha256={sha256}")) {
        h.insert("x-stella-sha256", v);
    }
    Ok(r)
}

/// `GET /api/v1/runs/{id}/export`: the archive `stella runs export` writes, byte for byte.
pub async fn export(State(s): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = run_id(&id)?.to_string();
    let source = s.source.clone();
    let name = format!("attachment; filename=\"{id}.tar.gz\"");
    let bytes = blocking(move || {
        let at = source.at()?;
        let tip = at.tip.ok_or_else(|| ApiError::no_run(&id))?;
        stella_engine::evidence::export_run(&at.ledger, tip, &id)
            .map(|e| e.bytes)
            .map_err(|e| match e {
                stella_engine::evidence::Error::RunNotFound(_) => ApiError::no_run(&id),
                stella_engine::evidence::Error::NoEvidence(_) => {
                    ApiError::new(StatusCode::CONFLICT, Code::Usage, e.to_string())
                }
                other => ApiError::from(crate::failure::Failure::from(other)),
            })
    })
    .await?;
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
