//! Observability plumbing: metric names in one place, the Prometheus
//! recorder, process metrics and the tracing subscriber.
//!
//! Invariant: knows nothing about HTTP routes, SQL or mail; other crates
//! record through the `metrics` facade with the names defined here.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names the seed runbooks and alerts read. Keep them stable.
pub mod names {
    pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
    pub const EMAILS_INGESTED_TOTAL: &str = "emails_ingested_total";
    pub const EMAILS_PROCESSED_TOTAL: &str = "emails_processed_total";
    pub const EMAIL_PROCESSING_ERRORS_TOTAL: &str = "email_processing_errors_total";
    pub const EMAIL_PROCESSING_SECONDS: &str = "email_processing_seconds";
    pub const QUEUE_DEPTH: &str = "queue_depth";
    pub const QUEUE_DEAD_JOBS: &str = "queue_dead_jobs";
    pub const DATABASE_CONNECTIONS_ACTIVE: &str = "database_connections_active";
    pub const WORKERS_BUSY: &str = "workers_busy";
    pub const HTTP_CONNECTIONS_REJECTED_TOTAL: &str = "http_connections_rejected_total";
    pub const AUTH_FAILURES_TOTAL: &str = "auth_failures_total";
    pub const RATE_LIMIT_HITS_TOTAL: &str = "rate_limit_hits_total";
    pub const RATE_LIMIT_REDIS_ERRORS_TOTAL: &str = "rate_limit_redis_errors_total";
    pub const AUDIT_EVENTS_DROPPED_TOTAL: &str = "audit_events_dropped_total";
    pub const DATA_KEY_RESEALED_TOTAL: &str = "data_key_resealed_total";
    pub const MAIL_SCORE_PROCESSING_TIME: &str = "mail_score_processing_time";
    pub const MAIL_SCORE_ACTIONS_TOTAL: &str = "mail_score_actions_total";
    pub const MCP_TOOL_CALLS_TOTAL: &str = "mcp_tool_calls_total";
    pub const MCP_TOOL_DURATION_SECONDS: &str = "mcp_tool_duration_seconds";
    pub const MCP_SESSIONS_ACTIVE: &str = "mcp_sessions_active";
    pub const GRAPH_API_REQUESTS_TOTAL: &str = "graph_api_requests_total";
    pub const GRAPH_API_ERRORS_TOTAL: &str = "graph_api_errors_total";
    pub const GRAPH_API_REQUEST_DURATION_SECONDS: &str = "graph_api_request_duration_seconds";
    pub const WEBHOOK_REQUESTS_TOTAL: &str = "webhook_requests_total";
    pub const WEBHOOK_NOTIFICATIONS_TOTAL: &str = "webhook_notifications_total";
    pub const GRAPH_FETCHES_TOTAL: &str = "graph_fetches_total";
    pub const IMAP_MESSAGES_TOTAL: &str = "imap_messages_total";
    pub const IMAP_ERRORS_TOTAL: &str = "imap_errors_total";
    pub const API_SUBMISSIONS_TOTAL: &str = "api_submissions_total";
    pub const API_SUBMISSION_DURATION_SECONDS: &str = "api_submission_duration_seconds";
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{0}`")]
    Filter(String),
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// Installs the global tracing subscriber writing to stderr (stdout stays
/// free for command output and, later, the MCP stdio transport).
pub fn init_tracing(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_new(filter).map_err(|_| TelemetryError::Filter(filter.to_string()))?;
    // Colours only for a person at a terminal, never into files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    // A second initialisation (tests building several apps) is harmless.
    let _ = result;
    Ok(())
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns the handle
/// that renders `/metrics`.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let seconds_buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets)
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        // Scoring takes microseconds: its buckets start far below HTTP's.
        .set_buckets_for_metric(
            Matcher::Full(names::MAIL_SCORE_PROCESSING_TIME.into()),
            &[
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.05, 0.25, 1.0,
            ],
        )
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            let _ = HANDLE.set(handle.clone());
            describe();
            Ok(handle)
        }
        // Lost a race with another initialiser in this process: use theirs.
        Err(_) => HANDLE
            .get()
            .cloned()
            .ok_or_else(|| TelemetryError::Recorder("another recorder is installed".into())),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, matched route and status code"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_histogram!(
        MAIL_SCORE_PROCESSING_TIME,
        Unit::Seconds,
        "Time to score one message (parse, analyzers, model)"
    );
    describe_counter!(
        MAIL_SCORE_ACTIONS_TOTAL,
        "Scored messages by action and surface"
    );
    describe_counter!(
        MCP_TOOL_CALLS_TOTAL,
        "MCP tool calls by tool and outcome (ok, error, denied, rate_limited, invalid_call, unknown_tool)"
    );
    describe_histogram!(
        MCP_TOOL_DURATION_SECONDS,
        Unit::Seconds,
        "MCP tool call latency by tool"
    );
    describe_counter!(
        GRAPH_API_REQUESTS_TOTAL,
        "Microsoft Graph requests by operation and HTTP status (each attempt)"
    );
    describe_counter!(
        GRAPH_API_ERRORS_TOTAL,
        "Microsoft Graph failures by operation and reason (throttled, server, network, auth, client)"
    );
    describe_histogram!(
        GRAPH_API_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Microsoft Graph request latency by operation"
    );
    describe_counter!(
        WEBHOOK_REQUESTS_TOTAL,
        "Graph webhook POSTs by outcome (validation, accepted, rejected, invalid, unavailable)"
    );
    describe_counter!(
        WEBHOOK_NOTIFICATIONS_TOTAL,
        "Graph notification items by outcome (queued, duplicate, bad_client_state, unknown_subscription, lifecycle, unusable)"
    );
    describe_counter!(
        GRAPH_FETCHES_TOTAL,
        "Notified messages fetched from Graph by outcome (ingested, duplicate, gone, retry, dead)"
    );
    describe_counter!(
        IMAP_MESSAGES_TOTAL,
        "IMAP messages fetched by outcome (ingested, duplicate, rejected)"
    );
    describe_counter!(
        IMAP_ERRORS_TOTAL,
        "IMAP sessions that failed (connection, login, protocol) by account"
    );
    describe_counter!(
        API_SUBMISSIONS_TOTAL,
        "Downstream submission attempts by outcome (delivered, retry, dead)"
    );
    describe_histogram!(
        API_SUBMISSION_DURATION_SECONDS,
        Unit::Seconds,
        "Downstream submission request latency"
    );
    describe_gauge!(
        MCP_SESSIONS_ACTIVE,
        "Open legacy (2025-11-25) MCP sessions on the HTTP transport"
    );
    describe_counter!(
        EMAILS_INGESTED_TOTAL,
        "Messages accepted by ingest, by source and outcome"
    );
    describe_counter!(
        EMAILS_PROCESSED_TOTAL,
        "Messages that completed the processing pipeline"
    );
    describe_counter!(
        EMAIL_PROCESSING_ERRORS_TOTAL,
        "Failed processing attempts, by stage"
    );
    describe_histogram!(
        EMAIL_PROCESSING_SECONDS,
        Unit::Seconds,
        "Time to run the pipeline on one message"
    );
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting or leased");
    describe_gauge!(QUEUE_DEAD_JOBS, "Jobs that exhausted their attempts");
    describe_gauge!(
        DATABASE_CONNECTIONS_ACTIVE,
        "Database connections checked out of the pools"
    );
    describe_gauge!(WORKERS_BUSY, "Workers running a job right now");
    describe_counter!(
        HTTP_CONNECTIONS_REJECTED_TOTAL,
        "Connections refused because their address had too many open"
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Requests refused by authentication (401) or authorisation (403), by reason"
    );
    describe_counter!(
        RATE_LIMIT_HITS_TOTAL,
        "Requests refused by a rate limit, by bucket scope (key, ip)"
    );
    describe_counter!(
        RATE_LIMIT_REDIS_ERRORS_TOTAL,
        "Failed round trips to the Redis rate limiter"
    );
    describe_counter!(
        AUDIT_EVENTS_DROPPED_TOTAL,
        "Audit events dropped because the audit writer was saturated"
    );
    describe_counter!(
        DATA_KEY_RESEALED_TOTAL,
        "Records re-encrypted under the current data key"
    );
}

/// Refreshes the process metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, open fds, threads...) just before a scrape.
pub fn collect_process_metrics() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}
