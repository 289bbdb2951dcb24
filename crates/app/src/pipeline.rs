//! The processing pipeline: an ordered list of stages run on each leased
//! message. Later capabilities (scoring, classification, routing, actions)
//! add stages here; the worker pool neither knows nor cares which.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use mailroom_domain::{MessageId, MessageView, ProcessingStep, StepOutcome};

use mailroom_score::Envelope;

use crate::{clock::now_ms, scoring::ScoreService};

/// Raw messages larger than this are parsed on the blocking pool so one huge
/// message cannot stall the async workers.
const BLOCKING_PARSE_BYTES: usize = 256 * 1024;

/// What stages read and fill in for one message.
#[derive(Debug)]
pub struct StageContext {
    pub message_id: MessageId,
    pub attempt: u32,
    pub raw: Arc<Vec<u8>>,
    pub view: Option<MessageView>,
}

/// A stage failure: recorded in the history; the job is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StageError(pub String);

pub type StageFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StageError>> + Send + 'a>>;

/// One step of processing.
pub trait Stage: Send + Sync {
    /// Short stable name, shown in the history (`parse`, `score`, ...).
    fn name(&self) -> &'static str;
    fn run<'a>(&'a self, ctx: &'a mut StageContext) -> StageFuture<'a>;
}

/// Parses the MIME structure into the [`MessageView`].
#[derive(Debug, Default)]
pub struct ParseStage;

impl Stage for ParseStage {
    fn name(&self) -> &'static str {
        "parse"
    }

    fn run<'a>(&'a self, ctx: &'a mut StageContext) -> StageFuture<'a> {
        Box::pin(async move {
            let view = if ctx.raw.len() > BLOCKING_PARSE_BYTES {
                let raw = Arc::clone(&ctx.raw);
                tokio::task::spawn_blocking(move || mailroom_mail::parse_view(&raw))
                    .await
                    .map_err(|e| StageError(format!("parser task failed: {e}")))?
            } else {
                mailroom_mail::parse_view(&ctx.raw)
            };
            ctx.view = Some(view);
            Ok(())
        })
    }
}

/// Scores the message and stores the report with its parsed view.
#[derive(Debug, Clone)]
pub struct ScoreStage {
    pub service: Arc<ScoreService>,
    /// Settings profile for mail coming through the pipeline.
    pub profile: String,
}

impl Stage for ScoreStage {
    fn name(&self) -> &'static str {
        "score"
    }

    fn run<'a>(&'a self, ctx: &'a mut StageContext) -> StageFuture<'a> {
        Box::pin(async move {
            let report = self
                .service
                .score_async(
                    Arc::clone(&ctx.raw),
                    Envelope::default(),
                    Some(self.profile.clone()),
                )
                .await
                .map_err(|e| StageError(e.to_string()))?;
            metrics::counter!(
                mailroom_telemetry::names::MAIL_SCORE_ACTIONS_TOTAL,
                "action" => report.action.as_str()
            )
            .increment(1);
            let view = ctx.view.get_or_insert_with(MessageView::default);
            view.score = Some(report);
            Ok(())
        })
    }
}

/// Test-only failure injection, enabled by configuration
/// (`fault_injection = true`), never by message content alone: a message
/// carrying `X-Mailroom-Fault: fail` fails this stage, and
/// `X-Mailroom-Fault: delay-ms=N` makes it take N milliseconds (at most
/// 10 s). Black-box tests use it to prove retries, dead letters and crash
/// recovery through the real binary.
#[derive(Debug, Default)]
pub struct FaultInjectionStage;

impl Stage for FaultInjectionStage {
    fn name(&self) -> &'static str {
        "fault_injection"
    }

    fn run<'a>(&'a self, ctx: &'a mut StageContext) -> StageFuture<'a> {
        Box::pin(async move {
            let head_len = ctx.raw.len().min(64 * 1024);
            let head = String::from_utf8_lossy(&ctx.raw[..head_len]);
            for line in head.lines() {
                if line.trim().is_empty() {
                    break;
                }
                let Some(value) = line.strip_prefix("X-Mailroom-Fault:") else {
                    continue;
                };
                let value = value.trim();
                if value == "panic" {
                    panic!("injected panic (X-Mailroom-Fault: panic)");
                }
                if value == "fail" {
                    return Err(StageError(
                        "injected failure (X-Mailroom-Fault: fail)".into(),
                    ));
                }
                if let Some(ms) = value
                    .strip_prefix("delay-ms=")
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    tokio::time::sleep(std::time::Duration::from_millis(ms.min(10_000))).await;
                }
            }
            Ok(())
        })
    }
}

/// The ordered stages, and the runner that records each one's history.
#[derive(Clone)]
pub struct Pipeline {
    stages: Arc<Vec<Box<dyn Stage>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.stages.iter().map(|s| s.name()))
            .finish()
    }
}

/// Result of running the pipeline once.
#[derive(Debug)]
pub struct PipelineRun {
    pub steps: Vec<ProcessingStep>,
    pub view: Option<MessageView>,
    pub error: Option<(String, String)>,
    pub elapsed_ms: f64,
}

impl Pipeline {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        Self {
            stages: Arc::new(stages),
        }
    }

    /// The default pipeline of this release: parse.
    /// fault injection (tests only), parse, then score when a scoring
    /// service is given.
    pub fn standard(fault_injection: bool, scoring: Option<ScoreStage>) -> Self {
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        if fault_injection {
            stages.push(Box::new(FaultInjectionStage));
        }
        stages.push(Box::new(ParseStage));
        if let Some(score) = scoring {
            stages.push(Box::new(score));
        }
        Self::new(stages)
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Runs every stage in order, stopping at the first failure.
    pub async fn run(&self, ctx: &mut StageContext) -> PipelineRun {
        let started = Instant::now();
        let mut steps = Vec::with_capacity(self.stages.len());
        let mut error = None;
        for stage in self.stages.iter() {
            let stage_started_at = now_ms();
            let t = Instant::now();
            let result = stage.run(ctx).await;
            let duration_ms = t.elapsed().as_secs_f64() * 1000.0;
            let failed = result.as_ref().err().map(|e| e.0.clone());
            steps.push(ProcessingStep {
                stage: stage.name().to_string(),
                attempt: ctx.attempt,
                outcome: if failed.is_some() {
                    StepOutcome::Error
                } else {
                    StepOutcome::Ok
                },
                started_at_ms: stage_started_at,
                duration_ms,
                error: failed.clone(),
            });
            if let Some(message) = failed {
                error = Some((stage.name().to_string(), message));
                break;
            }
        }
        PipelineRun {
            steps,
            view: ctx.view.take(),
            error,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}
