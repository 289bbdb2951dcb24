//! The HTTP front: the axum router, Graph request/response/error types, and
//! the dispatcher every `/v1.0/...` request (including `$batch` items) goes
//! through, so authentication, throttling, mailbox concurrency and request
//! recording are identical for direct and batched calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};

use crate::state::{graph_time, Inner, State as SimState};
use crate::{auth, batch, chats, control, delta, mail, subscriptions, RecordedRequest};

/// Largest request body accepted (raw MIME deliveries through the control API).
pub(crate) const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Outlook's per-app, per-mailbox limit of concurrent requests.
const MAILBOX_CONCURRENCY: usize = 4;

/// Graph's JSON content type.
pub(crate) const JSON_CT: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token_endpoint))
        .route("/v1.0/{*rest}", any(graph_entry))
        .merge(control::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(inner)
}

/// A Graph API request, from the wire or from a `$batch` item.
pub(crate) struct GraphRequest {
    pub method: Method,
    /// Path after `/v1.0`, still percent-encoded, starting with `/`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub in_batch: bool,
}

impl GraphRequest {
    /// Decoded query pairs (`+` is a space, as in forms and Graph links).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every `Prefer` header value, comma lists split and trimmed.
    pub fn preferences(&self) -> Vec<String> {
        self.headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// `Prefer: odata.maxpagesize=N`, when N is a positive integer.
    pub fn max_page_size(&self) -> Option<usize> {
        self.preferences().iter().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("odata.maxpagesize") {
                v.trim().parse::<usize>().ok().filter(|n| *n > 0)
            } else {
                None
            }
        })
    }

    pub fn wants_immutable_ids(&self) -> bool {
        self.preferences().iter().any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("IdType")
                    && v.trim()
                        .trim_matches('"')
                        .eq_ignore_ascii_case("ImmutableId")
            })
        })
    }

    /// The body as a JSON object, or a Graph 400.
    pub fn json_body(&self) -> Result<serde_json::Map<String, Value>, GraphError> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(GraphError::bad_request(
                "BadRequest",
                "The request body must be a JSON object.",
            )),
            Err(e) => Err(GraphError::bad_request(
                "BadRequest",
                format!("Unable to read JSON request payload. {e}"),
            )),
        }
    }
}

pub(crate) enum RespBody {
    Empty,
    Json(Value),
    Bytes { content_type: String, data: Vec<u8> },
}

pub(crate) struct GraphResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: RespBody,
}

impl GraphResponse {
    pub fn json(status: StatusCode, body: Value) -> Self {
        GraphResponse {
            status,
            headers: HeaderMap::new(),
            body: RespBody::Json(body),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        GraphResponse {
            status,
            headers: HeaderMap::new(),
            body: RespBody::Empty,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }

    /// Header map as it goes on the wire (content type included).
    pub fn wire_headers(&self) -> HeaderMap {
        let mut h = self.headers.clone();
        match &self.body {
            RespBody::Json(_) => {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CT));
            }
            RespBody::Bytes { content_type, .. } => {
                if let Ok(v) = HeaderValue::from_str(content_type) {
                    h.insert(header::CONTENT_TYPE, v);
                }
            }
            RespBody::Empty => {}
        }
        h
    }

