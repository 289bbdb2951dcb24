//! The downstream outbox: `GET /api/v1/submissions` (deliveries in a
//! state, dead by default, with the counts) and
//! `POST /api/v1/submissions/retry` (dead deliveries queued again).

use axum::{extract::State, Extension, Json};
use mailroom_app::{actions, now_ms, AuditLog};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{auth::Caller, extract::ApiQuery, json::rfc3339, ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionsParams {
    state: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<SubmissionsParams>,
) -> Result<Json<Value>, ApiError> {
    let wanted = p.state.as_deref().unwrap_or("dead");
    if !["queued", "leased", "delivered", "dead"].contains(&wanted) {
        return Err(ApiError::InvalidParameter(
            "state: expected queued, leased, delivered or dead".into(),
        ));
    }
    let limit = match p.limit {
        Some(n @ 1..=500) => n,
        None => 100,
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "limit: expected 1 to 500".into(),
            ))
        }
    };
    let rows = state.store.submissions(wanted, limit).await?;
    let counts = state.store.submission_counts().await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "message_id": s.message_id, "endpoint": s.endpoint, "state": s.state,
                "attempts": s.attempts, "created_at": rfc3339(s.created_at_ms),
                "finished_at": s.finished_at_ms.and_then(rfc3339),
                "last_status": s.last_status, "last_error": s.last_error,
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "counts": counts})))
}

pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let requeued = state.store.requeue_dead_submissions(now_ms()).await?;
    state
        .audit
        .record(AuditLog::event(
            &caller.actor(),
            actions::SUBMISSION_RETRY,
            "success",
            None,
            Some(json!({"requeued": requeued})),
        ))
        .await?;
    Ok(Json(json!({"requeued": requeued})))
}
