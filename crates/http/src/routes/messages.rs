use std::time::Duration;

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use mailroom_app::{
    actions,
    query::{self, ListQuery},
    AuditLog, Reservation, Source,
};
use mailroom_domain::MessageId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{auth::Caller, extract::ApiQuery, ApiError, AppState};
use http_body_util::BodyExt;

const ACCEPTED_TYPES: [&str; 3] = ["message/rfc822", "application/octet-stream", "text/plain"];

/// How much of an oversized body we read and discard so that a client that
/// does not wait for `100 Continue` still receives the 413 instead of a
/// broken pipe. Past this (or the drain timeout) the connection is dropped.
const OVERSIZE_DRAIN_BYTES: usize = 64 * 1024 * 1024;
const OVERSIZE_DRAIN_TIME: Duration = Duration::from_secs(30);

/// `POST /api/v1/messages`: raw RFC 5322 in, 202 once durably stored.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_raw_content_type(&headers)?;
    // Held until the message is stored.
    let (_reservation, raw) = read_raw_body(&state, &headers, body).await?;
    let receipt = state.ingest.ingest(raw, Source::Api).await?;
    let location = format!("/api/v1/messages/{}", receipt.id);
    let (status, payload) = if receipt.duplicate {
        (
            StatusCode::OK,
            json!({"id": receipt.id, "status": "duplicate", "duplicate": true}),
        )
    } else {
        (
            StatusCode::ACCEPTED,
            json!({"id": receipt.id, "status": "queued", "duplicate": false}),
        )
    };
    Ok((status, [(header::LOCATION, location)], Json(payload)).into_response())
}

/// Reads at most `limit` bytes of body. Memory stays bounded by the limit
/// whatever the client sends.
/// Raw-message endpoints take message/rfc822 (or octet-stream, text/plain);
/// no Content-Type at all is accepted too (curl --data-binary).
pub(crate) fn check_raw_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !ACCEPTED_TYPES.contains(&essence.as_str()) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{essence}` is not accepted; send the raw message as message/rfc822 (or application/octet-stream, text/plain)"
            )));
        }
    }
    Ok(())
}

/// Reads a raw message body under the ingest limit. Room for the whole
/// body is reserved in the ingest memory budget before a byte is read;
/// callers hold the reservation for as long as they hold the bytes.
pub(crate) async fn read_raw_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Reservation, Vec<u8>), ApiError> {
    let limit = state.ingest.max_bytes();
    let reservation = state
        .ingest
        .reserve(declared_length(headers).unwrap_or(limit))
        .await?;
    let raw = read_limited(body, headers, limit).await?;
    Ok((reservation, raw))
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

async fn read_limited(
    mut body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body exceeds the limit of {limit} bytes"));
    let declared = declared_length(headers);
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared.is_some_and(|n| n > limit && (expects_continue || n - limit > OVERSIZE_DRAIN_BYTES))
    {
        // The client has not sent the body yet (or it is absurdly large):
        // answer without reading it.
        return Err(too_large());
    }
    let mut buffer = Vec::with_capacity(declared.unwrap_or(16 * 1024).min(limit));
    let mut overflow = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::InvalidParameter(format!("the request body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if overflow == 0 && buffer.len() + data.len() <= limit {
                buffer.extend_from_slice(&data);
                continue;
            }
            if overflow == 0 {
                buffer = Vec::new();
            }
            overflow += data.len();
            if overflow > OVERSIZE_DRAIN_BYTES {
                break;
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(OVERSIZE_DRAIN_TIME, read).await {
        Ok(result) => result?,
        Err(_) if overflow > 0 => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::InvalidParameter(
                "the request body did not arrive in time".into(),
            ))
        }
    }
    if overflow > 0 {
        return Err(too_large());
    }
    Ok(buffer)
}

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    status: Option<String>,
    from: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/messages`: newest first, cursor-paginated.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let filter = ListQuery {
        status: p.status,
        from: p.from,
        since: p.since,
        until: p.until,
        q: p.q,
        cursor: p.cursor,
        limit: p.limit,
    }
    .filter()?;
    let page = state.store.list_messages(&filter).await?;
    // A search over sealed bodies costs one token per 500 bodies opened.
    crate::auth::charge(&state, &caller, (page.opened / 500) as u32).await;
    Ok(Json(json!({
        "items": page.items.iter().map(query::summary_json).collect::<Vec<_>>(),
        "next_cursor": page.next,
    })))
}

/// `GET /api/v1/messages/{id}`: parsed view, status, job and history.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let record = state
        .store
        .message(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let body = query::detail_json(&record);
    Ok(Json(body))
}

/// `GET /api/v1/messages/{id}/raw`: the bytes as received.
pub async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let raw = state
        .store
        .raw_message(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], raw).into_response())
}

/// `DELETE /api/v1/messages/{id}`: erases the message and all derived data.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if state.store.delete_message(&id).await? {
        tracing::info!(message_id = %id, "message deleted");
        state
            .audit
            .record(AuditLog::event(
                &caller.actor(),
                actions::MESSAGE_DELETE,
                "success",
                Some(id.as_str()),
                None,
            ))
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

fn parse_id(raw: &str) -> Result<MessageId, ApiError> {
    Ok(query::message_id(raw)?)
}

fn not_found(id: &MessageId) -> ApiError {
    ApiError::NotFound(format!("no message with id {id}"))
}
