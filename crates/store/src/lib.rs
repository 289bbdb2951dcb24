//! Storage adapter: every SQL statement of mailroom lives here, for SQLite
//! (the embedded default) and PostgreSQL (scale-out), through sqlx's `Any`
//! driver so one query text serves both where the dialects agree.
//!
//! Invariants:
//! - Nothing outside this crate writes SQL.
//! - Timestamps are `i64` milliseconds since the Unix epoch, UTC.
//! - Every multi-row change that must be atomic (ingest = message + raw +
//!   job; completion = job removal + view + history) is one transaction.
//! - On SQLite all writes go through a single-connection pool: SQLite admits
//!   one writer at a time, and queueing writers in the pool is fairer and
//!   cheaper than letting them spin on `SQLITE_BUSY`.

mod db;
mod error;
mod gate;
mod jobs;
mod messages;
mod stats;

pub use db::{redact, Backend, DatabaseHealth, Store, StoreOptions};
pub use error::StoreError;
pub use jobs::{CompletedJob, FailedJob, JobInfo, LeasedJob, RequeueFilter};
pub use messages::{
    InsertOutcome, ListFilter, MessagePage, MessageRecord, MessageSummary, NewMessage,
};
pub use stats::{ProcessingStats, QueueStats};
