//! `GET /api/v1/audit`: the audit trail, newest first.

use axum::{extract::State, Json};
use mailroom_store::AuditFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    extract::ApiQuery,
    json::{parse_time_ms, rfc3339},
    ApiError, AppState,
};

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
    let text = |name: &str, v: Option<String>| -> Result<Option<String>, ApiError> {
        match v.filter(|v| !v.trim().is_empty()) {
            Some(v) if v.len() > 200 || v.chars().any(char::is_control) => Err(
                ApiError::InvalidParameter(format!("{name}: at most 200 printable characters")),
            ),
            other => Ok(other),
        }
    };
    let time = |name: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        v.map(|raw| {
            parse_time_ms(&raw).ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "{name}: `{raw}` is not an RFC 3339 time, a YYYY-MM-DD date or Unix seconds"
                ))
            })
        })
        .transpose()
    };
    let outcome = text("outcome", p.outcome)?;
    if let Some(o) = &outcome {
        if !["success", "failure", "denied"].contains(&o.as_str()) {
            return Err(ApiError::InvalidParameter(
                "outcome: expected success, failure or denied".into(),
            ));
        }
    }
    let limit = match p.limit.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!("limit: `{raw}` is not a number from 1 to 500"))
            })?,
    };
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
            since_ms: time("since", p.since)?,
            until_ms: time("until", p.until)?,
            before,
            limit,
        })
        .await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "at": rfc3339(e.at_ms), "action": e.action, "outcome": e.outcome,
                "actor": e.actor, "ip": e.ip, "target": e.target, "details": e.details,
            })
        })
        .collect();
    Ok(Json(
        json!({"items": items, "next_cursor": page.next.map(|n| n.to_string())}),
    ))
}
