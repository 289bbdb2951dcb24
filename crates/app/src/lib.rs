//! Use cases of mailroom, independent of any transport: ingest a message,
//! process queued jobs through the pipeline of stages, report status,
//! re-queue failed work, read messages. HTTP, CLI, MCP and (later) mailbox sources call
//! into this crate; they never touch the store or the queue directly for
//! anything that carries a rule.
//!
//! Invariant: no HTTP types, no CLI types; the pipeline knows stages only by
//! the [`Stage`] trait.

mod audit;
mod charge;
mod clock;
mod error;
mod ingest;
mod keys;
mod leased;
mod pipeline;
pub mod query;
mod requeue;
mod reseal;
mod scoring;
mod status;
mod worker;

pub use audit::{actions, Actor, AuditLog};
pub use charge::{ChargeFuture, ChargeRefused, RateCharge};
pub use keys::{AuthFailure, IssuedKey, KeyError, KeyInfo, KeyService, Principal, CACHE_TTL};
pub use leased::run_leased;
pub use requeue::requeue_and_wake;
pub use reseal::{
    reseal_all, ResealProgress, ResealSummary, KEYRING_REPORT_EVERY, KEYRING_REPORT_STALE,
};

pub use clock::{now_ms, start_of_utc_day_ms};
pub use error::IngestError;
pub use ingest::{header_message_id, IngestReceipt, IngestService, Reservation, Source};
pub use pipeline::{
    FaultInjectionStage, ParseStage, Pipeline, PipelineRun, ScoreStage, Stage, StageContext,
    StageError, StageFuture,
};
pub use scoring::{
    learned_json, load_model, now_unix, save_model, ScoreService, ScoringError, DEFAULT_MODEL,
};
pub use status::{ProcessStatus, ProcessingStatsView, WorkersView};
pub use worker::{WorkerConfig, WorkerPool, WorkerState};
