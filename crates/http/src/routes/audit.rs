//! `GET /api/v1/audit`: the audit trail, newest first.

use axum::{extract::State, Json};
use mailroom_store::AuditFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use mailroom_app::query::{limit_param, text_param, time_param};

use crate::{extract::ApiQuery, json::rfc3339, ApiError, AppState};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    action: Option<String>,
    actor: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Filters: `action` (exact, or a prefix such as `key.*`), `actor` (a key
/// prefix, `cli:<user>`), `outcome` (success, failure, denied), `since`,
/// `until`, `limit` (1–500, default 100), `cursor`.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let text = |name: &str, v: Option<String>| text_param(name, v, 200);
    let outcome = text("outcome", p.outcome)?;
    if let Some(o) = &outcome {
        if !["success", "failure", "denied"].contains(&o.as_str()) {
            return Err(ApiError::InvalidParameter(
                "outcome: expected success, failure or denied".into(),
            ));
        }
    }
    let limit = limit_param(p.limit.as_deref(), 100, 500)?;
    let before = p
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::InvalidParameter("cursor: not a cursor from this API".into())
            })
        })
        .transpose()?;
    let page = state
        .store
        .audit_entries(&AuditFilter {
            action: text("action", p.action)?,
            actor: text("actor", p.actor)?,
            outcome,
            since_ms: time_param("since", p.since.as_deref())?,
            until_ms: time_param("until", p.until.as_deref())?,
            before,
            limit,
        })
        .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|entry| {
            let e = &entry.event;
            json!({
                "id": entry.id, "at": rfc3339(e.at_ms), "action": e.action, "outcome": e.outcome,
                "actor": e.actor, "ip": e.ip, "target": e.target, "details": e.details,
            })
        })
        .collect();
    Ok(Json(
        json!({"items": items, "next_cursor": page.next.map(|n| n.to_string())}),
    ))
}
