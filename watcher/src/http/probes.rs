//! `GET /healthz`, `/readyz` and `/metrics`: the telemetry's answers (`crate::telemetry`),
//! served. Beside a daemon its scans keep them current; under `stella serve`, which executes
//! nothing and has no daemon, `/readyz` and `/metrics` first read the branch (the scan's
//! counts, through the runs index when there is one), and its counters stay at zero.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::shared::Shared;
use crate::telemetry::{Health, metrics};

/// 200 `{"status":"ok"}` while the process lives (no token needed).
pub async fn healthz() -> Response {
    answer(Health::healthz())
}

/// 503 until the first scan, then 200 with the counts and ages.
pub async fn readyz(State(s): State<Shared>) -> Response {
    if let Err(e) = rescan(&s).await {
        return e.into_response();
    }
    answer(s.telemetry.health.readyz())
}

/// The Prometheus text exposition.
pub async fn metrics(State(s): State<Shared>) -> Response {
    if let Err(e) = rescan(&s).await {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.telemetry.metrics.encode(),
    )
        .into_response()
}

/// Under `serve`: the gauges and readiness from the branch as it is now.
async fn rescan(s: &Shared) -> Result<(), ApiError> {
    if !s.rescan {
        return Ok(());
    }
    let source = s.source.clone();
    let summaries = tokio::task::spawn_blocking(move || {
        let at = source.at()?;
        source.summaries(&at)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the scan stopped: {e}")))??;
    s.telemetry.scanned(&summaries);
    Ok(())
}

fn answer((status, body): (u16, serde_json::Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}
