//! Composition root: builds the application from a [`Config`] and runs it
//! until a shutdown signal, draining in-flight work.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use mailroom_app::{
    actions, AuditLog, IngestService, IssuedKey, KeyService, Pipeline, ScoreService, ScoreStage,
    WorkerConfig, WorkerPool, WorkerState,
};
use mailroom_graph::GraphSource;
use mailroom_http::{AppState, HealthExtras, SecuritySettings, ServeLimits};
use mailroom_mcp::{MailroomMcp, McpContext, McpHttpSettings};
use mailroom_ratelimit::{LimiterConfig, RateLimiter};
use mailroom_security::{DataKey, Keyring};
use mailroom_store::{Store, StoreOptions};
use serde_json::json;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, DataKeySource};

/// Opens the store described by `config`, applies migrations and installs
/// the data keys, so every command (serve, import, keys) seals mail alike.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let mut options = StoreOptions::new(&config.database_url);
    options.read_url = config.read_database_url.clone();
    options.max_connections = config.db_max_connections;
    let store = Store::connect(&options).await.with_context(|| {
        format!(
            "opening the {} database",
            mailroom_store::Backend::from_url(&config.database_url)
                .map(|b| b.as_str())
                .unwrap_or("configured")
        )
    })?;
    store
        .migrate()
        .await
        .context("applying database migrations")?;
    install_data_keys(&store, &config.security.data_keys)?;
    Ok(store)
}

