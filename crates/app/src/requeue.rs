//! Re-queueing work (`POST /process/trigger`, the MCP reprocess tool): the
//! jobs are made runnable and the idle workers woken, so the work starts
//! now rather than at the next poll.

use mailroom_domain::MessageId;
use mailroom_store::{RequeueFilter, Store, StoreError};
use tokio::sync::Notify;

use crate::now_ms;

/// Re-queues what `filter` selects and wakes the workers; returns the
/// messages re-queued.
pub async fn requeue_and_wake(
    store: &Store,
    wake: &Notify,
    filter: &RequeueFilter,
) -> Result<Vec<MessageId>, StoreError> {
    let requeued = store.requeue(filter, now_ms()).await?;
    // One waiter may be between polls: notify_one stores a permit for it.
    wake.notify_waiters();
    wake.notify_one();
    Ok(requeued)
}
