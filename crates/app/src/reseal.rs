//! Re-encrypting stored mail under the current data key, while the server
//! keeps running.

use std::time::Duration;

use mailroom_store::{ResealBacklog, Store, StoreError};
use mailroom_telemetry::names;

/// Messages examined per batch (one short write transaction each).
const BATCH: u32 = 100;
/// Passes over the table before giving up on records that keep arriving
/// under an old key (a server that has not loaded the new key yet).
const MAX_PASSES: u32 = 30;
const BETWEEN_PASSES: Duration = Duration::from_secs(1);

/// How far a re-encryption has come.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResealProgress {
    pub resealed: u64,
    /// Records still to do when the current pass started.
    pub pass_total: u64,
    pub pass: u32,
}

/// The outcome of [`reseal_all`].
#[derive(Debug, Clone, Copy)]
pub struct ResealSummary {
    pub resealed: u64,
    pub passes: u32,
    /// Records still not under the current key (0 when done).
    pub remaining: ResealBacklog,
}

/// Re-seals every raw message and parsed view not under the current key,
/// pass after pass until none is left (rows changed or written under an
/// old key meanwhile are taken by the next pass). Then empties SQLite's
/// WAL so old ciphertext and plaintext do not linger on disk.
pub async fn reseal_all(
    store: &Store,
    on_progress: &mut (dyn FnMut(ResealProgress) + Send),
) -> Result<ResealSummary, StoreError> {
    let mut progress = ResealProgress::default();
    let mut backlog = store.reseal_backlog().await?;
    while backlog.total() > 0 && progress.pass < MAX_PASSES {
        progress.pass += 1;
        progress.pass_total = backlog.total();
        on_progress(progress);
        let mut after: Option<String> = None;
        loop {
            let batch = store.reseal_batch(after.as_deref(), BATCH).await?;
            if batch.messages == 0 {
                break;
            }
            progress.resealed += batch.resealed;
            metrics::counter!(names::DATA_KEY_RESEALED_TOTAL).increment(batch.resealed);
            on_progress(progress);
            after = batch.last_id;
        }
        backlog = store.reseal_backlog().await?;
        if backlog.total() > 0 {
            tokio::time::sleep(BETWEEN_PASSES).await;
        }
    }
    store.truncate_wal().await?;
    Ok(ResealSummary {
        resealed: progress.resealed,
        passes: progress.pass,
        remaining: backlog,
    })
}
