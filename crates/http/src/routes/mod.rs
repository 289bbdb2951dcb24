mod messages;
mod ops;

use axum::{
    extract::DefaultBodyLimit,
    http::StatusCode,
    middleware,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{metrics_layer, ApiError, AppState};

/// The whole HTTP surface. Usable with `oneshot` in tests (no socket).
pub fn router(state: AppState) -> Router {
    // Room for the framing of a body at the limit; the ingest service
    // enforces the exact limit on the bytes.
    let body_limit = state.ingest.max_bytes().saturating_add(1);
    Router::new()
        .route(
            "/api/v1/messages",
            post(messages::create).get(messages::list),
        )
        .route(
            "/api/v1/messages/{id}",
            get(messages::show).delete(messages::delete),
        )
        .route("/api/v1/messages/{id}/raw", get(messages::raw))
        .route("/api/v1/jobs", get(ops::jobs))
        .route("/health", get(ops::health))
        .route("/health/ready", get(ops::ready))
        .route("/health/detailed", get(ops::detailed))
        .route("/process/status", get(ops::process_status))
        .route("/process/trigger", post(ops::trigger))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(metrics_layer::track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Body-read failures mapped onto the API's error shape.
pub(crate) fn body_rejection(
    rejection: axum::extract::rejection::BytesRejection,
    limit: usize,
) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the body exceeds the limit of {limit} bytes"))
    } else {
        ApiError::InvalidParameter(format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ))
    }
}
