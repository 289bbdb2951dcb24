//! Storage adapter: every SQL statement of mailroom lives here, for SQLite
//! (the embedded default) and PostgreSQL (scale-out), through sqlx's `Any`
//! driver so one query text serves both where the dialects agree.
//!
//! Invariants:
//! - Nothing outside this crate writes SQL.
//! - Timestamps are `i64` milliseconds since the Unix epoch, UTC.
//! - Every multi-row change that must be atomic (ingest = message + raw +
//!   job; completion = job removal + view + history) is one transaction.
//! - Mail at rest is sealed here and only here (`sealing.rs`): raw bytes
//!   and parsed views leave this crate in the clear and enter it in the
//!   clear; with a data key configured they are AES-256-GCM on disk.
//! - On SQLite all writes go through a single-connection pool: SQLite admits
//!   one writer at a time, and queueing writers in the pool is fairer and
//!   cheaper than letting them spin on `SQLITE_BUSY`.

mod audit;
mod db;
mod error;
mod gate;
mod jobs;
mod keys;
mod leasing;
mod messages;
mod rotation;
mod sealing;
mod sources;
mod state;
mod stats;
mod submissions;

pub use audit::{AuditEntry, AuditEvent, AuditFilter, AuditPage};
pub use keys::{ApiKeyRecord, NewApiKey};
pub use rotation::{ResealBacklog, ResealBatch};
pub use sealing::{KeyringReloader, StoredRaw};

pub use db::{redact, Backend, DatabaseHealth, Store, StoreOptions};
pub use error::StoreError;
pub use jobs::{CompletedJob, FailedJob, JobInfo, LeasedJob, RequeueFilter};
pub use messages::{
    InsertOutcome, ListFilter, MessagePage, MessageRecord, MessageSummary, NewMessage,
    MAX_SEARCH_SCAN_ROWS,
};
pub use sources::{
    GraphSubscriptionRecord, LeasedNotification, LifecycleEventRecord, NotificationCounts,
    NotifiedMessage,
};
pub use stats::{ProcessingStats, QueueStats};
pub use submissions::{LeasedSubmission, SubmissionCounts, SubmissionInfo, SubmissionOutcome};
