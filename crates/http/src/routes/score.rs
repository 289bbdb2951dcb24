//! Scoring surfaces: `POST /api/v1/score` (native), `POST /checkv2`
//! (rspamd's scan protocol, so MTAs and tools that speak to rspamd can use
//! mailroom), `POST /api/v1/learn/{ham|spam}` (online learning).
//!
//! Nothing here is stored: the message is read within the ingest memory
//! budget, scored on the blocking pool and dropped.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, State},
    http::HeaderMap,
    Extension, Json,
};
use mailroom_app::{actions, query::text_param, AuditLog, Reservation, ScoringError};
use mailroom_domain::{Action, ScoreReport};
use mailroom_score::{Envelope, Label, ScoreError};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    auth::Caller,
    extract::ApiQuery,
    routes::messages::{check_raw_content_type, read_raw_body},
    ApiError, AppState,
};

impl From<ScoringError> for ApiError {
    fn from(e: ScoringError) -> Self {
        match e {
            ScoringError::Score(ScoreError::UnknownProfile(p)) => {
                ApiError::InvalidParameter(format!("unknown settings profile `{p}`"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Reads a raw message the way ingest does (same limit, same memory
/// budget, same refusals of empty and non-mail bodies). The reservation
/// must be held until scoring is done.
async fn read_message(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    rspamd_client: bool,
) -> Result<(Reservation, Arc<Vec<u8>>), ApiError> {
    // rspamd clients send whatever Content-Type their HTTP library picks
    // (curl's form default included): the scan protocol ignores it.
    if !rspamd_client {
        check_raw_content_type(headers)?;
    }
    let (reservation, raw) = read_raw_body(state, headers, body).await?;
    mailroom_mail::check_ingestible(&raw)?;
    Ok((reservation, Arc::new(raw)))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The SMTP envelope from rspamd's request headers (`IP`, `Helo`,
/// `From`, `Rcpt` — repeated for several recipients — `Hostname`).
fn envelope(headers: &HeaderMap) -> Result<Envelope, ApiError> {
    let client_ip = match header_text(headers, "ip") {
        None => None,
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
            ApiError::InvalidParameter(format!("header IP: `{ip}` is not an IP address"))
        })?),
    };
    Ok(Envelope {
        client_ip,
        helo: header_text(headers, "helo"),
        hostname: header_text(headers, "hostname"),
        mail_from: header_text(headers, "from"),
        user: header_text(headers, "user"),
        rcpt: headers
            .get_all("rcpt")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .take(1000)
            .collect(),
    })
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    profile: Option<String>,
}

/// `POST /api/v1/score[?profile=NAME]`: the full [`ScoreReport`].
pub async fn score(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ScoreParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ScoreReport>, ApiError> {
    let profile = text_param("profile", query.profile, 64)?;
    let envelope = envelope(&headers)?;
    let (_reservation, raw) = read_message(&state, &headers, body, false).await?;
    let report = state.scoring.score_async(raw, envelope, profile).await?;
    Ok(Json(report))
}

#[derive(Serialize)]
struct RspamdSymbol<'a> {
    name: &'a str,
    score: f64,
    metric_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    options: &'a [String],
}

/// rspamd's reply to `/checkv2`, from a report.
fn rspamd_reply(report: &ScoreReport, message_id: Option<&str>, started: f64) -> Value {
    let symbols: BTreeMap<&str, RspamdSymbol> = report
        .symbols
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                RspamdSymbol {
                    name: &s.name,
                    score: s.score,
                    metric_score: s.score,
                    description: (!s.description.is_empty()).then_some(s.description.as_str()),
                    options: &s.options,
                },
            )
        })
        .collect();
    // The headers rspamd's milter would add: the MTA applies them.
    let mut add_headers = serde_json::Map::new();
    let mut remove_headers = serde_json::Map::new();
    remove_headers.insert("X-Spam".into(), json!(0));
    remove_headers.insert("X-Spam-Status".into(), json!(0));
    let yes_no = if report.is_spam { "Yes" } else { "No" };
    add_headers.insert(
        "X-Spam-Status".into(),
        json!({
            "value": format!("{yes_no}, score={:.2} required={:.2}", report.score, report.required_score),
            "order": 0
        }),
    );
    if report.action >= Action::AddHeader {
        add_headers.insert("X-Spam".into(), json!({"value": "Yes", "order": 0}));
    }
    let mut reply = json!({
        "is_skipped": false,
        "score": report.score,
        "required_score": report.required_score,
        "action": report.action.as_str(),
        "symbols": symbols,
        "messages": {},
        "time_real": started,
        "milter": {
            "add_headers": add_headers,
            "remove_headers": remove_headers,
        },
    });
    if let Some(id) = message_id {
        reply["message-id"] = json!(id);
    }
    if let Some(subject) = &report.subject {
        reply["subject"] = json!(subject);
    }
    reply
}

/// `POST /checkv2`: rspamd's scan protocol. `Settings-ID` picks the
/// settings profile (rspamd's settings id).
pub async fn checkv2(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let profile = header_text(&headers, "settings-id");
    let envelope = envelope(&headers)?;
    let (_reservation, raw) = read_message(&state, &headers, body, true).await?;
    let message_id = mailroom_app::header_message_id(&raw);
    let report = state.scoring.score_async(raw, envelope, profile).await?;
    let seconds = report.scan_time_us as f64 / 1e6;
    Ok(Json(rspamd_reply(&report, message_id.as_deref(), seconds)))
}

/// `POST /api/v1/learn/{ham|spam}`: one online update of the live model,
/// persisted before the answer.
pub async fn learn(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let label = match label.as_str() {
        "ham" => Label::Ham,
        "spam" => Label::Spam,
        other => {
            return Err(ApiError::NotFound(format!(
                "no route for /api/v1/learn/{other}: learn `ham` or `spam`"
            )))
        }
    };
    let (_reservation, raw) = read_message(&state, &headers, body, false).await?;
    let scoring = Arc::clone(&state.scoring);
    let info = tokio::task::spawn_blocking(move || scoring.learn(&raw, label))
        .await
        .map_err(|e| ApiError::Internal(format!("learning task failed: {e}")))??;
    state
        .audit
        .record(AuditLog::event(
            &caller.actor(),
            actions::MODEL_LEARN,
            "success",
            Some(label.as_str()),
            Some(json!({ "model": info.version, "online_updates": info.online_updates })),
        ))
        .await?;
    Ok(Json(mailroom_app::learned_json(label, &info)))
}
