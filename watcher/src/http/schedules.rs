//! `GET /api/v1/schedules`: the schedules committed on the branch, each with its next slots and
//! its last run, and the problems of malformed ones (`runs::timetable`, as `stella schedules
//! list --json` prints it). Reads only.

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use stella_engine::runs::timetable;

use super::errors::{ApiError, blocking};
use super::shared::Shared;
use crate::failure::Failure;

/// How many next slots each schedule shows.
pub const NEXT: usize = 5;

pub async fn list(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let source = s.source.clone();
    let body = blocking(move || table(&source)).await?;
    Ok(Json(body))
}

/// The timetable as JSON, at the branch tip now.
pub fn table(source: &super::source::Source) -> Result<Value, ApiError> {
    let at = source.at()?;
    let schedules = match at.tip {
        Some(tip) => at.ledger.schedules_at(tip).map_err(Failure::from)?,
        None => Default::default(),
    };
    let runs = source.summaries(&at)?;
    let t = timetable::timetable(&schedules, &runs, jiff::Timestamp::now(), NEXT);
    Ok(serde_json::to_value(t).expect("JSON"))
}
