//! HTTP surface of the Graph source, mounted by the binary inside the
//! API server's guard: `POST /webhook` (and `/webhook/lifecycle`) for
//! Graph, `GET /api/v1/subscriptions` for operators.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{rejection::QueryRejection, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{TimeZone, Utc};
use mailroom_app::now_ms;
use mailroom_telemetry::names;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use crate::{api::NotificationCollection, manager::OWNER_LEASE, GraphSource};

pub const WEBHOOK_PATH: &str = "/webhook";
pub const LIFECYCLE_PATH: &str = "/webhook/lifecycle";
pub const SUBSCRIPTIONS_PATH: &str = "/api/v1/subscriptions";

/// Graph wants an answer within 3 s; past this the POST is refused with
/// 503 so Graph retries it (nothing is lost: the queue deduplicates).
const ACK_DEADLINE: Duration = Duration::from_millis(2500);
/// Most items accepted in one POST (Graph sends far fewer).
const MAX_ITEMS: usize = 1000;
/// Longest validation token echoed (Graph's are about 100 characters).
const MAX_VALIDATION_TOKEN: usize = 1024;

/// The routes, for `mailroom-http::router_with`.
pub fn router<S: Clone + Send + Sync + 'static>(source: Arc<GraphSource>) -> Router<S> {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .route(LIFECYCLE_PATH, post(webhook))
        .route(SUBSCRIPTIONS_PATH, get(subscriptions))
        .with_state(source)
}

#[derive(Debug, Deserialize)]
struct WebhookQuery {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn outcome(outcome: &'static str) {
    metrics::counter!(names::WEBHOOK_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
}

async fn webhook(
    State(source): State<Arc<GraphSource>>,
    query: Result<Query<WebhookQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            outcome("invalid");
            return error(StatusCode::BAD_REQUEST, "invalid_parameter", e.body_text());
        }
    };
    // The validation handshake: the token, URL-decoded, as plain text.
    if let Some(token) = query.validation_token {
        if token.len() > MAX_VALIDATION_TOKEN {
            outcome("invalid");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                "validationToken is too long",
            );
        }
        outcome("validation");
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            token,
        )
            .into_response();
    }
    let collection: NotificationCollection = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            outcome("invalid");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_notification",
                format!("the body is not a Graph notification collection: {e}"),
            );
        }
    };
    if collection.value.len() > MAX_ITEMS {
        outcome("invalid");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("at most {MAX_ITEMS} notifications per request"),
        );
    }
    match tokio::time::timeout(ACK_DEADLINE, source.intake.accept(collection)).await {
        Ok(Ok(result)) => {
            outcome(
                if result.accepted() > 0
                    || result.bad_client_state + result.unknown_subscription == 0
                {
                    "accepted"
                } else {
                    "rejected"
                },
            );
            // 202 whatever the items were: a forger learns nothing.
            StatusCode::ACCEPTED.into_response()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot queue Graph notifications");
            outcome("unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "notifications could not be stored; retry",
            )
        }
        Err(_) => {
            outcome("unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "notifications could not be stored in time; retry",
            )
        }
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(crate::api::graph_time)
}

async fn subscriptions(State(source): State<Arc<GraphSource>>) -> Response {
    match source.subscriptions_view().await {
        Ok(view) => Json(view).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot read the subscriptions");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database cannot be reached",
            )
        }
    }
}

impl GraphSource {
    /// What `GET /api/v1/subscriptions` shows: every configured mailbox's
    /// subscription and its state, the owner, the fetch queue.
    pub async fn subscriptions_view(&self) -> Result<Value, crate::GraphError> {
        let now = now_ms();
        let renew_before = self.client.settings().renew_before.as_millis() as i64;
        let stored = self.store.graph_subscriptions().await?;
        let mut rows = Vec::new();
        for mailbox in &self.client.settings().mailboxes {
            let record = stored
                .iter()
                .find(|r| r.mailbox.eq_ignore_ascii_case(mailbox));
            rows.push(match record {
                Some(r) => json!({
                    "mailbox": r.mailbox,
                    "subscription_id": r.subscription_id,
                    "resource": r.resource,
                    "status": if r.expires_at_ms <= now { "expired" } else if r.expires_at_ms - now < renew_before { "renewal_due" } else { "active" },
                    "expires_at": rfc3339(r.expires_at_ms),
                    "created_at": rfc3339(r.created_at_ms),
                    "renewed_at": r.renewed_at_ms.and_then(rfc3339),
                    "last_error": r.last_error,
                }),
                None => json!({"mailbox": mailbox, "status": "missing"}),
            });
        }
        let owner = self
            .store
            .lease_holder(OWNER_LEASE)
            .await?
            .filter(|(_, until)| *until > now)
            .map(|(holder, until)| json!({"holder": holder, "lease_expires_at": rfc3339(until)}));
        let delta = self
            .store
            .delta_sync_times()
            .await?
            .into_iter()
            .map(|(mailbox, folder, at)| json!({"mailbox": mailbox, "folder": folder, "synced_at": at.and_then(rfc3339)}))
            .collect::<Vec<_>>();
        Ok(json!({
            "subscriptions": rows,
            "owner": owner,
            "this_replica": self.holder,
            "notifications": self.store.notified_counts().await?,
            "delta": delta,
        }))
    }

    /// The `m365_auth` and `graph_subscriptions` components of
    /// `/health/detailed`.
    pub async fn health(&self) -> Vec<(String, Value)> {
        let auth = self.client.auth_status();
        let now = now_ms();
        let token_valid = auth.token_expires_ms.is_some_and(|t| t > now);
        let auth_status = match (&auth.last_error, token_valid) {
            (None, _) => "healthy",
            (Some(_), true) => "degraded",
            (Some(_), false) => "unhealthy",
        };
        let m365_auth = json!({
            "status": auth_status,
            "latency_ms": 0.0,
            "tenant_id": self.client.settings().tenant_id,
            "client_id": self.client.settings().client_id,
            "token_valid": token_valid,
            "token_expires_at": auth.token_expires_ms.and_then(rfc3339),
            "last_token_at": auth.last_success_ms.and_then(rfc3339),
            "tokens_fetched": auth.tokens_fetched,
            "error": auth.last_error,
        });
        let started = std::time::Instant::now();
        let subscriptions = match self.store.graph_subscriptions().await {
            Ok(stored) => {
                let mailboxes = &self.client.settings().mailboxes;
                let active = mailboxes
                    .iter()
                    .filter(|m| {
                        stored
                            .iter()
                            .any(|r| r.mailbox.eq_ignore_ascii_case(m) && r.expires_at_ms > now)
                    })
                    .count();
                json!({
                    "status": if active == mailboxes.len() { "healthy" } else { "degraded" },
                    "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
                    "mailboxes": mailboxes.len(),
                    "active": active,
                    "next_expiry_at": stored.iter().map(|r| r.expires_at_ms).min().and_then(rfc3339),
                })
            }
            Err(e) => {
                json!({"status": "unhealthy", "latency_ms": started.elapsed().as_secs_f64() * 1000.0, "error": e.to_string()})
            }
        };
        vec![
            ("m365_auth".to_string(), m365_auth),
            ("graph_subscriptions".to_string(), subscriptions),
        ]
    }
}
