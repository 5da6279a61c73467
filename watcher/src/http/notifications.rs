//! `GET /api/v1/notifications`: the notify targets of the config at the branch tip and what
//! this clone's outbox holds for each (waiting, delivered, retried, failed, the last error and
//! when). Reads the outbox's files and the config; never a URL or a secret value (a target shows
//! only whether its URL is in the config or in a runner secret, and that secret's name).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use stella_engine::config::{CONFIG_PATH, Config};
use stella_engine::notify::Endpoint;
use stella_engine::notify::outbox::Outbox;

use super::errors::{ApiError, blocking};
use super::shared::Shared;

pub async fn state(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let source = s.source.clone();
    blocking(move || {
        let at = source.at()?;
        let config = at
            .read(CONFIG_PATH)?
            .and_then(|b| Config::parse(CONFIG_PATH, &String::from_utf8_lossy(&b)).ok())
            .unwrap_or_default();
        let outbox = Outbox::at(&source.git_dir);
        let mut ids: Vec<String> = config.notify.iter().map(|t| t.id.clone()).collect();
        for known in outbox.known_targets() {
            if !ids.contains(&known) {
                ids.push(known);
            }
        }
        let failed = outbox.failed();
        let targets: Vec<Value> = ids
            .iter()
            .map(|id| {
                let target = config.notify.iter().find(|t| &t.id == id);
                let stats = outbox.stats(id);
                json!({
                    "id": id,
                    "configured": target.is_some(),
                    "format": target.map(|t| match t.format {
                        stella_engine::notify::Format::CloudEvents => "cloudevents",
                        stella_engine::notify::Format::Slack => "slack",
                    }),
                    "events": target.map(|t| t.events.clone()),
                    "endpoint": target.map(|t| match &t.endpoint {
                        Endpoint::Url(_) => json!({ "kind": "url" }),
                        Endpoint::UrlSecret(name) => json!({ "kind": "urlSecret", "secret": name }),
                    }),
                    "pending": outbox.pending(id).len(),
                    "delivered": stats.delivered,
                    "retried": stats.retried,
                    "failed": stats.failed,
                    "failedUnrecorded": failed.iter().filter(|e| &e.target == id).count(),
                    "lastError": stats.last_error,
                    "lastErrorAt": stats.last_error_at,
                    "lastDeliveredAt": stats.last_delivered_at,
                })
            })
            .collect();
        Ok(Json(json!({ "targets": targets })))
    })
    .await
}
