//! Streamable HTTP at `/mcp`, for both protocol eras: 2026-07-28 requests
//! are served statelessly, 2025-11-25 clients get a session after their
//! initialize. The API's guard (bearer key, scopes, rate limit) runs before
//! any of this; here: allowed Host and Origin (rmcp checks both on every
//! request: foreign Origin → 403), a cap on open legacy sessions, idle
//! expiry, the request size limit. (The 401 challenge and the
//! protected-resource metadata it points to are the API server's:
//! `mailroom-http`.)

use std::{sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use mailroom_telemetry::names;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::MailroomMcp;

/// The MCP endpoint's path on the API server.
pub const PATH: &str = "/mcp";

/// How `/mcp` is exposed (from the `[mcp]` configuration).
#[derive(Debug, Clone)]
pub struct McpHttpSettings {
    /// `Host` values accepted (names or `host:port`); requests naming any
    /// other host are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed; any other `Origin` gets a 403. Empty: no
    /// browser origin is allowed (clients that send none still pass).
    pub allowed_origins: Vec<String>,
    /// Most legacy sessions open at once; past it, an initialize gets 503.
    pub max_sessions: usize,
    /// A legacy session idle this long is closed.
    pub session_idle: Duration,
    /// Largest POST body accepted (413 above).
    pub max_request_bytes: usize,
    /// Cancelled at shutdown: open streams end.
    pub shutdown: CancellationToken,
}

/// The number of open legacy sessions (`mcp_sessions_active`).
#[derive(Clone)]
pub struct SessionGauge(Arc<LocalSessionManager>);

impl SessionGauge {
    pub async fn open(&self) -> usize {
        self.0.sessions.read().await.len()
    }

    async fn report(&self) -> usize {
        let open = self.open().await;
        metrics::gauge!(names::MCP_SESSIONS_ACTIVE).set(open as f64);
        open
    }
}

/// `/mcp` and its metadata document, to be mounted inside the API's guard.
pub fn router<S: Clone + Send + Sync + 'static>(
    server: MailroomMcp,
    settings: McpHttpSettings,
) -> (Router<S>, SessionGauge) {
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(settings.session_idle);
    let sessions = Arc::new(sessions);
    let gauge = SessionGauge(Arc::clone(&sessions));
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(settings.allowed_hosts.clone())
        .with_allowed_origins(settings.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(true)
        .with_max_request_body_bytes(settings.max_request_bytes)
        .with_cancellation_token(settings.shutdown.clone());
    let service = StreamableHttpService::new(move || Ok(server.clone()), sessions, config);

    // Idle sessions close on their own; the gauge follows them.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let gauge = gauge.clone();
        let shutdown = settings.shutdown.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => { gauge.report().await; }
                }
            }
        });
    }

    let cap = {
        let gauge = gauge.clone();
        let max = settings.max_sessions;
        move |request: Request, next: Next| {
            let gauge = gauge.clone();
            async move {
                if opens_legacy_session(&request) && gauge.open().await >= max {
                    return too_many_sessions(max);
                }
                let response = next.run(request).await;
                gauge.report().await;
                json_errors(response).await
            }
        }
    };
    let router = Router::new()
        .route_service(PATH, service)
        .layer(middleware::from_fn(cap));
    (router, gauge)
}

/// A POST with no session that is not a 2026-07-28 request: a legacy
/// initialize, which opens a session if it succeeds.
fn opens_legacy_session(request: &Request) -> bool {
    let headers = request.headers();
    request.method() == axum::http::Method::POST
        && !headers.contains_key("mcp-session-id")
        && headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v < "2026-07-28")
}

/// rmcp answers transport-level refusals (foreign Origin or Host, bad
/// Accept, unparsable JSON) with a plain-text body: each becomes a JSON-RPC
/// error document naming the problem, and an unparsable body a 400 with
/// -32700 (rmcp says 415), as the JSON-RPC and MCP specifications want.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Refusal texts are one line; anything longer is cut, never buffered whole.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let unparsable = text.starts_with("fail to deserialize");
    let (status, code) = if unparsable {
        (StatusCode::BAD_REQUEST, -32700)
    } else {
        (status, -32600)
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        text
    };
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

fn too_many_sessions(max: usize) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {
            "code": "too_many_sessions",
            "message": format!("{max} MCP sessions are open, the most allowed; close one (DELETE /mcp) or use protocol 2026-07-28, which needs none"),
        }})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}
