//! The Microsoft Graph client: client-credentials token (cached, refreshed
//! before expiry), `Prefer: IdType="ImmutableId"` on every call, retries
//! that honour `Retry-After` on 429/503 and back off exponentially with
//! jitter otherwise, at most `mailbox_concurrency` requests in flight per
//! mailbox, and metrics per operation. Tokens and secrets are never logged:
//! they live in [`Secret`]s and request headers only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mailroom_security::Secret;
use mailroom_telemetry::names;
use reqwest::{header, Method, StatusCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::{settings::Credential, GraphError, GraphSettings};

const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

/// What the last token request did, for `/health/detailed`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthStatus {
    pub last_success_ms: Option<i64>,
    pub token_expires_ms: Option<i64>,
    pub last_error: Option<String>,
    pub tokens_fetched: u64,
}

#[derive(Clone)]
struct CachedToken {
    value: Secret<String>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// A request to send: built fresh for every attempt.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: &'static str,
    pub method: Method,
    /// Absolute, or relative to the base URL.
    pub url: String,
    pub mailbox: Option<String>,
    pub body: Option<Value>,
    /// Extra `Prefer` preferences (`odata.maxpagesize=50`).
    pub prefer: Vec<String>,
}

impl Call {
    pub fn new(op: &'static str, method: Method, url: impl Into<String>) -> Self {
        Self {
            op,
            method,
            url: url.into(),
            mailbox: None,
            body: None,
            prefer: Vec::new(),
        }
    }

