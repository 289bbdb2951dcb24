//! Streamable HTTP at `/mcp`, for both protocol eras: 2026-07-28 requests
//! are served statelessly, 2025-11-25 clients get a session after their
//! initialize. The API's guard (bearer key, scopes, rate limit) runs before
//! any of this; here: allowed Host and Origin (rmcp checks both on every
//! request: foreign Origin → 403), a cap on open legacy sessions, idle
//! expiry, sessions that answer only the key that opened them, the request
//! size limit, and large bodies counted in the ingest memory budget. (The
//! 401 challenge and the
//! protected-resource metadata it points to are the API server's:
//! `mailroom-http`.)

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use futures::{Stream, StreamExt};
use mailroom_app::{IngestService, Principal, Reservation};
use mailroom_telemetry::names;
use rmcp::{
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
    transport::streamable_http_server::{
        session::{
            local::{LocalSessionManager, LocalSessionManagerError},
            ServerSseMessage, SessionId, SessionManager,
        },
        StreamableHttpServerConfig, StreamableHttpService,
    },
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

/// rmcp's in-memory sessions with a cap: a session is created only while
/// fewer than `max` are open. Counting here, where rmcp creates sessions,
/// catches every initialize whatever its headers say, and creation is
/// serialised so concurrent initializes cannot overshoot the cap.
struct CappedSessions {
    inner: LocalSessionManager,
    max: usize,
    creating: tokio::sync::Mutex<()>,
    /// Who opened each session (the key's id): a session answers only its
    /// owner, so a session id is useless to another key.
    owners: std::sync::Mutex<HashMap<String, String>>,
}

/// Why a session was not created.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{TOO_MANY_SESSIONS}: {0} are open")]
    TooMany(usize),
    #[error(transparent)]
    Inner(#[from] LocalSessionManagerError),
}

/// Marks the refusal in rmcp's (plain-text, 500) error answer so it can be
/// told apart and answered 503.
const TOO_MANY_SESSIONS: &str = "too many MCP sessions";

impl CappedSessions {
    async fn open(&self) -> usize {
        self.inner.sessions.read().await.len()
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `mcp_sessions_active`.
    async fn report(&self) {
        let open = self.open().await;
        metrics::gauge!(names::MCP_SESSIONS_ACTIVE).set(open as f64);
    }

    /// Whether session `id` was opened by a key other than `owner`.
    fn owned_by_other(&self, id: &str, owner: &str) -> bool {
        self.owners().get(id).is_some_and(|opener| opener != owner)
    }

    fn record_owner(&self, id: &str, owner: String) {
        self.owners().insert(id.to_string(), owner);
    }

    /// Forgets the owners of sessions that closed or expired.
    async fn forget_closed(&self) {
        let live: HashSet<String> = self
            .inner
            .sessions
            .read()
            .await
            .keys()
            .map(|id| id.to_string())
            .collect();
        self.owners().retain(|id, _| live.contains(id));
    }
}

impl SessionManager for CappedSessions {
    type Error = SessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let _one_at_a_time = self.creating.lock().await;
        let open = self.open().await;
        if open >= self.max {
            return Err(SessionError::TooMany(open));
        }
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}

/// Requests this small are not reserved in the ingest memory budget; larger
/// ones (a raw message to ingest or score) are, before rmcp reads the body.
const UNRESERVED_BODY_BYTES: usize = 64 * 1024;

/// Marks a request whose body is reserved in the ingest memory budget, so a
/// tool does not reserve the message it carries a second time.
#[derive(Debug, Clone, Copy)]
struct BodyReserved;

/// Whether the tool call's HTTP request body is already reserved.
pub(crate) fn body_reserved(context: &rmcp::service::RequestContext<rmcp::RoleServer>) -> bool {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .is_some_and(|parts| parts.extensions.get::<BodyReserved>().is_some())
}

/// `/mcp`, to be mounted inside the API's guard.
pub fn router<S: Clone + Send + Sync + 'static>(
    server: MailroomMcp,
    settings: McpHttpSettings,
) -> Router<S> {
    let mut inner = LocalSessionManager::default();
    inner.session_config.keep_alive = Some(settings.session_idle);
    let sessions = Arc::new(CappedSessions {
        inner,
        max: settings.max_sessions,
        creating: tokio::sync::Mutex::new(()),
        owners: std::sync::Mutex::new(HashMap::new()),
    });
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(settings.allowed_hosts.clone())
        .with_allowed_origins(settings.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(true)
        .with_max_request_body_bytes(settings.max_request_bytes)
        .with_cancellation_token(settings.shutdown.clone());
    let ingest = server.ctx.ingest.clone();
    let service =
        StreamableHttpService::new(move || Ok(server.clone()), Arc::clone(&sessions), config);

    // Idle sessions close on their own; the gauge and the owners follow.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let sessions = Arc::clone(&sessions);
        let shutdown = settings.shutdown.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        sessions.report().await;
                        sessions.forget_closed().await;
                    }
                }
            }
        });
    }

    let guard = move |request: Request, next: Next| {
        let (sessions, ingest) = (Arc::clone(&sessions), ingest.clone());
        async move {
            let (request, reservation) =
                match reserve_body(request, &ingest, settings.max_request_bytes).await {
                    Ok(reserved) => reserved,
                    Err(busy) => return busy,
                };
            // The key's id (prefixes are not unique); one owner for all when
            // authentication is off.
            let owner = request
                .extensions()
                .get::<Arc<Principal>>()
                .map(|p| p.key_id.clone())
                .unwrap_or_default();
            let session = request
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if session
                .as_deref()
                .is_some_and(|id| sessions.owned_by_other(id, &owner))
            {
                // As rmcp answers an unknown session.
                return rpc_error(StatusCode::NOT_FOUND, -32600, "Session not found");
            }
            let response = next.run(request).await;
            if session.is_none() {
                if let Some(opened) = response
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    sessions.record_owner(opened, owner);
                }
            }
            sessions.report().await;
            let response = json_errors(response, sessions.max).await;
            match reservation {
                None => response,
                // Held until the answer is sent: the tool holds the message
                // until then.
                Some(reservation) => {
                    let (parts, body) = response.into_parts();
                    let body = body.into_data_stream().map(move |chunk| {
                        let _held = &reservation;
                        chunk
                    });
                    Response::from_parts(parts, axum::body::Body::from_stream(body))
                }
            }
        }
    };
    Router::new()
        .route_service(PATH, service)
        .layer(middleware::from_fn(guard))
}

