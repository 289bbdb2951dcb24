mod audit;
mod keys;
mod messages;
mod ops;
mod score;
mod submissions;

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    response::IntoResponse,
    routing::{delete, get, post},
    Router,
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{auth, hardening, metrics_layer, ApiError, AppState};

/// The MCP endpoint's path (served by `mailroom-mcp`, mounted here so it
/// passes the same guard as every route).
pub const MCP_PATH: &str = "/mcp";
/// Its protected-resource metadata (RFC 9728 §3.1: the well-known prefix,
/// then the resource's path).
pub const MCP_RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// The whole HTTP surface. Usable with `oneshot` in tests (no socket).
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The HTTP surface with more routes mounted inside the protection (the
/// MCP endpoint): they pass the guard, the deadline and the metrics like
/// every route, and their policy is in `policy.rs`.
pub fn router_with(state: AppState, mounted: Router<AppState>) -> Router {
    // Ingest streams its body under its own limit; every other body is a
    // small JSON document.
    let body_limit = 1024 * 1024;
    let router = Router::new()
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
        .route(
            "/api/v1/keys",
            get(keys::list)
                .post(keys::create)
                .layer(DefaultBodyLimit::max(keys::BODY_LIMIT)),
        )
        .route("/api/v1/keys/{id}", delete(keys::revoke))
        .route(
            "/api/v1/keys/{id}/rotate",
            post(keys::rotate).layer(DefaultBodyLimit::max(keys::BODY_LIMIT)),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/submissions", get(submissions::list))
        .route("/api/v1/submissions/retry", post(submissions::retry))
        .route("/api/v1/score", post(score::score))
        .route("/checkv2", post(score::checkv2))
        .route("/api/v1/learn/{label}", post(score::learn))
        .route(MCP_RESOURCE_METADATA_PATH, get(ops::mcp_resource_metadata))
        .route(
            "/.well-known/oauth-protected-resource",
            get(ops::mcp_resource_metadata),
        )
        .merge(mounted)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Inner to outer: who may call, within what time, measured.
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            hardening::deadline,
        ))
        .layer(middleware::from_fn(metrics_layer::track));
    let router = match hardening::cors(&state.security.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(middleware::from_fn(hardening::security_headers))
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

/// A small JSON body that could not be read (too large, broken stream).
pub(crate) fn small_body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the JSON body exceeds 1 MiB".into())
    } else {
        ApiError::InvalidParameter(format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ))
    }
}

/// The server's base URL as clients reach it: `security.public_url`, else
/// `http://` and the request's Host.
pub(crate) fn base_url(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    match &state.security.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

pub(crate) fn resource_metadata_url(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    format!("{}{MCP_RESOURCE_METADATA_PATH}", base_url(state, headers))
}