fn read_key_file(path: &PathBuf) -> Result<Keyring, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    Keyring::from_key_file(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

fn install_data_keys(store: &Store, source: &DataKeySource) -> anyhow::Result<()> {
    match source {
        DataKeySource::None => store.set_keyring(None),
        DataKeySource::Inline { current, previous } => {
            let current = DataKey::parse(current.expose()).context("encryption.data_key")?;
            let previous = previous
                .iter()
                .map(|k| DataKey::parse(k.expose()))
                .collect::<Result<Vec<_>, _>>()
                .context("encryption.previous_keys")?;
            store.set_keyring(Some(Keyring::new(current, previous)));
        }
        DataKeySource::File(path) => {
            let ring = read_key_file(path).map_err(anyhow::Error::msg)?;
            store.set_keyring(Some(ring));
            let path = path.clone();
            store.set_keyring_reloader(Box::new(move || read_key_file(&path)));
        }
    }
    Ok(())
}

/// A built, listening application: the HTTP server and the worker pool.
pub struct Application {
    /// Names this process in the data-key reports of `server_state`.
    instance: String,
    listener: TcpListener,
    state: AppState,
    store: Store,
    pool: WorkerPool,
    /// What the `/mcp` endpoint serves.
    mcp: McpContext,
    /// The Microsoft 365 source, when configured.
    graph: Option<Arc<GraphSource>>,
    submitter: Option<Background>,
    ingest: IngestService,
    config: Config,
}

impl Application {
    /// Connects, migrates, checks the protection settings, starts the
    /// workers and binds the listener (port 0 picks a free port; see
    /// [`Application::local_addr`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        let metrics = mailroom_telemetry::metrics_handle()?;
        let store = open_store(&config).await?;
        match store.keyring() {
            Some(ring) => info!(current_key = %ring.current_id(), keys = ring.key_ids().len(), "encryption at rest: AES-256-GCM"),
            None => warn!("ENCRYPTION AT REST IS DISABLED: raw messages and bodies are stored in the clear; set MAILROOM_DATA_KEY or encryption.key_file"),
        }
        let audit = AuditLog::start(store.clone());
        let keys = KeyService::new(
            store.clone(),
            audit.clone(),
            config.security.api_keys.clone(),
        );
        audit_configuration_change(&store, &audit, &config).await?;
        let auth_required = !config.security.insecure_no_auth;
        if auth_required {
            ensure_a_key(&keys, &config).await?;
        } else {
            warn!(bind = %config.bind, "AUTHENTICATION IS DISABLED (--insecure-no-auth): every route is open to whoever can reach this address");
        }
        let limiter = match &config.security.rate_limit {
            Some(limits) => Some(
                RateLimiter::new(LimiterConfig {
                    key: limits.key,
                    ip: limits.ip,
                    redis_url: config
                        .security
                        .redis_url
                        .as_ref()
                        .map(|u| u.expose().clone()),
                    redis_prefix: limits.redis_prefix.clone(),
                    on_redis_failure: limits.on_redis_failure,
                    redis_timeout: limits.redis_timeout,
                })
                .context("rate limiter")?,
            ),
            None => {
                warn!("rate limiting is disabled (rate_limit.enabled = false)");
                None
            }
        };
        let core = Core::start(&config, store.clone()).await?;
        let mcp = core.mcp_context(&config, store.clone(), audit.clone());
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let instance = uuid::Uuid::now_v7().to_string();
        let graph = match &config.graph {
            Some(settings) => Some(Arc::new(
                GraphSource::new(
                    settings.clone(),
                    store.clone(),
                    format!("{}/{}", std::process::id(), instance),
                )
                .context("Microsoft 365 source")?,
            )),
            None => None,
        };
        let health_extras = health_extras(
            graph.clone(),
            config.submission.is_some().then(|| store.clone()),
        );
        let state = AppState {
            ingest: core.ingest.clone(),
            store: store.clone(),
            workers: Arc::clone(&core.workers),
            wake: Arc::clone(&core.wake),
            metrics,
            started,
            pipeline_stages: core.pipeline_stages.clone(),
            keys,
            audit,
            limiter,
            security: Arc::new(SecuritySettings {
                auth_required,
                ops_open: config.security.open_ops_endpoints.decide(&config.bind),
                trusted_proxies: config.security.trusted_proxies.clone(),
                auth_failure_cost: config.security.auth_failure_cost,
                request_timeout: config.security.request_timeout,
                cors_allowed_origins: config.security.cors_allowed_origins.clone(),
                public_url: config.mcp.public_url.clone(),
            }),
            scoring: Arc::clone(&core.scoring),
            health_extras,
        };
        info!(
            addr = %listener.local_addr()?,
            database = store.backend().as_str(),
            workers = config.workers,
            auth = if auth_required { "api-key" } else { "disabled" },
            rate_limit = state.limiter.as_ref().map(|_| if config.security.redis_url.is_some() { "redis" } else { "memory" }).unwrap_or("off"),
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "listening"
        );
        report_keyring(&store, &instance).await;
        Ok(Self {
            instance,
            listener,
            state,
            store,
            pool: core.pool,
            submitter: core.submitter,
            mcp,
            graph,
            ingest: core.ingest,
            config,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The key service (tests issue their keys through it).
    pub fn keys(&self) -> &KeyService {
        &self.state.keys
    }

    /// Serves until `shutdown` resolves, then stops accepting requests,
    /// lets the workers finish their batches within the grace period and
    /// closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        tokio::spawn(maintenance(
            self.state.clone(),
            self.instance.clone(),
            self.config.security.data_keys.clone(),
            stop.clone(),
        ));
        let audit = self.state.audit.clone();
        let mounted = if self.config.mcp.enabled {
            let server = MailroomMcp::new(self.mcp, &self.config.mcp.tools);
            info!(
                toolsets = self.config.mcp.tools.toolsets().join(","),
                read_only = self.config.mcp.tools.read_only(),
                "MCP served at /mcp"
            );
            let port = self.listener.local_addr()?.port();
            mailroom_mcp::http_router(server, mcp_http_settings(&self.config, port, stop.clone()))
        } else {
            axum::Router::new()
        };
        let mounted = match &self.graph {
            Some(source) => mounted.merge(mailroom_graph::router(Arc::clone(source))),
            None => mounted,
        };
        let router = mailroom_http::router_with(self.state, mounted);
        let limits = ServeLimits {
            trusted_proxies: self.config.security.trusted_proxies.clone(),
            ..self.config.security.serve_limits.clone()
        };
        let http = tokio::spawn(mailroom_http::serve(
            self.listener,
            router,
            limits,
            stop.clone(),
        ));
        // After the webhook is served: creating a subscription makes Graph
        // call it.
        let imap = match &self.config.imap {
            Some(settings) => {
                info!(accounts = settings.accounts.len(), "IMAP source started");
                Some(
                    mailroom_imap::start(
                        settings.clone(),
                        self.store.clone(),
                        self.ingest.clone(),
                        stop.clone(),
                    )
                    .context("IMAP source")?,
                )
            }
            None => None,
        };
        let graph = self.graph.as_ref().map(|source| {
            info!(
                mailboxes = source.client().settings().mailboxes.len(),
                webhook = %source.client().settings().notification_url,
                "Microsoft 365 source started"
            );
            source.start(self.ingest.clone(), self.config.retry)
        });
        stop.cancelled().await;
        if let Some(tasks) = graph {
            tasks.shutdown().await;
        }
        if let Some(mut tasks) = imap {
            // Each watcher logs out when stopped.
            while tasks.join_next().await.is_some() {}
        }
        // HTTP and workers drain together, under one deadline: no new
        // requests, no new jobs, and at most one grace period in all.
        info!(
            grace_seconds = self.config.shutdown_grace.as_secs(),
            "shutting down: draining requests and workers"
        );
        let grace = self.config.shutdown_grace;
        let (drained, http) =
            tokio::join!(self.pool.shutdown(grace), tokio::time::timeout(grace, http));
        if let Some(submitter) = self.submitter {
            submitter.stop().await;
        }
        if drained {
            info!("workers drained");
        } else {
            warn!("grace period over; unfinished jobs will be retried when their lease expires");
        }
        match http {
            Ok(Ok(result)) => result.context("HTTP server failed")?,
            Ok(Err(join)) => return Err(anyhow::anyhow!("HTTP server task failed: {join}")),
            Err(_) => warn!("open HTTP connections outlived the grace period"),
        }
        // Refused authentications still queued for the audit log.
        if tokio::time::timeout(Duration::from_secs(5), audit.flush())
            .await
            .is_err()
        {
            warn!("the audit log did not flush within 5 s");
        }
        if let Err(e) = self.store.withdraw_keyring_report(&self.instance).await {
            warn!(error = %e, "could not withdraw the data-key report");
        }
        self.store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// The `/health/detailed` components of the optional parts: the Microsoft
/// 365 source's, and the downstream outbox (`degraded` while a delivery is
/// dead).
fn health_extras(graph: Option<Arc<GraphSource>>, outbox: Option<Store>) -> Option<HealthExtras> {
    if graph.is_none() && outbox.is_none() {
        return None;
    }
    Some(Arc::new(move || {
        let (graph, outbox) = (graph.clone(), outbox.clone());
        Box::pin(async move {
            let mut components = match &graph {
                Some(source) => source.health().await,
                None => Vec::new(),
            };
            if let Some(store) = outbox {
                let component = match store.submission_counts().await {
                    Ok(c) => json!({
                        "status": if c.dead > 0 { "degraded" } else { "healthy" },
                        "latency_ms": 0.0,
                        "queued": c.queued, "leased": c.leased, "delivered": c.delivered, "dead": c.dead,
                    }),
                    Err(e) => {
                        json!({"status": "unhealthy", "latency_ms": 0.0, "error": e.to_string()})
                    }
                };
                components.push(("downstream_submissions".to_string(), component));
            }
            components
        })
    }))
}

/// The services every long-running command shares (`serve`, `mcp`): the
/// scorer, ingest and the worker pool processing the queue.
pub struct Core {
    pub ingest: IngestService,
    pub wake: Arc<Notify>,
    pub workers: Arc<WorkerState>,
    pub scoring: Arc<ScoreService>,
    pub pool: WorkerPool,
    pub pipeline_stages: Vec<&'static str>,
    /// Delivers results downstream, when endpoints are configured.
    pub submitter: Option<Background>,
}

/// A background task and the token that stops it.
pub struct Background {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Background {
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

impl Core {
    pub async fn start(config: &Config, store: Store) -> anyhow::Result<Self> {
        let wake = Arc::new(Notify::new());
        let workers = Arc::new(WorkerState::default());
        let scoring = Arc::new(
            ScoreService::new(
                config.score.rules.clone(),
                Some(config.score.model_path.clone()),
            )
            .context("scoring model")?,
        );
        info!(model = %scoring.model_info().version, path = %config.score.model_path.display(), "scoring model loaded");
        let pipeline = Pipeline::standard(
            config.fault_injection,
            Some(ScoreStage {
                service: Arc::clone(&scoring),
                profile: config.score.profile.clone(),
            }),
        );
        if config.fault_injection {
            warn!("fault injection is ON: X-Mailroom-Fault headers can fail or delay processing; never enable this in production");
        }
        // Results are queued for downstream delivery in the transaction
        // that records them (the outbox).
        let worker_store = match &config.submission {
            Some(s) => store.clone().with_outbox(s.endpoints.clone()),
            None => store.clone(),
        };
        let submitter = match &config.submission {
            Some(settings) => {
                let submitter = Arc::new(
                    mailroom_submit::Submitter::new(store.clone(), settings.clone())
                        .context("downstream submission")?,
                );
                info!(
                    endpoints = settings.endpoints.len(),
                    "downstream submission on"
                );
                let stop = CancellationToken::new();
                Some(Background {
                    handle: tokio::spawn(submitter.run(stop.clone())),
                    stop,
                })
            }
            None => None,
        };
        let pool = WorkerPool::start(
            worker_store,
            pipeline.clone(),
            WorkerConfig {
                workers: config.workers,
                batch_size: config.batch_size,
                lease: config.lease,
                poll_interval: config.poll_interval,
                retry: config.retry,
            },
            Arc::clone(&wake),
            Arc::clone(&workers),
        );
        let ingest = IngestService::new(
            store.clone(),
            config.max_message_bytes,
            config.max_inflight_bytes,
            Arc::clone(&wake),
        );
        Ok(Self {
            ingest,
            wake,
            workers,
            scoring,
            pool,
            pipeline_stages: pipeline.stage_names(),
            submitter,
        })
    }

    /// The same services, for the MCP tools.
    pub fn mcp_context(&self, config: &Config, store: Store, audit: AuditLog) -> McpContext {
        McpContext {
            store,
            ingest: self.ingest.clone(),
            wake: Arc::clone(&self.wake),
            scoring: Arc::clone(&self.scoring),
            audit,
            workers: Arc::clone(&self.workers),
            http_wait_limit: config
                .security
                .request_timeout
                .saturating_sub(Duration::from_secs(5))
                .max(Duration::from_secs(1)),
        }
    }
}

/// How `/mcp` is exposed: Host names it answers to (the loopback names
/// and the bind address unless configured), browser origins (unless
/// configured: pages served by this server itself on loopback, i.e. the
/// same origin), session limits.
fn mcp_http_settings(config: &Config, port: u16, shutdown: CancellationToken) -> McpHttpSettings {
    let allowed_hosts = if config.mcp.allowed_hosts.is_empty() {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let bound = config.bind.ip();
        if !bound.is_unspecified() && !bound.is_loopback() {
            hosts.push(bound.to_string());
        }
        hosts
    } else {
        config.mcp.allowed_hosts.clone()
    };
    let allowed_origins = if config.mcp.allowed_origins.is_empty() {
        ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|host| format!("http://{host}:{port}"))
            .collect()
    } else {
        config.mcp.allowed_origins.clone()
    };
    McpHttpSettings {
        allowed_hosts,
        allowed_origins,
        max_sessions: config.mcp.max_sessions,
        session_idle: config.mcp.session_idle,
        max_request_bytes: config.mcp.max_request_bytes,
        shutdown,
    }
}

/// `mailroom mcp`: one MCP client on stdin/stdout, with the same database
/// and configuration as `serve`, and workers processing what it queues.
/// Only protocol messages go to stdout; logs go to stderr.
pub async fn run_stdio(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let audit = AuditLog::start(store.clone());
    let core = Core::start(&config, store.clone()).await?;
    let server = MailroomMcp::new(
        core.mcp_context(&config, store.clone(), audit.clone()),
        &config.mcp.tools,
    );
    info!(
        toolsets = config.mcp.tools.toolsets().join(","),
        read_only = config.mcp.tools.read_only(),
        "MCP on stdio"
    );
    let served = server.serve_stdio().await;
    let drained = core.pool.shutdown(config.shutdown_grace).await;
    if let Some(submitter) = core.submitter {
        submitter.stop().await;
    }
    if !drained {
        warn!("grace period over; unfinished jobs will be retried when their lease expires");
    }
    if tokio::time::timeout(Duration::from_secs(5), audit.flush())
        .await
        .is_err()
    {
        warn!("the audit log did not flush within 5 s");
    }
    store.close().await;
    served.context("MCP stdio transport")
}

/// Secure by default: a server that requires keys must have one. On first
/// start with no key stored it can issue an admin key (printed once); a
/// server reachable from other machines refuses to start without any.
async fn ensure_a_key(keys: &KeyService, config: &Config) -> anyhow::Result<()> {
    if keys.usable_count().await? > 0 {
        return Ok(());
    }
    if config.security.bootstrap_admin_key.decide(&config.bind) {
        if let Some(issued) = keys.bootstrap_admin().await? {
            print_bootstrap_key(&issued);
            info!(key_prefix = %issued.info.prefix, "bootstrap admin key created; shown once on standard output");
        }
    }
    if keys.usable_count().await? > 0 {
        return Ok(());
    }
    if !config.bind.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {}: no usable API key exists, so the API would be unusable and the server unprotected. \
             Create one with `mailroom keys create --name admin --scopes admin`, provision MAILROOM_API_KEYS, \
             set auth.bootstrap_admin_key = true, or (never on a shared network) pass --insecure-no-auth",
            config.bind
        );
    }
    warn!("no usable API key exists: protected routes answer 401; create one with `mailroom keys create --name NAME --scopes read,write,admin`");
    Ok(())
}

fn print_bootstrap_key(issued: &IssuedKey) {
    println!(
        "\n  mailroom created its first API key (name bootstrap-admin, scope admin).\n  It is shown this once and stored only as a hash:\n\n    {}\n\n  Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.\n  Issue narrower keys with `mailroom keys create`, then `mailroom keys revoke bootstrap-admin`.\n",
        issued.secret.expose()
    );
}

const CONFIG_STATE: &str = "config_fingerprint";

/// Records in the audit log which settings changed since the last start
/// (secrets as `[set]` only).
async fn audit_configuration_change(
    store: &Store,
    audit: &AuditLog,
    config: &Config,
) -> anyhow::Result<()> {
    let now = serde_json::to_value(&config.fingerprint)?;
    let before: serde_json::Value = store
        .state_value(CONFIG_STATE)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_else(|| json!({}));
    if before == now {
        return Ok(());
    }
    let mut changed = Vec::new();
    for (key, value) in &config.fingerprint {
        let old = before.get(key).and_then(|v| v.as_str());
        if old != Some(value.as_str()) {
            changed.push(json!({"key": key, "from": old, "to": value}));
        }
    }
    if let Some(old) = before.as_object() {
        for key in old.keys().filter(|k| !config.fingerprint.contains_key(*k)) {
            changed.push(json!({"key": key, "from": old[key], "to": null}));
        }
    }
    audit
        .record(AuditLog::event(
            &mailroom_app::Actor::system(),
            actions::CONFIG_CHANGE,
            "success",
            None,
            Some(json!({"changed": changed})),
        ))
        .await?;
    store
        .set_state_value(CONFIG_STATE, &now.to_string(), mailroom_app::now_ms())
        .await?;
    info!(
        settings = changed.len(),
        "configuration changed since the last start (audited)"
    );
    Ok(())
}

/// Tells re-encryptions which data key this server seals with.
async fn report_keyring(store: &Store, instance: &str) {
    let key = store.keyring().map(|r| r.current_id().to_string());
    if let Err(e) = store
        .report_keyring(instance, key.as_deref(), mailroom_app::now_ms())
        .await
    {
        warn!(error = %e, "could not report the data key in use");
    }
}

/// Background upkeep: reload a changed key file, report the data key in
/// use, forget idle rate-limit buckets.
async fn maintenance(
    state: AppState,
    instance: String,
    data_keys: DataKeySource,
    stop: CancellationToken,
) {
    let key_file = match &data_keys {
        DataKeySource::File(path) => Some(path.clone()),
        _ => None,
    };
    let modified = |path: &PathBuf| -> Option<SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    };
    let mut seen = key_file.as_ref().and_then(modified);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks += 1;
        let mut report = ticks.is_multiple_of(mailroom_app::KEYRING_REPORT_EVERY.as_secs().max(1));
        if let Some(path) = &key_file {
            let now = modified(path);
            if now != seen {
                seen = now;
                match state.store.reload_keyring() {
                    Ok(changed) => report |= changed,
                    Err(e) => {
                        warn!(error = %e, "the key file changed but could not be loaded; keeping the keys in use")
                    }
                }
            }
        }
        if report {
            report_keyring(&state.store, &instance).await;
        }
        // Another process (`mailroom learn`, another server) updated the
        // model file: score with its model from now on.
        let scoring = Arc::clone(&state.scoring);
        match tokio::task::spawn_blocking(move || scoring.reload_if_changed()).await {
            Ok(Ok(true)) => info!("scoring model reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "the model file changed but could not be loaded; keeping the model in use")
            }
            Err(e) => warn!(error = %e, "model reload task failed"),
        }
        if ticks.is_multiple_of(60) {
            if let Some(limiter) = &state.limiter {
                limiter.sweep();
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!(signal = "SIGINT", "shutdown requested"),
        _ = term => info!(signal = "SIGTERM", "shutdown requested"),
    }
}
