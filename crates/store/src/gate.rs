//! Priority at SQLite's single write connection.
//!
//! Acknowledging a sender (ingest) is latency-critical; background
//! processing is not, and its results can wait a few milliseconds in a
//! durable queue. So when both want the one write connection, ingest goes
//! first: a background writer takes its turn only when no ingest is waiting.
//! PostgreSQL has real write concurrency and runs ungated.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{Mutex, MutexGuard, Notify};

#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    enabled: bool,
    turn: Mutex<()>,
    urgent_waiting: AtomicUsize,
    urgent_done: Notify,
}

/// Held for the duration of a write transaction.
pub(crate) struct Turn<'a> {
    _guard: Option<MutexGuard<'a, ()>>,
    gate: &'a WriteGate,
    urgent: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.urgent && self.gate.enabled {
            self.gate.urgent_done.notify_waiters();
        }
    }
}

/// Counts an urgent writer as waiting for as long as it exists, so a
/// waiter whose future is dropped (a client that disconnects) cannot leave
/// the count raised and shut background writers out for good.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The longest a background writer steps aside for urgent ones; after that
/// it queues with them in arrival order, so processing cannot starve under
/// sustained ingest.
const MAX_YIELD: Duration = Duration::from_millis(50);

impl WriteGate {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// A turn ahead of every background writer.
    pub(crate) async fn urgent(&self) -> Turn<'_> {
        if !self.enabled {
            return Turn {
                _guard: None,
                gate: self,
                urgent: true,
            };
        }
        let waiting = Waiting::new(&self.urgent_waiting);
        let guard = self.turn.lock().await;
        drop(waiting);
        Turn {
            _guard: Some(guard),
            gate: self,
            urgent: true,
        }
    }

    /// A turn when no urgent writer is waiting, or after [`MAX_YIELD`].
    pub(crate) async fn background(&self) -> Turn<'_> {
        if !self.enabled {
            return Turn {
                _guard: None,
                gate: self,
                urgent: false,
            };
        }
        let started = Instant::now();
        loop {
            while self.urgent_waiting.load(Ordering::SeqCst) > 0 && started.elapsed() < MAX_YIELD {
                // The timeout covers a wake-up lost between the check and
                // the registration; it bounds the wait, never correctness.
                let _ = tokio::time::timeout(Duration::from_millis(5), self.urgent_done.notified())
                    .await;
            }
            let guard = self.turn.lock().await;
            if self.urgent_waiting.load(Ordering::SeqCst) == 0 || started.elapsed() >= MAX_YIELD {
                return Turn {
                    _guard: Some(guard),
                    gate: self,
                    urgent: false,
                };
            }
            // An urgent writer queued while we waited for the lock: let it by.
            drop(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn urgent_writers_pass_waiting_background_writers() {
        let gate = Arc::new(WriteGate::new(true));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = gate.background().await;
        let background = {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            tokio::spawn(async move {
                let _turn = gate.background().await;
                order.lock().expect("lock").push("background");
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let urgent = {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            tokio::spawn(async move {
                let _turn = gate.urgent().await;
                order.lock().expect("lock").push("urgent");
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        urgent.await.expect("urgent");
        background.await.expect("background");
        assert_eq!(*order.lock().expect("lock"), vec!["urgent", "background"]);
    }

    #[tokio::test]
    async fn a_dropped_urgent_waiter_does_not_block_background_writers() {
        let gate = Arc::new(WriteGate::new(true));
        let held = gate.background().await;
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _turn = gate.urgent().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(gate.urgent_waiting.load(Ordering::SeqCst), 0);
        tokio::time::timeout(Duration::from_millis(20), gate.background())
            .await
            .expect("background turn after the waiter left");
    }

    #[tokio::test]
    async fn background_writers_get_a_turn_under_sustained_urgent_load() {
        let gate = Arc::new(WriteGate::new(true));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hammers = Vec::new();
        for _ in 0..4 {
            let (gate, stop) = (Arc::clone(&gate), Arc::clone(&stop));
            hammers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let _turn = gate.urgent().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let got = tokio::time::timeout(Duration::from_secs(2), gate.background())
            .await
            .is_ok();
        stop.store(true, Ordering::SeqCst);
        for h in hammers {
            let _ = h.await;
        }
        assert!(got, "background writer starved");
    }

    #[tokio::test]
    async fn disabled_gate_never_blocks() {
        let gate = WriteGate::new(false);
        let _a = gate.background().await;
        let _b = gate.urgent().await;
        let _c = gate.background().await;
    }
}
