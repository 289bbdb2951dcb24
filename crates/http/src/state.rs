use std::{sync::Arc, time::Duration, time::Instant};

use ipnet::IpNet;
use mailroom_app::{AuditLog, IngestService, KeyService, ScoreService, WorkerState};
use mailroom_ratelimit::RateLimiter;
use mailroom_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

/// Everything the handlers need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub ingest: IngestService,
    pub workers: Arc<WorkerState>,
    pub wake: Arc<Notify>,
    pub metrics: PrometheusHandle,
    pub started: Instant,
    pub pipeline_stages: Vec<&'static str>,
    pub keys: KeyService,
    pub audit: AuditLog,
    /// `None` when rate limiting is switched off.
    pub limiter: Option<RateLimiter>,
    pub security: Arc<SecuritySettings>,
    /// The scorer and the live model.
    pub scoring: Arc<ScoreService>,
    /// More components of `/health/detailed` (the mailbox sources'),
    /// from adapters this crate does not know.
    pub health_extras: Option<HealthExtras>,
}

/// Produces extra `/health/detailed` components: (name, component JSON
/// with a `status`). An unhealthy or degraded one makes the whole report
/// degraded, never unhealthy: the server still takes mail in other ways.
pub type HealthExtras = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Vec<(String, serde_json::Value)>> + Send>,
        > + Send
        + Sync,
>;

/// How the surface is protected (resolved from configuration).
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// false only with `--insecure-no-auth`: every route is open.
    pub auth_required: bool,
    /// `/metrics` and `/health/detailed` answer without a key.
    pub ops_open: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Tokens a refused authentication takes from the client's IP bucket.
    pub auth_failure_cost: u32,
    /// Longest a request may take from its headers to its response.
    pub request_timeout: Duration,
    /// Browser origins allowed by CORS (empty: CORS closed).
    pub cors_allowed_origins: Vec<String>,
    /// The base URL clients reach the server at, when a proxy makes the
    /// Host header wrong (used in the MCP metadata and its 401 challenge).
    pub public_url: Option<String>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            auth_required: true,
            ops_open: true,
            trusted_proxies: Vec::new(),
            auth_failure_cost: 10,
            request_timeout: Duration::from_secs(90),
            cors_allowed_origins: Vec::new(),
            public_url: None,
        }
    }
}
