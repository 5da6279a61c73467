//! The web workspace (DESIGN section 11): `GET /` (the runs table with its filters, pages and
//! cards) and `GET /runs/{id}` (one run: summary, step graph, gates with the commands that
//! decide them, logs, artifacts, evidence), rendered on the server from the JSON API's own
//! answers (`api::list`, `api::show`, `files::logs`: the same shapes as `/api/v1`; the plan's
//! shape from `plan.json` for the graph), so the
//! pages read with JavaScript off; `/assets/workspace.{css,js}` are compiled in and make them
//! live (streams, reconnect, polling). Every value is escaped by the templates (minijinja's
//! HTML auto-escaping), every page carries a strict Content-Security-Policy (no inline script
//! or style), and nothing here writes: the page shows commands, it never runs them.

mod model;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::Environment;
use serde_json::{Value, json};

use super::errors::{ApiError, blocking};
use super::shared::Shared;
use super::source::run_id;
use super::{api, files};

/// The pages' routes, for the router to merge.
pub const ROUTES: &[&str] = &["/", "/runs/{id}", "/assets/workspace.css", "/assets/workspace.js"];

/// What a page may load: its own stylesheet, script and API, nothing inline, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// How long a page may take before it answers 408 (as the JSON routes).
const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most log lines a run page shows (the whole text is one link away).
const LOG_LINES: usize = 1000;
/// The most log bytes a run page reads.
const LOG_BYTES: usize = 32 << 20;

const CSS: &str = include_str!("assets/workspace.css");
const JS: &str = include_str!("assets/workspace.js");

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("runs.html", include_str!("templates/runs.html")),
        ("row.html", include_str!("templates/row.html")),
        ("run.html", include_str!("templates/run.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, text).expect("the compiled-in templates parse");
    }
    env.add_filter("duration", model::duration);
    env.add_filter("bytes", model::bytes);
    env
});

/// The pages and their assets, state to be given by the router.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(ROUTES[0], get(runs))
        .route(ROUTES[1], get(run))
        .route(ROUTES[2], get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route(ROUTES[3], get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            PAGE_TIMEOUT,
        ))
}

/// `GET /`: the runs table as filtered, one page of it, and the cards.
async fn runs(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let form = model::Form::read(&q);
    let query = match form.api_query(std::time::SystemTime::now()) {
        Ok(query) => query,
        Err(e) => return error_page(&e),
    };
    let source = s.source.clone();
    let schedules = blocking(move || super::schedules::table(&source))
        .await
        .unwrap_or(Value::Null);
    let listed = api::list(State(s.clone()), Query(query.clone())).await;
    let active = api::list(State(s), Query(model::active_query())).await;
    let (page, problem) = match listed {
        Ok(Json(page)) => (page, None),
        Err(e) => (Value::Null, Some(e)),
    };
    let cards = match active {
        Ok(Json(active)) => model::cards(&active),
        Err(e) => return error_page(&e),
    };
    let next = page["next"].as_str().map(|c| form.href_with_cursor(Some(c)));
    let body = render(
        "runs.html",
        &json!({
            "page": "runs",
            "title": "Runs",
            "runs": page["runs"],
            "cards": cards,
            "schedules": schedules,
            "f": form,
            "states": model::STATE_CHOICES,
            "windows": model::WINDOWS,
            "api": model::api_href(&query),
            "live": form.cursor.is_none(),
            "next_href": next,
            "first_href": form.href_with_cursor(None),
            "problem": problem.as_ref().map(|e| format!("{}: {}", e.code, e.message)),
        }),
    );
    html(problem.map_or(StatusCode::OK, |e| e.status), body)
}

/// `GET /runs/{id}[?step=ID]`: one run, its logs (one step's with `step`).
async fn run(State(s): State<Shared>, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let step = q.get("step").filter(|s| !s.is_empty()).cloned();
    let detail = match api::show(State(s.clone()), Path(id.clone())).await {
        Ok(Json(v)) => v,
        Err(e) => return error_page(&e),
    };
    // Checked by `show`; the plan (for the graph's shape) and where approvals go.
    let id = run_id(&id).map(str::to_string).unwrap_or_default();
    let source = s.source.clone();
    let run = id.clone();
    let found = blocking(move || {
        let at = source.at()?;
        let Some(dir) = at.locate(&run)? else {
            return Ok((None, None));
        };
        // The plan as `plan.json` holds it (checked against its hash by the run's reader).
        let plan = at
            .read(&dir.file("plan.json"))?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        Ok((plan, Some(dir.approvals())))
    })
    .await;
    let (plan, approvals) = match found {
        Ok(found) => found,
        Err(e) => return error_page(&e),
    };
    let logs_query: HashMap<String, String> = step.iter().map(|s| ("step".to_string(), s.clone())).collect();
    let (log, log_problem) = match logs(files::logs(State(s), Path(id.clone()), Query(logs_query)).await).await {
        Ok(text) => (model::Log::tail(&text, LOG_LINES), None),
        Err(e) => (model::Log::default(), Some(e)),
    };
    let view = model::RunPage::build(&detail, plan.as_ref(), approvals.as_deref(), step.as_deref());
    let body = render(
        "run.html",
        &json!({
            "page": "run",
            "title": format!("Run {id}"),
            "run": detail,
            "v": view,
            "log": log,
            "log_problem": log_problem,
            "step": step,
        }),
    );
    html(StatusCode::OK, body)
}

/// The text of a logs answer, or why there is none.
async fn logs(answer: Result<Response, ApiError>) -> Result<String, String> {
    let r = answer.map_err(|e| e.message)?;
    let ok = r.status().is_success();
    let bytes = axum::body::to_bytes(r.into_body(), LOG_BYTES)
        .await
        .map_err(|_| format!("the log is larger than {} MiB: download it whole", LOG_BYTES >> 20))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if ok {
        Ok(text)
    } else {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        Err(v["message"].as_str().unwrap_or("the log cannot be read").to_string())
    }
}

fn render(name: &str, ctx: &Value) -> String {
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(ctx)))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, template = name, "http: a page did not render");
            format!(
                "<!doctype html><title>Stella</title><p>this page could not be rendered: {}</p>",
                model::escape(&e.to_string())
            )
        })
}

/// A page for a request that could not be answered: the API's code and message, its status.
fn error_page(e: &ApiError) -> Response {
    let body = render(
        "error.html",
        &json!({ "page": "error", "title": "Error", "code": e.code, "message": e.message }),
    );
    html(e.status, body)
}

/// An HTML answer with the headers every page carries.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    r
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut r = text.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    r
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