    fn into_axum(self) -> Response {
        let headers = self.wire_headers();
        let body = match self.body {
            RespBody::Empty => Body::empty(),
            RespBody::Json(v) => Body::from(v.to_string()),
            RespBody::Bytes { data, .. } => Body::from(data),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// A Graph error; rendered as `{"error":{"code","message","innerError":{...}}}`.
#[derive(Debug)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn item_not_found() -> Self {
        Self::not_found(
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    fn throttled(code: &str, message: String, retry_after: u64) -> Self {
        GraphError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: code.to_string(),
            message,
            retry_after: Some(retry_after),
        }
    }

    pub fn into_response(self, request_id: &str, client_request_id: Option<&str>) -> GraphResponse {
        let mut inner = json!({
            "date": graph_time(Utc::now()),
            "request-id": request_id,
        });
        if let Some(c) = client_request_id {
            inner["client-request-id"] = json!(c);
        }
        let mut resp = GraphResponse::json(
            self.status,
            json!({"error": {"code": self.code, "message": self.message, "innerError": inner}}),
        );
        if let Some(s) = self.retry_after {
            resp = resp.with_header("retry-after", &s.to_string());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp = resp.with_header(
                "www-authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"",
            );
        }
        resp
    }
}

pub(crate) type GraphResult = Result<GraphResponse, GraphError>;

/// What a `/v1.0` path names.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    ListSubscriptions,
    CreateSubscription,
    GetSubscription(String),
    UpdateSubscription(String),
    DeleteSubscription(String),
    ReauthorizeSubscription(String),
    Batch,
    CreateChat,
    PostChatMessage(String),
    Mail { mailbox: String, action: MailAction },
    Unknown(String),
    MethodNotAllowed,
}

#[derive(Debug, Clone)]
pub(crate) enum MailAction {
    Get { id: String, inbox_only: bool },
    Value { id: String, inbox_only: bool },
    Update { id: String },
    Delete { id: String },
    Move { id: String },
    Reply { id: String },
    Delta,
}

impl Route {
    pub fn op(&self) -> &'static str {
        match self {
            Route::ListSubscriptions => "listSubscriptions",
            Route::CreateSubscription => "createSubscription",
            Route::GetSubscription(_) => "getSubscription",
            Route::UpdateSubscription(_) => "updateSubscription",
            Route::DeleteSubscription(_) => "deleteSubscription",
            Route::ReauthorizeSubscription(_) => "reauthorizeSubscription",
            Route::Batch => "batch",
            Route::CreateChat => "createChat",
            Route::PostChatMessage(_) => "postChatMessage",
            Route::Mail { action, .. } => match action {
                MailAction::Get { .. } => "getMessage",
                MailAction::Value { .. } => "getMessageValue",
                MailAction::Update { .. } => "updateMessage",
                MailAction::Delete { .. } => "deleteMessage",
                MailAction::Move { .. } => "moveMessage",
                MailAction::Reply { .. } => "replyMessage",
                MailAction::Delta => "delta",
            },
            Route::Unknown(_) => "unknown",
            Route::MethodNotAllowed => "methodNotAllowed",
        }
    }
}

fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `mailFolders('Inbox')` / `mailFolders('inbox')` as one segment.
fn is_inbox_paren(seg: &str) -> bool {
    let l = seg.to_ascii_lowercase();
    l == "mailfolders('inbox')" || l == "mailfolders(\"inbox\")"
}

pub(crate) fn route(method: &Method, path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = method.clone();

    match l.as_slice() {
        ["subscriptions"] => match m {
            Method::GET => Route::ListSubscriptions,
            Method::POST => Route::CreateSubscription,
            _ => Route::MethodNotAllowed,
        },
        ["subscriptions", _] => {
            let id = segs[1].clone();
            match m {
                Method::GET => Route::GetSubscription(id),
                Method::PATCH => Route::UpdateSubscription(id),
                Method::DELETE => Route::DeleteSubscription(id),
                _ => Route::MethodNotAllowed,
            }
        }
        ["subscriptions", _, "reauthorize"] => match m {
            Method::POST => Route::ReauthorizeSubscription(segs[1].clone()),
            _ => Route::MethodNotAllowed,
        },
        ["$batch"] => match m {
            Method::POST => Route::Batch,
            _ => Route::MethodNotAllowed,
        },
        ["chats"] => match m {
            Method::POST => Route::CreateChat,
            _ => Route::MethodNotAllowed,
        },
        ["chats", _, "messages"] => match m {
            Method::POST => Route::PostChatMessage(segs[1].clone()),
            _ => Route::MethodNotAllowed,
        },
        ["users", _, rest @ ..] => {
            let mailbox = segs[1].clone();
            // Strip an Inbox folder prefix: mailFolders('Inbox') or mailFolders/inbox.
            let (inbox_only, rest_idx) = match rest {
                [f, ..] if is_inbox_paren(f) => (true, 3),
                ["mailfolders", "inbox", ..] => (true, 4),
                _ => (false, 2),
            };
            let tail: Vec<&str> = l[rest_idx..].to_vec();
            let id_at = |i: usize| segs[rest_idx + i].clone();
            let action = match (tail.as_slice(), &m) {
                (["messages", "delta"], &Method::GET) if inbox_only => MailAction::Delta,
                (["messages", _], &Method::GET) => MailAction::Get {
                    id: id_at(1),
                    inbox_only,
                },
                (["messages", _], &Method::PATCH) => MailAction::Update { id: id_at(1) },
                (["messages", _], &Method::DELETE) => MailAction::Delete { id: id_at(1) },
                (["messages", _, "$value"], &Method::GET) => MailAction::Value {
                    id: id_at(1),
                    inbox_only,
                },
                (["messages", _, "move"], &Method::POST) => MailAction::Move { id: id_at(1) },
                (["messages", _, "reply"], &Method::POST) => MailAction::Reply { id: id_at(1) },
                // A known shape with a method it does not take.
                (["messages", _], _) | (["messages", _, "$value" | "move" | "reply"], _) => {
                    return Route::MethodNotAllowed
                }
                _ => return Route::Unknown(segs.last().cloned().unwrap_or_default()),
            };
            Route::Mail { mailbox, action }
        }
        _ => Route::Unknown(segs.first().cloned().unwrap_or_default()),
    }
}

