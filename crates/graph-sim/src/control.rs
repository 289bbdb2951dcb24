//! Unauthenticated `/_sim/...` control endpoints mirroring the
//! [`crate::GraphSim`] handle, so a person can drive a running simulator with
//! curl. Not part of Graph.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::state::Inner;
use crate::{DeliverOptions, GraphSim, LifecycleEvent};

type Params = Query<HashMap<String, String>>;

fn handle(inner: Arc<Inner>) -> GraphSim {
    GraphSim { inner }
}

/// `?duplicate`, `?duplicate=1` and `?duplicate=true` all mean yes.
fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true"))
}

fn options(q: &HashMap<String, String>) -> DeliverOptions {
    DeliverOptions {
        duplicate: flag(q, "duplicate"),
        bad_client_state: flag(q, "bad_client_state"),
        items_per_post: q
            .get("items_per_post")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        out_of_order: flag(q, "out_of_order"),
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/_sim/mailboxes", get(mailboxes))
        .route(
            "/_sim/mailboxes/{mb}/messages",
            post(deliver).get(list_messages),
        )
        .route(
            "/_sim/mailboxes/{mb}/messages/{id}",
            delete(delete_message).get(message_state),
        )
        .route("/_sim/throttle", post(throttle))
        .route("/_sim/pause", post(pause))
        .route("/_sim/resume", post(resume))
        .route("/_sim/subscriptions", get(subscriptions))
        .route("/_sim/subscriptions/{id}/lifecycle", post(lifecycle))
        .route("/_sim/delta/expire", post(expire_delta))
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(reset_stats))
        .route("/_sim/requests", get(requests))
        .route("/_sim/chats", get(chats))
}

async fn mailboxes(State(inner): State<Arc<Inner>>) -> Response {
    let st = inner.lock();
    let v: Vec<_> = st
        .mailboxes
        .iter()
        .map(|m| json!({"upn": m.upn, "id": m.id, "inboxId": m.inbox_id, "messages": m.messages.len()}))
        .collect();
    Json(v).into_response()
}

async fn deliver(
    State(inner): State<Arc<Inner>>,
    Path(mb): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let sim = handle(inner);
    if sim.user_id(&mb).is_none() {
        return error(StatusCode::NOT_FOUND, format!("unknown mailbox '{mb}'"));
    }
    Json(sim.deliver(&mb, body.to_vec(), options(&q)).await).into_response()
}

async fn list_messages(State(inner): State<Arc<Inner>>, Path(mb): Path<String>) -> Response {
    Json(handle(inner).message_ids(&mb)).into_response()
}

async fn delete_message(
    State(inner): State<Arc<Inner>>,
    Path((mb, id)): Path<(String, String)>,
) -> Response {
    if handle(inner).delete_message(&mb, &id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "unknown mailbox or message")
    }
}

async fn message_state(
    State(inner): State<Arc<Inner>>,
    Path((mb, id)): Path<(String, String)>,
) -> Response {
    match handle(inner).message_state(&mb, &id) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown mailbox or message"),
    }
}

async fn throttle(State(inner): State<Arc<Inner>>, Query(q): Params) -> Response {
    let requests = q.get("requests").and_then(|v| v.parse().ok()).unwrap_or(1);
    let retry_after = q
        .get("retry_after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    handle(inner).throttle(requests, retry_after);
    Json(json!({"requests": requests, "retry_after": retry_after})).into_response()
}

async fn pause(State(inner): State<Arc<Inner>>) -> Response {
    handle(inner).set_notifications_paused(true);
    Json(json!({"paused": true})).into_response()
}

async fn resume(State(inner): State<Arc<Inner>>) -> Response {
    handle(inner).set_notifications_paused(false);
    Json(json!({"paused": false})).into_response()
}

async fn subscriptions(State(inner): State<Arc<Inner>>) -> Response {
    Json(handle(inner).subscriptions()).into_response()
}

async fn lifecycle(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let raw = q.get("event").map(String::as_str).unwrap_or("missed");
    let Some(event) = LifecycleEvent::parse(raw) else {
        return error(
            StatusCode::BAD_REQUEST,
            "event must be missed, subscriptionRemoved or reauthorizationRequired",
        );
    };
    let sim = handle(inner);
    if !sim
        .subscriptions()
        .iter()
        .any(|s| s.id.eq_ignore_ascii_case(&id))
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown subscription '{id}'"),
        );
    }
    let status = sim.lifecycle(&id, event).await;
    Json(json!({"event": event.as_str(), "status": status})).into_response()
}

async fn expire_delta(State(inner): State<Arc<Inner>>) -> Response {
    handle(inner).expire_delta_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(inner): State<Arc<Inner>>) -> Response {
    Json(handle(inner).stats()).into_response()
}

async fn reset_stats(State(inner): State<Arc<Inner>>) -> Response {
    handle(inner).reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(State(inner): State<Arc<Inner>>) -> Response {
    Json(handle(inner).requests()).into_response()
}

async fn chats(State(inner): State<Arc<Inner>>) -> Response {
    Json(handle(inner).chats()).into_response()
}