/// A large POST body is counted in the ingest memory budget before rmcp
/// buffers it, as an upload to the REST API is; the request is marked so
/// the tool does not count the message again. `Err`: the budget is spent.
async fn reserve_body(
    mut request: Request,
    ingest: &IngestService,
    max_body: usize,
) -> Result<(Request, Option<Reservation>), Response> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let reservation = match declared {
        _ if request.method() != axum::http::Method::POST => None,
        Some(n) if n <= UNRESERVED_BODY_BYTES => None,
        // rmcp refuses it (413) without reading it.
        Some(n) if n > max_body => None,
        n => Some(
            ingest
                .reserve(n.unwrap_or(max_body))
                .await
                .map_err(|e| busy(&e.to_string()))?,
        ),
    };
    if reservation.is_some() {
        request.extensions_mut().insert(BodyReserved);
    }
    Ok((request, reservation))
}

/// rmcp answers transport-level refusals (foreign Origin or Host, bad
/// Accept, unparsable JSON, a session it could not create) with a
/// plain-text body: each becomes a JSON-RPC error document naming the
/// problem, an unparsable body a 400 with -32700 (rmcp says 415), as the
/// JSON-RPC and MCP specifications want, and the session cap a 503.
async fn json_errors(response: Response, max_sessions: usize) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    let plain_refusal = status.is_client_error() || status == StatusCode::INTERNAL_SERVER_ERROR;
    if !plain_refusal || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Refusal texts are one line; anything longer is cut, never buffered whole.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    if text.contains(TOO_MANY_SESSIONS) {
        return too_many_sessions(max_sessions);
    }
    let unparsable = text.starts_with("fail to deserialize");
    let (status, code) = if unparsable {
        (StatusCode::BAD_REQUEST, -32700)
    } else if status.is_server_error() {
        (status, -32603)
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
    Response::from_parts(
        parts,
        axum::body::Body::from(rpc_error_body(code, &message)),
    )
}

fn rpc_error_body(code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}).to_string()
}

/// A JSON-RPC error document with an HTTP status.
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        rpc_error_body(code, message),
    )
        .into_response()
}

/// The ingest memory budget is spent: 503, retry shortly.
fn busy(message: &str) -> Response {
    let mut response = rpc_error(StatusCode::SERVICE_UNAVAILABLE, -32603, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
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
