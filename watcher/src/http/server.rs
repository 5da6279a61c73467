//! The router and what stands in front of every route: the bearer token (compared in
//! constant time; every route but `/healthz` when a token is set), limits on the request line,
//! headers and body, a timeout and compression on the JSON routes only (a stream lives as long
//! as its client, and is never compressed), and a JSON 404 for any other path. Only GET routes
//! exist: nothing served here writes.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::errors::ApiError;
use super::shared::Shared;
use super::{api, files, notifications, openapi, pages, probes, schedules, streams};

/// How long a JSON route may take before it answers 408.
pub const JSON_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request line (method, path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// The most header bytes (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// No route takes a body; a small one is tolerated, a larger one refused (413).
pub const MAX_BODY_BYTES: usize = 16 << 10;

/// Every route, as `openapi.json` lists them: (path as the router spells it, what it serves).
pub const ROUTES: &[&str] = &[
    "/api/v1/runs",
    "/api/v1/runs/{id}",
    "/api/v1/runs/{id}/logs",
    "/api/v1/runs/{id}/artifacts/{step}/{name}",
    "/api/v1/runs/{id}/export",
    "/api/v1/runs/{id}/events",
    "/api/v1/events",
    "/api/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/schedules",
    "/api/v1/notifications",
];

/// The whole router, state given.
pub fn router(shared: Shared) -> Router {
    let json = Router::new()
        .route(ROUTES[0], get(api::list))
        .route(ROUTES[1], get(api::show))
        .route(ROUTES[2], get(files::logs))
        .route(ROUTES[7], get(openapi::document))
        .route(ROUTES[11], get(schedules::list))
        .route(ROUTES[12], get(notifications::state))
        .layer(CompressionLayer::new());
    let bytes = Router::new()
        .route(ROUTES[3], get(files::artifact))
        .route(ROUTES[4], get(files::export));
    let timed = json.merge(bytes).layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        JSON_TIMEOUT,
    ));
    let streams = Router::new()
        .route(ROUTES[5], get(streams::run))
        .route(ROUTES[6], get(streams::all));
    let probes = Router::new()
        .route(ROUTES[8], get(probes::healthz))
        .route(ROUTES[9], get(probes::readyz))
        .route(ROUTES[10], get(probes::metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            JSON_TIMEOUT,
        ));
    timed
        .merge(streams)
        .merge(probes)
        // The web workspace: `/`, `/runs/{id}` and their compiled-in assets (pages/).
        .merge(pages::routes())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                stella_engine::Code::Usage,
                "only GET is served: every change goes through git",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Limits and the token, before any route.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if req.uri().to_string().len() > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            stella_engine::Code::Usage,
            format!("the request line is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            stella_engine::Code::Usage,
            format!("the headers are larger than {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    if let Some(want) = &s.token
        && req.uri().path() != "/healthz"
        && !presented(&req, want)
    {
        let mut r = ApiError::unauthorized().into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

/// Whether the request carries the bearer token whose SHA-256 is `want`; digests are compared
/// in constant time, so neither the token nor its length leaks through timing.
fn presented(req: &Request, want: &[u8; 32]) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    digest.ct_eq(want).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_names_exactly_the_routes_served() {
        let documented: Vec<&str> = super::openapi::operations().iter().map(|(p, _)| *p).collect();
        assert_eq!(documented, super::ROUTES);
    }
}