/// The caller, from a verified bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Some(username) for a delegated token.
    pub user: Option<String>,
}

/// Decrements a mailbox's in-flight count when the request finishes or is
/// dropped (client went away mid-request).
struct InflightGuard {
    inner: Arc<Inner>,
    mailbox: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(n) = st.inflight.get_mut(&self.mailbox) {
            *n = n.saturating_sub(1);
        }
    }
}

pub(crate) type BoxedGraphFuture = Pin<Box<dyn Future<Output = GraphResponse> + Send>>;

/// Boxed entry for `$batch`, which calls back into [`handle`] (async
/// recursion needs a boxed future).
pub(crate) fn handle_boxed(inner: Arc<Inner>, req: GraphRequest) -> BoxedGraphFuture {
    Box::pin(async move { handle(&inner, req).await })
}

/// Runs one Graph API request: auth, throttling, mailbox concurrency, the
/// operation itself, then records it.
pub(crate) async fn handle(inner: &Arc<Inner>, req: GraphRequest) -> GraphResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req
        .headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let route = route(&req.method, &req.path);
    let op = route.op();

    let result = run(inner, &req, route).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(&request_id, client_request_id.as_deref()),
    };
    resp = resp.with_header("request-id", &request_id);
    if let Some(c) = &client_request_id {
        resp = resp.with_header("client-request-id", c);
    }

    let mut path = format!("/v1.0{}", req.path);
    if let Some(q) = &req.query {
        path.push('?');
        path.push_str(q);
    }
    record(
        &mut inner.lock(),
        RecordedRequest {
            method: req.method.to_string(),
            path,
            op: op.to_string(),
            status: resp.status.as_u16(),
            prefer: prefer_header(&req.headers),
            has_authorization: req.headers.contains_key(header::AUTHORIZATION),
            in_batch: req.in_batch,
        },
    );
    resp
}

pub(crate) fn prefer_header(h: &HeaderMap) -> Option<String> {
    let v: Vec<&str> = h
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!v.is_empty()).then(|| v.join(", "))
}

pub(crate) fn record(st: &mut SimState, r: RecordedRequest) {
    *st.stats.requests_by_op.entry(r.op.clone()).or_default() += 1;
    st.requests.push(r);
}

