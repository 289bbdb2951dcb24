use std::{sync::atomic::Ordering::Relaxed, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use mailroom_app::{actions, now_ms, start_of_utc_day_ms, AuditLog, ProcessStatus};
use mailroom_domain::{JobState, MessageId, MessageStatus};
use mailroom_store::RequeueFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{auth::Caller, extract::ApiQuery, json::rfc3339, ApiError, AppState};

/// Queue age beyond which the queue is reported degraded.
const QUEUE_AGE_DEGRADED_SECONDS: f64 = 300.0;

/// `GET /health`: liveness only, no I/O.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /health/ready`: the database answers and is fully migrated.
pub async fn ready(State(state): State<AppState>) -> Response {
    let db = state.store.health().await;
    let ready = db.reachable && db.migrations_applied;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": {"reachable": db.reachable, "migrations_applied": db.migrations_applied, "error": db.error},
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /health/detailed`: one entry per component, each with a status and
/// the latency of its probe. 503 when any component is unhealthy.
pub async fn detailed(State(state): State<AppState>) -> Response {
    let db = state.store.health().await;
    let database_status = match (db.reachable, db.migrations_applied) {
        (true, true) => "healthy",
        _ => "unhealthy",
    };
    let database = json!({
        "status": database_status,
        "latency_ms": db.latency.as_secs_f64() * 1000.0,
        "backend": state.store.backend().as_str(),
        "migrations_applied": db.migrations_applied,
        "connections_active": state.store.connections_active(),
        "error": db.error,
    });

    let started = Instant::now();
    let queue = match state.store.queue_stats(now_ms()).await {
        Ok(q) => json!({
            "status": if q.oldest_age_seconds > QUEUE_AGE_DEGRADED_SECONDS || q.dead > 0 { "degraded" } else { "healthy" },
            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
            "depth": q.depth, "oldest_age_seconds": q.oldest_age_seconds,
            "queued": q.queued, "leased": q.leased, "retrying": q.retrying, "dead": q.dead,
        }),
        Err(e) => {
            json!({"status": "unhealthy", "latency_ms": started.elapsed().as_secs_f64() * 1000.0, "error": e.to_string()})
        }
    };

    let w = &state.workers;
    let (configured, running) = (w.configured.load(Relaxed), w.running.load(Relaxed));
    let last = w.last_activity_ms.load(Relaxed) as i64;
    let workers = json!({
        "status": if running == configured && configured > 0 { "healthy" } else if running > 0 { "degraded" } else { "unhealthy" },
        "latency_ms": 0.0,
        "configured": configured, "running": running, "busy": w.busy.load(Relaxed),
        "processed_since_start": w.processed.load(Relaxed), "failed_since_start": w.failed.load(Relaxed),
        "last_activity_at": (last > 0).then(|| rfc3339(last)).flatten(),
        "pipeline": state.pipeline_stages,
    });

    let rate_limiter = match &state.limiter {
        Some(limiter) => {
            let h = limiter.health().await;
            json!({
                "status": h.status, "latency_ms": h.latency.as_secs_f64() * 1000.0,
                "backend": h.backend, "on_redis_failure": h.policy, "error": h.error,
            })
        }
        None => json!({"status": "disabled", "latency_ms": 0.0}),
    };
    let encryption = match state.store.keyring() {
        Some(ring) => json!({
            "status": "healthy", "latency_ms": 0.0, "algorithm": "AES-256-GCM",
            "current_key_id": ring.current_id().as_str(),
            "key_ids": ring.key_ids().iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        }),
        None => json!({
            "status": "disabled", "latency_ms": 0.0,
            "warning": "no data key is configured: mail is stored unencrypted",
        }),
    };
    let auth = json!({
        "status": if state.security.auth_required { "healthy" } else { "disabled" },
        "latency_ms": 0.0,
        "ops_endpoints_open": state.security.ops_open,
    });

    // `disabled` is a configuration, not a fault: it does not lower the
    // overall status (start-up logs warn about it loudly).
    let statuses = [&database, &queue, &workers, &rate_limiter]
        .map(|c| c["status"].as_str().unwrap_or("unhealthy").to_string());
    let extras = match &state.health_extras {
        Some(extras) => extras().await,
        None => Vec::new(),
    };
    let extras_degraded = extras
        .iter()
        .any(|(_, c)| matches!(c["status"].as_str(), Some("unhealthy" | "degraded")));
    let overall = if statuses.iter().any(|s| s == "unhealthy") {
        "unhealthy"
    } else if extras_degraded || statuses.iter().any(|s| s == "degraded") {
        "degraded"
    } else {
        "healthy"
    };
    let mut components = json!({
        "database": database, "queue": queue, "workers": workers,
        "rate_limiter": rate_limiter, "encryption": encryption, "auth": auth,
    });
    for (name, component) in extras {
        components[name] = component;
    }
    let body = json!({
        "status": overall,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "encryption": encryption["status"],
        "components": components,
    });
    let code = if overall == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// `GET /process/status`: the EmailBot monitoring shape.
pub async fn process_status(
    State(state): State<AppState>,
) -> Result<Json<ProcessStatus>, ApiError> {
    let now = now_ms();
    let today = state
        .store
        .processing_stats(start_of_utc_day_ms(now))
        .await?;
    let queue = state.store.queue_stats(now).await?;
    Ok(Json(ProcessStatus::from_stats(
        &today,
        queue,
        &state.workers,
    )))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    status: Vec<String>,
}

/// `POST /process/trigger`: wakes the workers and re-queues failed and dead
/// jobs, optionally only `ids` and/or only `status` (`failed`, `dead`).
pub async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(super::small_body_error)?;
    let request: TriggerRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::InvalidJson(format!(
                "expected {{\"ids\": [...], \"status\": [\"failed\", \"dead\"]}}: {e}"
            ))
        })?
    };
    let message_ids = request
        .ids
        .iter()
        .map(|id| MessageId::parse(id).map_err(|e| ApiError::InvalidParameter(format!("ids: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let statuses = request
        .status
        .iter()
        .map(|s| match s.parse::<MessageStatus>() {
            Ok(st @ (MessageStatus::Failed | MessageStatus::Dead)) => Ok(st),
            _ => Err(ApiError::InvalidParameter(format!(
                "status: `{s}` cannot be re-queued; use failed or dead"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requeued = mailroom_app::requeue_and_wake(
        &state.store,
        &state.wake,
        &RequeueFilter {
            message_ids,
            statuses,
        },
    )
    .await?;
    tracing::info!(requeued = requeued.len(), "processing triggered");
    state
        .audit
        .record(AuditLog::event(
            &caller.actor(),
            actions::PROCESS_TRIGGER,
            "success",
            None,
            Some(json!({"requeued": requeued.len()})),
        ))
        .await?;
    Ok(Json(
        json!({"triggered": true, "requeued": requeued.len(), "ids": requeued}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct JobsParams {
    state: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/jobs?state=dead`: jobs in one state (dead by default).
pub async fn jobs(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> Result<Json<Value>, ApiError> {
    let job_state = p
        .state
        .as_deref()
        .unwrap_or("dead")
        .parse::<JobState>()
        .ok()
        .filter(|s| *s != JobState::Done)
        .ok_or_else(|| {
            ApiError::InvalidParameter("state: expected queued, leased or dead".into())
        })?;
    let jobs = state
        .store
        .jobs_in_state(job_state, p.limit.unwrap_or(100))
        .await?;
    let items: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "id": j.id, "message_id": j.message_id, "state": j.state, "attempts": j.attempts,
                "run_at": rfc3339(j.run_at_ms), "lease_until": j.lease_until_ms.and_then(rfc3339),
                "last_error": j.last_error, "created_at": rfc3339(j.created_at_ms), "updated_at": rfc3339(j.updated_at_ms),
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    mailroom_telemetry::collect_process_metrics();
    metrics::gauge!(mailroom_telemetry::names::DATABASE_CONNECTIONS_ACTIVE)
        .set(f64::from(state.store.connections_active()));
    metrics::gauge!(mailroom_telemetry::names::WORKERS_BUSY)
        .set(state.workers.busy.load(Relaxed) as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`: RFC 9728 metadata of
/// the MCP endpoint. mailroom's API keys are bearer tokens issued by
/// `mailroom keys create`, not by an OAuth server, so none is listed.
pub async fn mcp_resource_metadata(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Json<Value> {
    let base = super::base_url(&state, &headers);
    Json(json!({
        "resource": format!("{base}{}", super::MCP_PATH),
        "resource_name": "mailroom",
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["read", "write", "admin"],
    }))
}
