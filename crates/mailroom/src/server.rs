//! Composition root: builds the application from a [`Config`] and runs it
//! until a shutdown signal, draining in-flight work.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use anyhow::Context;
use mailroom_app::{IngestService, Pipeline, WorkerConfig, WorkerPool, WorkerState};
use mailroom_http::AppState;
use mailroom_store::{Store, StoreOptions};
use tokio::{net::TcpListener, sync::Notify};
use tracing::{info, warn};

use crate::config::Config;

/// Opens the store described by `config` and applies migrations.
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
    Ok(store)
}

/// A built, listening application: the HTTP server and the worker pool.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    store: Store,
    pool: WorkerPool,
    config: Config,
}

impl Application {
    /// Connects, migrates, starts the workers and binds the listener (port 0
    /// picks a free port; see [`Application::local_addr`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        let metrics = mailroom_telemetry::metrics_handle()?;
        let store = open_store(&config).await?;
        let wake = Arc::new(Notify::new());
        let workers = Arc::new(WorkerState::default());
        let pipeline = Pipeline::standard(config.fault_injection);
        if config.fault_injection {
            warn!("fault injection is ON: X-Mailroom-Fault headers can fail or delay processing; never enable this in production");
        }
        let pool = WorkerPool::start(
            store.clone(),
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
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let state = AppState {
            ingest: IngestService::new(
                store.clone(),
                config.max_message_bytes,
                config.max_inflight_bytes,
                Arc::clone(&wake),
            ),
            store: store.clone(),
            workers,
            wake,
            metrics,
            started,
            pipeline_stages: pipeline.stage_names(),
        };
        info!(
            addr = %listener.local_addr()?,
            database = store.backend().as_str(),
            workers = config.workers,
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "listening"
        );
        Ok(Self {
            listener,
            state,
            store,
            pool,
            config,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting requests,
    /// lets the workers finish their batches within the grace period and
    /// closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = tokio_util::sync::CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let router = mailroom_http::router(self.state);
        let http = tokio::spawn(
            axum::serve(self.listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        stop.cancelled().await;
        // HTTP and workers drain together, under one deadline: no new
        // requests, no new jobs, and at most one grace period in all.
        info!(
            grace_seconds = self.config.shutdown_grace.as_secs(),
            "shutting down: draining requests and workers"
        );
        let grace = self.config.shutdown_grace;
        let (drained, http) =
            tokio::join!(self.pool.shutdown(grace), tokio::time::timeout(grace, http));
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
        self.store.close().await;
        info!("stopped");
        Ok(())
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