    pub fn mailbox(mut self, mailbox: &str) -> Self {
        self.mailbox = Some(mailbox.to_ascii_lowercase());
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn prefer(mut self, preference: impl Into<String>) -> Self {
        self.prefer.push(preference.into());
        self
    }
}

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: GraphSettings,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    auth: Mutex<AuthStatus>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.inner.settings.base_url)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenErrorReply {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl GraphClient {
    pub fn new(settings: GraphSettings) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings,
                token: tokio::sync::Mutex::new(None),
                auth: Mutex::new(AuthStatus::default()),
                slots: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.inner.settings
    }

    pub fn auth_status(&self) -> AuthStatus {
        self.inner
            .auth
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// A valid access token, fetched when none is cached or the cached one
    /// is near its end. One fetch at a time: concurrent callers wait for it
    /// instead of all asking Entra ID.
    async fn token(&self, force_refresh: bool) -> Result<Secret<String>, GraphError> {
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let now = Instant::now();
            if !force_refresh && now < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        match self.fetch_token().await {
            Ok(token) => {
                let value = token.value.clone();
                *cached = Some(token);
                Ok(value)
            }
            // Entra ID down but the old token still valid: keep using it.
            Err(e) => match cached.as_ref() {
                Some(old) if !force_refresh && Instant::now() < old.expires_at => {
                    warn!(error = %e, "token refresh failed; the current token is still valid");
                    Ok(old.value.clone())
                }
                _ => Err(e),
            },
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, GraphError> {
        let s = &self.inner.settings;
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            s.login_url.trim_end_matches('/'),
            s.tenant_id
        );
        let proof = match &s.credential {
            Credential::Secret(secret) => ("client_secret", secret.expose().clone()),
            Credential::Certificate(cert) => {
                ("client_assertion", cert.assertion(&s.client_id, &url)?)
            }
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", s.client_id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            (proof.0, proof.1.as_str()),
        ];
        if proof.0 == "client_assertion" {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let started = Instant::now();
        let result = self.inner.http.post(&url).form(&form).send().await;
        let outcome = match result {
            Err(e) => Err(GraphError::Exhausted {
                op: "token",
                attempts: 1,
                last: format!("token endpoint unreachable: {}", describe(&e)),
            }),
            Ok(resp) => {
                let status = resp.status();
                record_request("token", status.as_u16(), started.elapsed());
                if status.is_success() {
                    resp.json::<TokenReply>()
                        .await
                        .map_err(|e| GraphError::Protocol {
                            op: "token",
                            reason: format!("token reply: {}", describe(&e)),
                        })
                } else {
                    let body: TokenErrorReply = resp.json().await.unwrap_or_default();
                    Err(GraphError::TokenRefused {
                        status: status.as_u16(),
                        code: body.error,
                        description: first_line(&body.error_description),
                    })
                }
            }
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut auth = self
            .inner
            .auth
            .lock()
            .map_err(|_| GraphError::Config("auth status lock poisoned".into()))?;
        match outcome {
            Ok(reply) => {
                let lifetime = Duration::from_secs(reply.expires_in.max(1));
                // Refresh with a tenth of the lifetime left, at most five
                // minutes early: no request ever carries a dying token.
                let margin = (lifetime / 10).min(Duration::from_secs(300));
                let now = Instant::now();
                auth.last_success_ms = Some(now_ms);
                auth.token_expires_ms = Some(now_ms + lifetime.as_millis() as i64);
                auth.last_error = None;
                auth.tokens_fetched += 1;
                debug!(expires_in = reply.expires_in, "Graph token fetched");
                Ok(CachedToken {
                    value: Secret::new(reply.access_token),
                    refresh_at: now + lifetime - margin,
                    expires_at: now + lifetime,
                })
            }
            Err(e) => {
                metrics::counter!(names::GRAPH_API_ERRORS_TOTAL, "op" => "token", "reason" => "auth")
                    .increment(1);
                auth.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn slot(&self, mailbox: &str) -> Arc<Semaphore> {
        let mut slots = match self.inner.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(slots.entry(mailbox.to_string()).or_insert_with(|| {
            Arc::new(Semaphore::new(
                self.inner.settings.mailbox_concurrency.max(1),
            ))
        }))
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!(
                "{}/{}",
                self.inner.settings.base_url.trim_end_matches('/'),
                url.trim_start_matches('/')
            )
        }
    }

    /// Sends `call`, retrying throttling (429, 503, 504: after
    /// `Retry-After`, else exponential backoff with jitter), other server
    /// errors and network failures, and one 401 with a fresh token. Any
    /// other answer is returned as it came.
    pub async fn send(&self, call: &Call) -> Result<reqwest::Response, GraphError> {
        let s = &self.inner.settings;
        let url = self.absolute(&call.url);
        let mut prefer = vec![IMMUTABLE_IDS.to_string()];
        prefer.extend(call.prefer.iter().cloned());
        let prefer = prefer.join(", ");
        let mut refreshed = false;
        let mut last = String::new();
        for attempt in 1..=s.max_attempts.max(1) {
            let token = self.token(false).await?;
            let permit = match &call.mailbox {
                Some(mailbox) => Some(
                    self.slot(mailbox)
                        .acquire_owned()
                        .await
                        .map_err(|_| GraphError::Config("mailbox slots closed".into()))?,
                ),
                None => None,
            };
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), &url)
                .bearer_auth(token.expose())
                .header("Prefer", &prefer);
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let started = Instant::now();
            let result = request.send().await;
            drop(permit);
            let wait = match result {
                Ok(resp) => {
                    let status = resp.status();
                    record_request(call.op, status.as_u16(), started.elapsed());
                    if status == StatusCode::UNAUTHORIZED && !refreshed {
                        // A token revoked or expired early: one fresh try.
                        refreshed = true;
                        error_count(call.op, "auth");
                        self.token(true).await?;
                        continue;
                    }
                    let throttled = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if !throttled && !status.is_server_error() {
                        return Ok(resp);
                    }
                    error_count(call.op, if throttled { "throttled" } else { "server" });
                    last = format!("HTTP {}", status.as_u16());
                    retry_after(resp.headers())
                }
                Err(e) => {
                    record_request(call.op, 0, started.elapsed());
                    error_count(call.op, "network");
                    last = describe(&e);
                    None
                }
            };
            if attempt == s.max_attempts.max(1) {
                break;
            }
            let delay = wait
                .unwrap_or_else(|| backoff(attempt))
                .min(s.max_retry_wait);
            debug!(op = call.op, attempt, delay_ms = delay.as_millis() as u64, last = %last, "Graph request retried");
            tokio::time::sleep(delay).await;
        }
        Err(GraphError::Exhausted {
            op: call.op,
            attempts: s.max_attempts.max(1),
            last,
        })
    }

    /// Sends `call` and decodes a JSON success; a Graph error becomes
    /// [`GraphError::Status`] with Graph's code and message.
    pub async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, GraphError> {
        let resp = self.send(call).await?;
        let resp = error_for_status(call.op, resp).await?;
        resp.json::<T>().await.map_err(|e| GraphError::Protocol {
            op: call.op,
            reason: describe(&e),
        })
    }

    /// Sends `call` and checks for success, ignoring the body.
    pub async fn empty(&self, call: &Call) -> Result<(), GraphError> {
        let resp = self.send(call).await?;
        error_for_status(call.op, resp).await.map(|_| ())
    }

    /// Sends `call` and returns the successful response unread, to be
    /// read with [`read_limited`] (`Ok(None)` on 404: the item is gone).
    pub async fn open(&self, call: &Call) -> Result<Option<reqwest::Response>, GraphError> {
        let resp = self.send(call).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        error_for_status(call.op, resp).await.map(Some)
    }
}

/// Reads a body of at most `limit` bytes, refusing larger ones as soon as
/// they show (declared length, or the bytes that arrive).
pub async fn read_limited(
    op: &'static str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, GraphError> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(GraphError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| GraphError::Exhausted {
        op,
        attempts: 1,
        last: describe(&e),
    })? {
        if body.len() + chunk.len() > limit {
            return Err(GraphError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A Graph error body: `{"error": {"code", "message"}}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

async fn error_for_status(
    op: &'static str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, GraphError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status.is_client_error() {
        error_count(op, "client");
    }
    let body: ErrorBody = resp.json().await.unwrap_or_default();
    Err(GraphError::Status {
        op,
        status: status.as_u16(),
        code: body.error.code,
        message: first_line(&body.error.message),
    })
}

fn record_request(op: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(names::GRAPH_API_REQUESTS_TOTAL, "op" => op, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::GRAPH_API_REQUEST_DURATION_SECONDS, "op" => op)
        .record(elapsed.as_secs_f64());
}

fn error_count(op: &'static str, reason: &'static str) {
    metrics::counter!(names::GRAPH_API_ERRORS_TOTAL, "op" => op, "reason" => reason).increment(1);
}

/// `Retry-After` in seconds (Graph sends seconds, not dates).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// 200 ms doubled per attempt, at most 30 s, with full jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
    let jitter = (uuid::Uuid::now_v7().as_u128() % 1000) as u64;
    Duration::from_millis(ceiling / 2 + ceiling / 2 * jitter / 1000)
}

/// A reqwest error with its causes (URLs carry no secrets: the token
/// travels in a header).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let ceiling = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
            assert!(d.as_millis() as u64 >= ceiling / 2 && d.as_millis() as u64 <= ceiling);
        }
    }
}
