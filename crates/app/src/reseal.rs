//! Re-encrypting stored mail under the current data key, while servers
//! keep running.
//!
//! Servers report the key they seal with (`Store::report_keyring`, at
//! start, after every reload and every few seconds). A re-encryption is
//! done only when no record is under another key *and* every running server
//! reports the current key; then it waits a moment and checks once more,
//! because a server that has just switched may still be committing records
//! it sealed a moment before.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mailroom_store::{ResealBacklog, Store, StoreError};
use mailroom_telemetry::names;

use crate::clock::now_ms;

/// Messages examined per batch (one short write transaction each).
const BATCH: u32 = 100;
/// A server that has not reported for this long is taken to be gone.
pub const KEYRING_REPORT_STALE: Duration = Duration::from_secs(30);
/// How often servers report.
pub const KEYRING_REPORT_EVERY: Duration = Duration::from_secs(5);
/// Time for records sealed just before a switch to be committed.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest to wait for servers to load the current key.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// How far a re-encryption has come.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResealProgress {
    pub resealed: u64,
    /// Records still to do when the current pass started.
    pub pass_total: u64,
    pub pass: u32,
    /// Running servers not yet sealing with the current key.
    pub servers_behind: usize,
}

/// The outcome of [`reseal_all`].
#[derive(Debug, Clone)]
pub struct ResealSummary {
    pub resealed: u64,
    pub passes: u32,
    /// Records still not under the current key (0 when done).
    pub remaining: ResealBacklog,
    /// Running servers still on another key (0 when done).
    pub servers_behind: usize,
    /// Records that no configured key opens ("message id raw|view", why),
    /// left as they are.
    pub unreadable: Vec<(String, String)>,
}

/// Re-seals every raw message and parsed view not under the current key
/// (see the module docs for when it is done), then empties SQLite's WAL so
/// old ciphertext and plaintext do not linger on disk.
pub async fn reseal_all(
    store: &Store,
    on_progress: &mut (dyn FnMut(ResealProgress) + Send),
) -> Result<ResealSummary, StoreError> {
    let current =
        store
            .keyring()
            .map(|r| r.current_id().to_string())
            .ok_or(StoreError::Sealing(
                mailroom_security::SecurityError::NoDataKey,
            ))?;
    let mut progress = ResealProgress::default();
    let deadline = Instant::now() + MAX_WAIT;
    let mut confirming = false;
    let mut unreadable: Unreadable = HashMap::new();
    loop {
        let backlog =
            reseal_pass_until_empty(store, &mut progress, &mut unreadable, on_progress).await?;
        let stale_before = now_ms() - KEYRING_REPORT_STALE.as_millis() as i64;
        progress.servers_behind = store
            .keyring_reports(stale_before)
            .await?
            .iter()
            .filter(|(_, key)| key.as_deref() != Some(current.as_str()))
            .count();
        on_progress(progress);
        let left = backlog.total().saturating_sub(unreadable.len() as u64);
        let clean = left == 0 && progress.servers_behind == 0;
        let summary = |backlog| ResealSummary {
            resealed: progress.resealed,
            passes: progress.pass,
            remaining: backlog,
            servers_behind: progress.servers_behind,
            unreadable: unreadable
                .iter()
                .map(|((id, kind), why)| (format!("{id} {kind}"), why.clone()))
                .collect(),
        };
        if clean && confirming {
            store.truncate_wal().await?;
            return Ok(summary(backlog));
        }
        if !clean && Instant::now() > deadline {
            return Ok(summary(backlog));
        }
        confirming = clean;
        tokio::time::sleep(if clean {
            SETTLE
        } else {
            Duration::from_secs(1)
        })
        .await;
    }
}

/// Records no configured key opens: (message id, raw|view) → why.
type Unreadable = HashMap<(String, &'static str), String>;

/// Passes over the table until one finds nothing left to do but the
/// unreadable records (or ten passes in a row keep finding records
/// arriving under an old key).
async fn reseal_pass_until_empty(
    store: &Store,
    progress: &mut ResealProgress,
    unreadable: &mut Unreadable,
    on_progress: &mut (dyn FnMut(ResealProgress) + Send),
) -> Result<ResealBacklog, StoreError> {
    let mut backlog = store.reseal_backlog().await?;
    for _ in 0..10 {
        if backlog.total() <= unreadable.len() as u64 {
            break;
        }
        progress.pass += 1;
        progress.pass_total = backlog.total();
        on_progress(*progress);
        let mut after: Option<String> = None;
        loop {
            let batch = store.reseal_batch(after.as_deref(), BATCH).await?;
            if batch.messages == 0 {
                break;
            }
            for (id, kind, why) in batch.unreadable {
                // Once per record however many passes meet it.
                unreadable.insert((id, kind), why);
            }
            progress.resealed += batch.resealed;
            metrics::counter!(names::DATA_KEY_RESEALED_TOTAL).increment(batch.resealed);
            on_progress(*progress);
            after = batch.last_id;
        }
        backlog = store.reseal_backlog().await?;
    }
    Ok(backlog)
}
