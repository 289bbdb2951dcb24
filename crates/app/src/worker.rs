//! The worker pool: leases jobs in batches, runs the pipeline, records the
//! outcome. Rules:
//! - a worker only ever acts on jobs it holds the lease token of;
//! - results of a batch are recorded in one transaction (fewer commits is
//!   what lets SQLite keep up);
//! - on shutdown a worker finishes the batch in hand, then stops; whatever a
//!   killed process held comes back when its lease expires.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use mailroom_domain::RetryPolicy;
use mailroom_store::{CompletedJob, FailedJob, LeasedJob, Store};
use mailroom_telemetry::names;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    clock::now_ms,
    pipeline::{Pipeline, StageContext},
};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub workers: usize,
    /// Jobs leased at once by one worker.
    pub batch_size: u32,
    pub lease: Duration,
    /// How often an idle worker looks for due retries without a wake-up.
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            batch_size: 32,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

/// Live figures of the pool, read by `/health/detailed`.
#[derive(Debug, Default)]
pub struct WorkerState {
    pub configured: AtomicUsize,
    pub running: AtomicUsize,
    pub busy: AtomicUsize,
    pub processed: AtomicU64,
    pub failed: AtomicU64,
    pub last_activity_ms: AtomicU64,
}

/// Handle on the running pool.
#[derive(Debug)]
pub struct WorkerPool {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl WorkerPool {
    /// Starts `config.workers` workers plus the housekeeping task (dead-lease
    /// reaping and queue gauges).
    pub fn start(
        store: Store,
        pipeline: Pipeline,
        config: WorkerConfig,
        wake: Arc<Notify>,
        state: Arc<WorkerState>,
    ) -> Self {
        // Counters exist from the start (at 0), so dashboards and rate()
        // alerts see a series before the first message or failure.
        metrics::counter!(names::EMAILS_PROCESSED_TOTAL).increment(0);
        for stage in pipeline
            .stage_names()
            .into_iter()
            .chain(["pipeline", "store"])
        {
            metrics::counter!(names::EMAIL_PROCESSING_ERRORS_TOTAL, "stage" => stage).increment(0);
        }
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        state.configured.store(config.workers, Ordering::Relaxed);
        for n in 0..config.workers {
            let worker = Worker {
                store: store.clone(),
                pipeline: pipeline.clone(),
                config: config.clone(),
                wake: Arc::clone(&wake),
                state: Arc::clone(&state),
                stop: stop.clone(),
                name: format!("worker-{n}"),
            };
            tasks.spawn(worker.run());
        }
        tasks.spawn(housekeeping(store, config, stop.clone()));
        Self { tasks, stop }
    }

    /// Stops taking jobs and waits up to `grace` for in-flight batches.
    /// Returns false when the deadline passed (the leases of what was still
    /// running will expire and the jobs run again).
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            self.tasks.abort_all();
        }
        drained
    }
}

struct Worker {
    store: Store,
    pipeline: Pipeline,
    config: WorkerConfig,
    wake: Arc<Notify>,
    state: Arc<WorkerState>,
    stop: CancellationToken,
    name: String,
}

