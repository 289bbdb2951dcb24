//! The audit trail: who did what to which key, message or setting, and
//! every refused authentication. Events never carry secrets or message
//! content (key prefixes and ids only).

use mailroom_store::{AuditEvent, Store, StoreError};
use mailroom_telemetry::names;
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;

/// Who acted: a key's public prefix (`mr_AbCd1234`), `cli:<user>` or
/// `system`, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub ip: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            ip: None,
        }
    }

    /// The operator at this machine's terminal.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            name: format!("cli:{user}"),
            ip: None,
        }
    }
}

/// Action names recorded in the log. Stable: operators filter on them.
pub mod actions {
    pub const KEY_CREATE: &str = "key.create";
    pub const KEY_REVOKE: &str = "key.revoke";
    pub const KEY_ROTATE: &str = "key.rotate";
    pub const KEY_BOOTSTRAP: &str = "key.bootstrap";
    pub const AUTH_FAILURE: &str = "auth.failure";
    pub const CONFIG_CHANGE: &str = "config.change";
    pub const MESSAGE_DELETE: &str = "message.delete";
    pub const PROCESS_TRIGGER: &str = "process.trigger";
    pub const DATA_KEY_RESEAL: &str = "data_key.reseal";
    pub const MODEL_LEARN: &str = "model.learn";
    pub const SUBMISSION_RETRY: &str = "submission.retry";
}

/// Most refused-authentication events waiting to be written; past it they
/// are dropped and counted, so a flood of bad requests cannot queue
/// unbounded writes.
const BACKGROUND_QUEUE: usize = 4096;

/// Writes audit events: decisions of consequence synchronously (the action
/// is not reported done before its record is stored), high-volume events
/// (refused authentication) through a bounded background writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    background: mpsc::Sender<Queued>,
}

/// What the background writer receives.
#[derive(Debug)]
enum Queued {
    Event(AuditEvent),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

impl AuditLog {
    /// Starts the background writer on the current runtime.
    pub fn start(store: Store) -> Self {
        let (background, queue) = mpsc::channel(BACKGROUND_QUEUE);
        tokio::spawn(write_in_batches(store.clone(), queue));
        Self { store, background }
    }

    /// An event for `actor`, now.
    pub fn event(
        actor: &Actor,
        action: &str,
        outcome: &str,
        target: Option<&str>,
        details: Option<serde_json::Value>,
    ) -> AuditEvent {
        AuditEvent {
            at_ms: now_ms(),
            action: action.into(),
            outcome: outcome.into(),
            actor: Some(actor.name.clone()),
            ip: actor.ip.clone(),
            target: target.map(str::to_string),
            details,
        }
    }

    /// Stores the event before returning.
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.store.append_audit(std::slice::from_ref(&event)).await
    }

    /// Queues the event for the background writer (dropped and counted in
    /// `audit_events_dropped_total` when the writer is saturated).
    pub fn record_soon(&self, event: AuditEvent) {
        if self.background.try_send(Queued::Event(event)).is_err() {
            metrics::counter!(names::AUDIT_EVENTS_DROPPED_TOTAL).increment(1);
        }
    }

    /// Waits until every event queued so far is written (at shutdown,
    /// before the database closes).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.background.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_in_batches(store: Store, mut queue: mpsc::Receiver<Queued>) {
    let mut received = Vec::with_capacity(256);
    while queue.recv_many(&mut received, 256).await > 0 {
        let mut events = Vec::with_capacity(received.len());
        let mut flushes = Vec::new();
        for item in received.drain(..) {
            match item {
                Queued::Event(e) => events.push(e),
                Queued::Flush(done) => flushes.push(done),
            }
        }
        if let Err(e) = store.append_audit(&events).await {
            tracing::warn!(error = %e, events = events.len(), "writing audit events failed");
            metrics::counter!(names::AUDIT_EVENTS_DROPPED_TOTAL).increment(events.len() as u64);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
