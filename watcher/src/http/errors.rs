//! How the HTTP edge says no: a JSON body `{code, message}` with the `ERR_…` code of what went
//! wrong and the status it maps to (404 `ERR_RUN_NOT_FOUND`, 400 for a bad parameter, 401 for
//! a missing or wrong token, 500 for the server's own trouble). Owns the mapping from codes to
//! statuses; never echoes a secret (messages name parameters, not header values).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stella_engine::Code;

use crate::failure::Failure;

/// A request that could not be answered.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.as_str().to_string(),
            message: message.into(),
        }
    }

    /// A parameter that breaks its rule: 400 `ERR_USAGE`.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::Usage, message)
    }

    /// No run of that id on the branch: 404 `ERR_RUN_NOT_FOUND`.
    pub fn no_run(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::RunNotFound,
            format!("no run {id} on the branch"),
        )
    }

    /// Something of the run that does not exist (a step, an artifact): 404 `ERR_USAGE`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, Code::Usage, message)
    }

    /// A route that does not exist.
    pub fn no_route() -> ApiError {
        ApiError::not_found("no such route (see /api/v1/openapi.json)")
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::Usage,
            "a bearer token is required (Authorization: Bearer <token from --http-token-file>)",
        )
    }

    /// A blocking reader that panicked or could not be joined.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Io, message)
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        let code = f.code();
        let message = match &f {
            Failure::One { message, .. } => message.clone(),
            Failure::Diags(d) => d.to_string(),
        };
        ApiError {
            status: status_of(code),
            code: code.as_str().to_string(),
            message,
        }
    }
}

/// The status an engine code answers with.
fn status_of(code: Code) -> StatusCode {
    match code {
        Code::RunNotFound => StatusCode::NOT_FOUND,
        Code::Usage => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// Runs a blocking reader (git, files) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a reader failed: {e}")))?
}