async fn run(inner: &Arc<Inner>, req: &GraphRequest, route: Route) -> GraphResult {
    let caller = auth::authenticate(&mut inner.lock(), &req.headers)?;

    // The outer $batch request is not itself throttled: Graph throttles the
    // items, each answering its own 429 inside the batch response.
    if !matches!(route, Route::Batch) {
        let mut st = inner.lock();
        let (left, retry_after) = st.throttle;
        if left > 0 {
            st.throttle.0 = left - 1;
            st.stats.throttled += 1;
            return Err(GraphError::throttled(
                "TooManyRequests",
                format!("Too many requests. Please retry after {retry_after} seconds."),
                retry_after,
            ));
        }
    }

    match route {
        Route::ListSubscriptions => subscriptions::list(inner),
        Route::CreateSubscription => subscriptions::create(inner, req, &caller).await,
        Route::GetSubscription(id) => subscriptions::get(inner, &id),
        Route::UpdateSubscription(id) => subscriptions::update(inner, req, &id),
        Route::DeleteSubscription(id) => subscriptions::delete(inner, &id),
        Route::ReauthorizeSubscription(id) => subscriptions::reauthorize(inner, &id),
        Route::Batch => batch::run(inner, req).await,
        Route::CreateChat => chats::create(inner, req),
        Route::PostChatMessage(id) => chats::post_message(inner, req, &caller, &id),
        Route::Mail { mailbox, action } => {
            let (idx, _guard) = enter_mailbox(inner, &mailbox)?;
            run_mail(inner, req, idx, &mailbox, action).await
        }
        Route::Unknown(seg) => Err(GraphError::bad_request(
            "BadRequest",
            format!("Resource not found for the segment '{seg}'."),
        )),
        Route::MethodNotAllowed => Err(GraphError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequest",
            format!(
                "The HTTP method '{}' is not allowed for this resource.",
                req.method
            ),
        )),
    }
}

/// Resolves the mailbox and counts the request in flight for it; more than
/// four at once answers 429 ApplicationThrottled like Outlook's
/// MailboxConcurrency limit.
fn enter_mailbox(inner: &Arc<Inner>, mailbox: &str) -> Result<(usize, InflightGuard), GraphError> {
    let mut st = inner.lock();
    let idx = st.mailbox_index(mailbox).ok_or_else(|| {
        GraphError::not_found(
            "ErrorInvalidUser",
            format!("The requested user '{mailbox}' is invalid."),
        )
    })?;
    let n = {
        let n = st.inflight.entry(idx).or_insert(0);
        *n += 1;
        *n
    };
    let upn = st.mailboxes[idx].upn.clone();
    let max = st.stats.max_concurrency_by_mailbox.entry(upn).or_insert(0);
    *max = (*max).max(n);
    let guard = InflightGuard {
        inner: inner.clone(),
        mailbox: idx,
    };
    if n > MAILBOX_CONCURRENCY {
        st.stats.throttled += 1;
        drop(st);
        // Dropping the guard takes this request back out of the count.
        drop(guard);
        return Err(GraphError::throttled(
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.".to_string(),
            1,
        ));
    }
    Ok((idx, guard))
}

async fn run_mail(
    inner: &Arc<Inner>,
    req: &GraphRequest,
    idx: usize,
    mailbox_seg: &str,
    action: MailAction,
) -> GraphResult {
    let read_delay = Duration::from_millis(inner.config.read_delay_ms);
    match action {
        MailAction::Get { id, inbox_only } => {
            tokio::time::sleep(read_delay).await;
            mail::get(inner, req, idx, mailbox_seg, &id, inbox_only)
        }
        MailAction::Value { id, inbox_only } => {
            tokio::time::sleep(read_delay).await;
            mail::value(inner, idx, &id, inbox_only)
        }
        MailAction::Update { id } => mail::update(inner, req, idx, mailbox_seg, &id),
        MailAction::Delete { id } => mail::delete(inner, idx, &id),
        MailAction::Move { id } => mail::move_message(inner, req, idx, mailbox_seg, &id),
        MailAction::Reply { id } => mail::reply(inner, req, idx, &id),
        MailAction::Delta => delta::handle(inner, req, idx),
    }
}

/// axum entry for `/v1.0/*`.
async fn graph_entry(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        }
    };
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1.0")
        .unwrap_or("/")
        .to_string();
    let req = GraphRequest {
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        in_batch: false,
    };
    handle(&inner, req).await.into_axum()
}
