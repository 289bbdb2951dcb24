//! The loop every consumer of a leased queue runs (Graph fetchers,
//! downstream submission): keep up to `slots` items in flight, lease more
//! as room frees up, sleep until woken, an item finishes, or `poll`.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Runs until `stop`. `lease(room)` returns up to `room` items (an error
/// is the caller's to log; it returns nothing then); `work(item)` handles
/// one. Items still in flight at `stop` are abandoned: their lease brings
/// them back.
pub async fn run_leased<T, L, LF, W, WF>(
    slots: usize,
    lease: L,
    work: W,
    wake: Option<Arc<Notify>>,
    poll: Duration,
    stop: CancellationToken,
) where
    T: Send + 'static,
    L: Fn(usize) -> LF,
    LF: Future<Output = Vec<T>>,
    W: Fn(T) -> WF,
    WF: Future<Output = ()> + Send + 'static,
{
    let slots = slots.max(1);
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        let room = slots - running.len();
        let leased = if room > 0 {
            lease(room).await
        } else {
            Vec::new()
        };
        let got = leased.len();
        for item in leased {
            running.spawn(work(item));
        }
        if got > 0 && running.len() < slots {
            continue;
        }
        let woken = async {
            match &wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = woken => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    running.abort_all();
}
