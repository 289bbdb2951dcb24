//! `/api/v1/keys`: the same key management as `mailroom keys`, for admin
//! keys.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    http::StatusCode,
    Extension, Json,
};
use mailroom_app::KeyInfo;
use mailroom_security::{parse_duration, Scopes};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{auth::Caller, json::rfc3339, ApiError, AppState};

/// Largest body accepted by these routes.
pub const BODY_LIMIT: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    /// `["read","write"]` or `"read,write"`.
    scopes: ScopesField,
    /// `90d`, `24h`…; absent: never expires.
    expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScopesField {
    List(Vec<String>),
    Text(String),
}

impl ScopesField {
    fn parse(&self) -> Result<Scopes, ApiError> {
        let text = match self {
            ScopesField::List(items) => items.join(","),
            ScopesField::Text(t) => t.clone(),
        };
        text.parse()
            .map_err(|e| ApiError::InvalidParameter(format!("scopes: {e}")))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old key keeps working; default 24h.
    overlap: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let body = body.map_err(super::small_body_error)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        if let Some(default) = empty {
            return Ok(default);
        }
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidJson(format!("expected {shape}: {e}")))
}

pub fn info_json(k: &KeyInfo) -> Value {
    json!({
        "id": k.id, "name": k.name, "prefix": k.prefix, "scopes": k.scopes,
        "status": k.status, "source": k.source,
        "created_at": (k.created_at_ms > 0).then(|| rfc3339(k.created_at_ms)).flatten(),
        "expires_at": k.expires_at_ms.and_then(rfc3339),
        "revoked_at": k.revoked_at_ms.and_then(rfc3339),
        "last_used_at": k.last_used_at_ms.and_then(rfc3339),
        "replaced_by": k.replaced_by, "created_by": k.created_by,
    })
}

/// `GET /api/v1/keys`: every key, never a secret.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = state.keys.list().await?;
    Ok(Json(
        json!({"items": keys.iter().map(info_json).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/v1/keys`: `{"name", "scopes", "expires_in"?}` → 201 with the
/// key, shown this once.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateRequest = parse_body(
        body,
        r#"{"name": "ci", "scopes": ["read"], "expires_in": "90d"}"#,
        None,
    )?;
    let scopes = request.scopes.parse()?;
    let expires_in = request
        .expires_in
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| ApiError::InvalidParameter(format!("expires_in: {e}")))?;
    let issued = state
        .keys
        .create(&request.name, scopes, expires_in, &caller.actor())
        .await?;
    let mut body = info_json(&issued.info);
    body["key"] = json!(issued.secret.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

/// `POST /api/v1/keys/{id}/rotate`: `{"overlap": "24h"}` → 201 with the new
/// key; the old one works until the overlap ends.
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(selector): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: RotateRequest = parse_body(
        body,
        r#"{"overlap": "24h"}"#,
        Some(RotateRequest::default()),
    )?;
    let overlap = parse_duration(request.overlap.as_deref().unwrap_or("24h"))
        .map_err(|e| ApiError::InvalidParameter(format!("overlap: {e}")))?;
    let (issued, old) = state
        .keys
        .rotate(&selector, overlap, &caller.actor())
        .await?;
    let mut body = info_json(&issued.info);
    body["key"] = json!(issued.secret.expose());
    body["previous"] = info_json(&old);
    Ok((StatusCode::CREATED, Json(body)))
}

/// `DELETE /api/v1/keys/{id}`: revokes at once (an id or prefix names one
/// key; a name every live key of that name).
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(selector): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state.keys.revoke(&selector, &caller.actor()).await?;
    Ok(Json(
        json!({"revoked": revoked.iter().map(info_json).collect::<Vec<_>>()}),
    ))
}