impl Worker {
    async fn run(self) {
        self.state.running.fetch_add(1, Ordering::Relaxed);
        let mut backoff = Duration::from_millis(100);
        while !self.stop.is_cancelled() {
            match self.try_execute_batch().await {
                Ok(0) => {
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    error!(worker = %self.name, error = %e, "queue unavailable; backing off");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.state.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Leases one batch, processes it and records the results. Returns the
    /// number of jobs handled (0: the queue had nothing runnable).
    async fn try_execute_batch(&self) -> Result<usize, mailroom_store::StoreError> {
        let token = uuid::Uuid::now_v7().to_string();
        let lease_ms = self.config.lease.as_millis() as i64;
        let jobs = self
            .store
            .lease_jobs(
                &token,
                self.config.batch_size,
                now_ms(),
                lease_ms,
                self.config.retry.max_attempts,
            )
            .await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        // More work may be waiting: let a sibling look while this one works.
        if jobs.len() as u32 == self.config.batch_size {
            self.wake.notify_one();
        }
        self.state.busy.fetch_add(1, Ordering::Relaxed);
        let count = jobs.len();
        let result = self.execute(jobs).await;
        self.state.busy.fetch_sub(1, Ordering::Relaxed);
        self.state
            .last_activity_ms
            .store(now_ms().max(0) as u64, Ordering::Relaxed);
        result.map(|_| count)
    }

    async fn execute(&self, jobs: Vec<LeasedJob>) -> Result<(), mailroom_store::StoreError> {
        let mut completed = Vec::with_capacity(jobs.len());
        let mut raws: std::collections::HashMap<_, _> = self
            .store
            .leased_raw_messages(&jobs[0].lease_token)
            .await?
            .into_iter()
            .collect();
        for job in jobs {
            let Some(raw) = raws.remove(&job.message_id) else {
                // Deleted after it was leased: the job row went with it.
                tracing::debug!(message_id = %job.message_id, "leased message was deleted; skipping");
                continue;
            };
            let raw = match raw {
                Ok(raw) => Arc::new(raw),
                Err(e) => {
                    // Sealed under a key this server does not have: the job
                    // is retried (the key may be configured meanwhile), then
                    // dead, never silently dropped.
                    let step = mailroom_domain::ProcessingStep {
                        stage: "load".into(),
                        attempt: job.attempts,
                        outcome: mailroom_domain::StepOutcome::Error,
                        started_at_ms: now_ms(),
                        duration_ms: 0.0,
                        error: Some(e.to_string()),
                    };
                    self.record_failure(job, vec![step], "load", e.to_string())
                        .await?;
                    continue;
                }
            };
            let ctx = StageContext {
                message_id: job.message_id.clone(),
                attempt: job.attempts,
                raw,
                view: None,
            };
            let run = match self.run_supervised(ctx).await {
                Ok(run) => run,
                Err(panic) => {
                    self.record_failure(job, vec![panic.step], "pipeline", panic.message)
                        .await?;
                    continue;
                }
            };
            metrics::histogram!(names::EMAIL_PROCESSING_SECONDS).record(run.elapsed_ms / 1000.0);
            match (run.error, run.view) {
                (None, Some(view)) => completed.push(CompletedJob {
                    job,
                    view,
                    steps: run.steps,
                    processing_ms: run.elapsed_ms,
                    finished_at_ms: now_ms(),
                }),
                (error, _) => {
                    let (stage, message) = error.unwrap_or_else(|| {
                        ("pipeline".into(), "no parsed view was produced".into())
                    });
                    self.record_failure(job, run.steps, &stage, message).await?;
                }
            }
        }
        if completed.is_empty() {
            return Ok(());
        }
        let recorded = match self.store.complete_jobs(&completed).await {
            Ok(recorded) => recorded,
            Err(e) if completed.len() > 1 && !e.is_unavailable() => {
                // One unstorable result must not sink the whole batch: record
                // them one by one and fail only the ones that cannot be stored.
                warn!(error = %e, jobs = completed.len(), "recording the batch failed; recording one by one");
                self.complete_individually(&completed).await?
            }
            Err(e) => return Err(e),
        };
        for (item, ok) in completed.iter().zip(recorded) {
            if ok {
                self.state.processed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::EMAILS_PROCESSED_TOTAL).increment(1);
                info!(message_id = %item.job.message_id, processing_ms = item.processing_ms, attempt = item.job.attempts, "message processed");
            } else {
                warn!(message_id = %item.job.message_id, "lease lost before completion; result discarded");
            }
        }
        Ok(())
    }

    /// Runs the pipeline in its own task so a panicking stage fails this
    /// message (retried, then dead) instead of killing the worker.
    async fn run_supervised(
        &self,
        mut ctx: StageContext,
    ) -> Result<crate::pipeline::PipelineRun, StagePanic> {
        let pipeline = self.pipeline.clone();
        let attempt = ctx.attempt;
        let started_at_ms = now_ms();
        let started = std::time::Instant::now();
        match tokio::spawn(async move { pipeline.run(&mut ctx).await }).await {
            Ok(run) => Ok(run),
            Err(join) => {
                let message = if join.is_panic() {
                    let payload = join.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("a stage panicked: {text}")
                } else {
                    "the pipeline task was cancelled".to_string()
                };
                let step = mailroom_domain::ProcessingStep {
                    stage: "pipeline".into(),
                    attempt,
                    outcome: mailroom_domain::StepOutcome::Error,
                    started_at_ms,
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                    error: Some(message.clone()),
                };
                Err(StagePanic { message, step })
            }
        }
    }

    async fn complete_individually(
        &self,
        completed: &[CompletedJob],
    ) -> Result<Vec<bool>, mailroom_store::StoreError> {
        let mut recorded = Vec::with_capacity(completed.len());
        for item in completed {
            match self.store.complete_jobs(std::slice::from_ref(item)).await {
                Ok(flags) => recorded.push(flags.first().copied().unwrap_or(false)),
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => {
                    self.record_failure(
                        item.job.clone(),
                        item.steps.clone(),
                        "store",
                        format!("the result could not be stored: {e}"),
                    )
                    .await?;
                    recorded.push(false);
                }
            }
        }
        Ok(recorded)
    }

    async fn record_failure(
        &self,
        job: LeasedJob,
        steps: Vec<mailroom_domain::ProcessingStep>,
        stage: &str,
        message: String,
    ) -> Result<(), mailroom_store::StoreError> {
        let now = now_ms();
        let jitter = (uuid::Uuid::now_v7().as_u128() % 1000) as f64 / 1000.0;
        let retry_at_ms = self
            .config
            .retry
            .next_delay(job.attempts, jitter)
            .map(|d| now + d.as_millis() as i64);
        metrics::counter!(names::EMAIL_PROCESSING_ERRORS_TOTAL, "stage" => stage.to_string())
            .increment(1);
        self.state.failed.fetch_add(1, Ordering::Relaxed);
        let message_id = job.message_id.clone();
        let attempt = job.attempts;
        let recorded = self
            .store
            .fail_job(&FailedJob {
                job,
                steps,
                error: format!("{stage}: {message}"),
                retry_at_ms,
                now_ms: now,
            })
            .await?;
        if recorded {
            match retry_at_ms {
                Some(at) => {
                    warn!(%message_id, stage, attempt, error = %message, retry_in_ms = at - now, "processing failed; retry scheduled")
                }
                None => {
                    error!(%message_id, stage, attempt, error = %message, "processing failed on the last attempt; job is dead")
                }
            }
        }
        Ok(())
    }
}

/// A pipeline run that ended in a panic, as a failed history step.
struct StagePanic {
    message: String,
    step: mailroom_domain::ProcessingStep,
}

/// Buries jobs whose lease expired on their last attempt, and refreshes the
/// queue gauges, once a second.
async fn housekeeping(store: Store, config: WorkerConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        match store
            .bury_exhausted_leases(config.retry.max_attempts, now)
            .await
        {
            Ok(n) if n > 0 => warn!(
                jobs = n,
                "jobs dead after their lease expired on the last attempt"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "lease reaping failed"),
        }
        if let Err(e) = store.checkpoint().await {
            warn!(error = %e, "database checkpoint failed");
        }
        if let Ok(stats) = store.queue_stats(now).await {
            metrics::gauge!(names::QUEUE_DEPTH).set(stats.depth as f64);
            metrics::gauge!(names::QUEUE_DEAD_JOBS).set(stats.dead as f64);
        }
    }
}
