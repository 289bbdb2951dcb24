//! Priority at SQLite's single write connection.
//!
//! Acknowledging a sender (ingest) is latency-critical; background
//! processing is not, and its results can wait a few milliseconds in a
//! durable queue. So when both want the one write connection, ingest goes
//! first: a background writer takes its turn only when no ingest is waiting.
//! PostgreSQL has real write concurrency and runs ungated.

use std::sync::atomic::{AtomicUsize, Ordering};

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
        self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.turn.lock().await;
        self.urgent_waiting.fetch_sub(1, Ordering::SeqCst);
        Turn {
            _guard: Some(guard),
            gate: self,
            urgent: true,
        }
    }

    /// A turn when no urgent writer is waiting.
    pub(crate) async fn background(&self) -> Turn<'_> {
        if !self.enabled {
            return Turn {
                _guard: None,
                gate: self,
                urgent: false,
            };
        }
        loop {
            while self.urgent_waiting.load(Ordering::SeqCst) > 0 {
                // The timeout covers a wake-up lost between the check and
                // the registration; it bounds the wait, never correctness.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(5),
                    self.urgent_done.notified(),
                )
                .await;
            }
            let guard = self.turn.lock().await;
            if self.urgent_waiting.load(Ordering::SeqCst) == 0 {
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
    async fn disabled_gate_never_blocks() {
        let gate = WriteGate::new(false);
        let _a = gate.background().await;
        let _b = gate.urgent().await;
        let _c = gate.background().await;
    }
}
