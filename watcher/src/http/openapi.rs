//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every route, built from one
//! table here. `server`'s test holds this table and the routes served to each other, and the
//! integration tests ask the live server for every documented path.

use axum::Json;
use serde_json::{Value, json};

use super::api::{DEFAULT_LIMIT, MAX_LIMIT};

fn error_ref() -> Value {
    json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn id_param(name: &str, what: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } })
}

fn query(name: &str, what: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": what, "schema": schema })
}

fn run_param() -> Value {
    let mut p = id_param("id", "The run id, ^[a-z0-9][a-z0-9._-]{0,99}$ (else 400)");
    p["schema"]["pattern"] = json!("^[a-z0-9][a-z0-9._-]{0,99}$");
    p
}

fn stream_params() -> Vec<Value> {
    vec![
        query(
            "after",
            "Replay the events after this seq (the Last-Event-ID header wins over it)",
            json!({ "type": "integer", "minimum": 0 }),
        ),
        json!({ "name": "Last-Event-ID", "in": "header", "required": false, "description": "The seq of the last event received", "schema": { "type": "string" } }),
    ]
}

fn run_stream_params() -> Vec<Value> {
    let mut p = vec![run_param()];
    p.extend(stream_params());
    p
}

/// (path, operation) for every route, in `server::ROUTES`'s order.
pub fn operations() -> Vec<(&'static str, Value)> {
    let bad = || error_ref();
    let states = json!({ "type": "string", "description": "Comma-separated: requested, planned, waiting, running, succeeded, failed, cancelled, invalid" });
    vec![
        (
            "/api/v1/runs",
            json!({
                "summary": "Runs, newest id first, filtered and paged",
                "operationId": "listRuns",
                "parameters": [
                    query("state", "Only runs in these states", states),
                    query("pack", "Only runs of this pack (name or packs/<name>)", json!({ "type": "string" })),
                    query("since", "Only runs started at or after this RFC 3339 time", json!({ "type": "string", "format": "date-time" })),
                    query("until", "Only runs started before this RFC 3339 time", json!({ "type": "string", "format": "date-time" })),
                    query("code", "Only runs that ended with (or are invalid for) this ERR_ code", json!({ "type": "string", "pattern": "^ERR_[A-Z_]+$" })),
                    query("limit", "Runs per page", json!({ "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT })),
                    query("cursor", "The `next` of the page before (opaque)", json!({ "type": "string" })),
                ],
                "responses": {
                    "200": { "description": "A page of runs", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["runs", "next"],
                        "properties": {
                            "runs": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } },
                            "next": { "type": ["string", "null"], "description": "The cursor of the next page; null on the last" }
                        }
                    } } } },
                    "400": bad(),
                }
            }),
        ),
        (
            "/api/v1/runs/{id}",
            json!({
                "summary": "One run: its headline, steps, gates, artifacts and evidence",
                "operationId": "getRun",
                "parameters": [run_param()],
                "responses": {
                    "200": { "description": "The run", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RunDetail" } } } },
                    "400": bad(), "404": bad(),
                }
            }),
        ),
        (
            "/api/v1/runs/{id}/logs",
            json!({
                "summary": "The run's log as `stella runs logs` prints it, or one step's lines",
                "operationId": "getRunLogs",
                "parameters": [run_param(), query("step", "Only this step's lines, as the step printed them", json!({ "type": "string" }))],
                "responses": {
                    "200": { "description": "Text", "content": { "text/plain": { "schema": { "type": "string" } } } },
                    "400": bad(), "404": bad(),
                }
            }),
        ),
        (
            "/api/v1/runs/{id}/artifacts/{step}/{name}",
            json!({
                "summary": "An artifact's bytes, as committed (header x-stella-sha256)",
                "operationId": "getArtifact",
                "parameters": [run_param(), id_param("step", "The step that declared it"), id_param("name", "The output's name")],
                "responses": {
                    "200": { "description": "The bytes", "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } },
                    "400": bad(), "404": bad(),
                }
            }),
        ),
        (
            "/api/v1/runs/{id}/export",
            json!({
                "summary": "The evidence archive, byte-identical to `stella runs export`",
                "operationId": "exportRun",
                "parameters": [run_param()],
                "responses": {
                    "200": { "description": "A deterministic tar.gz", "content": { "application/gzip": { "schema": { "type": "string", "contentMediaType": "application/gzip" } } } },
                    "400": bad(), "404": bad(),
                    "409": { "description": "The run has no evidence yet (it is written when a run finishes)", "content": error_ref()["content"].clone() },
                }
            }),
        ),
        (
            "/api/v1/runs/{id}/events",
            json!({
                "summary": "The run's events: replay after Last-Event-ID or `after`, then live; ends after the final event",
                "operationId": "streamRunEvents",
                "parameters": run_stream_params(),
                "responses": {
                    "200": { "description": "Server-Sent Events: `id: <seq>`, `event: <type>`, `data: <event JSON>`; `: heartbeat` every 15 s", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "400": bad(), "404": bad(),
                }
            }),
        ),
        (
            "/api/v1/events",
            json!({
                "summary": "Every run's events as they happen (live only); `data` carries `run`",
                "operationId": "streamEvents",
                "responses": {
                    "200": { "description": "Server-Sent Events: `id: <run>:<seq>`, `event: <type>`, `data: <event JSON with run>`; `: heartbeat` every 15 s", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "400": bad(),
                }
            }),
        ),
        (
            "/api/v1/openapi.json",
            json!({
                "summary": "This document",
                "operationId": "getOpenApi",
                "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }),
        ),
        (
            "/healthz",
            json!({
                "summary": "Liveness: 200 while the process lives (no token needed)",
                "operationId": "healthz",
                "security": [],
                "responses": { "200": { "description": "{\"status\":\"ok\"}", "content": { "application/json": { "schema": { "type": "object", "properties": { "status": { "type": "string" } } } } } } }
            }),
        ),
        (
            "/readyz",
            json!({
                "summary": "Readiness: 503 until the first scan, then the counts",
                "operationId": "readyz",
                "responses": {
                    "200": { "description": "{ready, queueDepth, activeRuns, waitingRuns, lastScanAgeMs, remote?: {reachable, lastFetchAgeMs}}", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "503": { "description": "{ready: false}: no scan yet", "content": { "application/json": { "schema": { "type": "object" } } } }
                }
            }),
        ),
        (
            "/metrics",
            json!({
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "operationId": "metrics",
                "responses": { "200": { "description": "pack_run_active, pack_runs_waiting, pack_queue_depth, pack_runs_total, …", "content": { "text/plain": { "schema": { "type": "string" } } } } }
            }),
        ),
        (
            "/api/v1/schedules",
            json!({
                "summary": "The schedules of .stella/schedules.yaml on the branch: next slots, last run, problems",
                "operationId": "listSchedules",
                "responses": { "200": { "description": "The timetable (docs/schedules.md)", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["file", "schedules", "problems"],
                    "properties": {
                        "file": { "type": "string" },
                        "schedules": { "type": "array", "items": { "type": "object",
                            "required": ["id", "cron", "timezone", "pack", "enabled", "concurrency", "catchUp", "next", "lastRun"],
                            "properties": {
                                "id": { "type": "string" }, "cron": { "type": "string" }, "timezone": { "type": "string" },
                                "pack": { "type": "string" }, "enabled": { "type": "boolean" },
                                "concurrency": { "type": "string", "enum": ["forbid", "allow"] },
                                "catchUp": { "type": "string", "enum": ["none", "last"] },
                                "next": { "type": "array", "items": { "type": "object", "properties": {
                                    "utc": { "type": "string", "format": "date-time" }, "local": { "type": "string", "format": "date-time" }, "run": { "type": "string" } } } },
                                "lastRun": { "type": ["object", "null"], "properties": { "id": { "type": "string" }, "state": { "type": "string" } } }
                            } } },
                        "problems": { "type": "array", "description": "ERR_SCHEDULE_INVALID, with file, line and field", "items": { "type": "object" } }
                    }
                } } } } }
            }),
        ),
        (
            "/api/v1/notifications",
            json!({
                "summary": "Notify targets (config at the tip) and this runner's outbox: waiting, delivered, retried, failed, last error",
                "operationId": "getNotifications",
                "responses": {
                    "200": { "description": "{targets: [{id, configured, format, events, endpoint: {kind, secret?}, pending, delivered, retried, failed, failedUnrecorded, lastError, lastErrorAt, lastDeliveredAt}]}; never a URL or secret value", "content": { "application/json": { "schema": { "type": "object", "properties": { "targets": { "type": "array", "items": { "type": "object" } } } } } } }
                }
            }),
        ),
    ]
}

fn schemas() -> Value {
    let time = || json!({ "type": ["string", "null"], "format": "date-time" });
    let error = json!({ "type": ["object", "null"], "properties": { "code": { "type": "string" }, "message": { "type": ["string", "null"] } } });
    let run = json!({
        "type": "object",
        "required": ["id", "pack", "state", "planHash", "trigger", "requestedAt", "requestedBy", "startedAt", "finishedAt", "durationMs", "progress", "gate", "error"],
        "properties": {
            "id": { "type": "string" },
            "pack": { "type": ["string", "null"] },
            "state": { "type": "string", "enum": ["requested", "planned", "waiting", "running", "succeeded", "failed", "cancelled", "invalid"] },
            "planHash": { "type": ["string", "null"] },
            "trigger": { "type": "object", "description": "{manual: \"commit\"}, {retryOf: RUN}, {resumeOf: RUN} or {schedule: ID, slot: RFC3339}" },
            "requestedAt": time(), "startedAt": time(), "finishedAt": time(),
            "requestedBy": { "type": ["string", "null"], "description": "The principal whose trusted SSH signature is on the commit that added the request; null when unsigned or untrusted" },
            "durationMs": { "type": ["integer", "null"] },
            "progress": { "type": "object", "properties": { "done": { "type": "integer" }, "total": { "type": ["integer", "null"] } } },
            "gate": { "type": ["string", "null"], "description": "The gate step the run waits at" },
            "error": error,
        }
    });
    let detail = json!({
        "allOf": [
            { "$ref": "#/components/schemas/Run" },
            { "type": "object", "required": ["steps", "gates", "artifacts", "evidence"], "properties": {
                "steps": { "type": "array", "items": { "type": "object", "properties": {
                    "id": { "type": "string" }, "kind": { "type": ["string", "null"] }, "state": { "type": "string" },
                    "attempts": { "type": "integer" }, "startedAt": time(), "finishedAt": time(),
                    "exitCode": { "type": ["integer", "null"] }, "error": error
                } } },
                "gates": { "type": "array", "items": { "type": "object", "properties": {
                    "id": { "type": ["string", "null"] }, "step": { "type": "string" }, "state": { "type": ["string", "null"] },
                    "requiredCount": { "type": ["integer", "null"] },
                    "counted": { "type": "array", "items": { "type": "string" } },
                    "rejected": { "type": "array", "items": { "type": "string" } },
                    "ignored": { "type": "array", "items": { "type": "object", "properties": {
                        "file": { "type": "string" }, "code": { "type": ["string", "null"] }, "reason": { "type": ["string", "null"] } } } },
                    "deadline": time()
                } } },
                "artifacts": { "type": "array", "items": { "type": "object", "properties": {
                    "step": { "type": "string" }, "name": { "type": "string" }, "sha256": { "type": "string" }, "size": { "type": "integer" } } } },
                "policies": { "type": "array", "description": "Rego policy gates' decisions", "items": { "type": "object", "properties": {
                    "step": { "type": "string" }, "file": { "type": "string" }, "sha256": { "type": "string" }, "query": { "type": "string" },
                    "inputSha256": { "type": "string" }, "result": {}, "allow": { "type": "boolean" },
                    "deny": { "type": "array", "items": { "type": "string" } }, "error": { "type": "string" } } } },
                "evidence": { "type": "object", "properties": {
                    "present": { "type": "boolean" }, "verified": { "type": ["boolean", "null"] }, "sha256": { "type": "string" } } }
            } }
        ]
    });
    json!({
        "Error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string", "pattern": "^ERR_[A-Z_]+$" }, "message": { "type": "string" } } },
        "Run": run,
        "RunDetail": detail,
    })
}

/// The whole document.
pub fn spec() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, op) in operations() {
        paths.insert(path.to_string(), json!({ "get": op }));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Stella runs workspace",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read-only: every change goes through git. Errors are {code, message} with an ERR_ code."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "Required on every route when the server was given --http-token-file" } }
        },
        "security": [{}, { "bearer": [] }],
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_parameter_is_declared() {
        let spec = spec();
        assert_eq!(spec["openapi"], "3.1.0");
        for (path, op) in operations() {
            let params: Vec<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_string)
                .collect();
            let declared: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(params, declared, "{path}: path parameters");
            assert!(op["responses"]["200"].is_object(), "{path}");
        }
    }
}
