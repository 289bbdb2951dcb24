//! What the webhook does with a notification POST: check each item's
//! clientState against its subscription (constant time, on hashes), queue
//! the messages durably (duplicates collapse on the queue's unique key),
//! hand lifecycle events to the subscription owner, and wake the fetchers.
//! Any replica may receive; only the owner acts on subscriptions.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use mailroom_app::now_ms;
use mailroom_store::{NotifiedMessage, Store};
use mailroom_telemetry::names;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::{api::NotificationCollection, GraphError};

/// The stored hash of a clientState.
pub fn client_state_hash(client_state: &str) -> String {
    hex::encode(Sha256::digest(client_state.as_bytes()))
}

/// How long a subscription's (mailbox, hash) stays cached: short, so a
/// replaced subscription's old id stops being accepted soon.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most cached subscriptions (bounded whatever ids callers send).
const CACHE_MAX: usize = 10_000;

#[derive(Clone)]
struct Known {
    mailbox: String,
    client_state_hash: String,
    loaded: Instant,
}

/// Counts of what one POST carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeOutcome {
    pub queued: u64,
    pub duplicates: u64,
    pub bad_client_state: u64,
    pub unknown_subscription: u64,
    pub lifecycle: u64,
    pub unusable: u64,
}

impl IntakeOutcome {
    /// Items that passed the clientState check.
    pub fn accepted(&self) -> u64 {
        self.queued + self.duplicates + self.lifecycle + self.unusable
    }
}

pub struct WebhookIntake {
    store: Store,
    known: RwLock<HashMap<String, Known>>,
    /// Woken when messages were queued (the fetchers wait on it).
    pub(crate) fetch_wake: Arc<Notify>,
    /// Woken when a lifecycle event was queued (the owner waits on it).
    pub(crate) owner_wake: Arc<Notify>,
}

impl WebhookIntake {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            known: RwLock::new(HashMap::new()),
            fetch_wake: Arc::new(Notify::new()),
            owner_wake: Arc::new(Notify::new()),
        }
    }

    /// Forgets a subscription at once (replaced or deleted by the owner in
    /// this process).
    pub(crate) fn forget(&self, subscription_id: &str) {
        if let Ok(mut known) = self.known.write() {
            known.remove(subscription_id);
        }
    }

    async fn lookup(&self, subscription_id: &str) -> Result<Option<Known>, GraphError> {
        if let Ok(known) = self.known.read() {
            if let Some(k) = known.get(subscription_id) {
                if k.loaded.elapsed() < CACHE_TTL {
                    return Ok(Some(k.clone()));
                }
            }
        }
        let Some(record) = self.store.graph_subscription(subscription_id).await? else {
            return Ok(None);
        };
        let entry = Known {
            mailbox: record.mailbox,
            client_state_hash: record.client_state_hash,
            loaded: Instant::now(),
        };
        if let Ok(mut known) = self.known.write() {
            if known.len() >= CACHE_MAX {
                known.retain(|_, k| k.loaded.elapsed() < CACHE_TTL);
                if known.len() >= CACHE_MAX {
                    known.clear();
                }
            }
            known.insert(subscription_id.to_string(), entry.clone());
        }
        Ok(Some(entry))
    }

    /// Checks and queues one POST's items. Returns only after everything
    /// accepted is committed.
    pub async fn accept(
        &self,
        collection: NotificationCollection,
    ) -> Result<IntakeOutcome, GraphError> {
        let mut outcome = IntakeOutcome::default();
        let mut messages = Vec::new();
        let mut seen = HashSet::new();
        let mut lifecycle = Vec::new();
        for item in collection.value {
            let Some(known) = self.lookup(&item.subscription_id).await? else {
                outcome.unknown_subscription += 1;
                continue;
            };
            let presented = client_state_hash(item.client_state.as_deref().unwrap_or_default());
            let matches: bool = presented
                .as_bytes()
                .ct_eq(known.client_state_hash.as_bytes())
                .into();
            if !matches {
                outcome.bad_client_state += 1;
                continue;
            }
            if let Some(event) = item.lifecycle_event {
                outcome.lifecycle += 1;
                lifecycle.push((item.subscription_id, event));
                continue;
            }
            // Basic notifications of messages: we asked for `created` only.
            let id = item
                .resource_data
                .and_then(|d| d.id)
                .filter(|id| !id.is_empty() && id.len() <= 512);
            match id {
                Some(id) if seen.insert((known.mailbox.clone(), id.clone())) => {
                    messages.push(NotifiedMessage {
                        mailbox: known.mailbox,
                        graph_message_id: id,
                        origin: "webhook",
                    })
                }
                Some(_) => outcome.duplicates += 1,
                None => outcome.unusable += 1,
            }
        }
        let now = now_ms();
        let queued = self.store.enqueue_notified(&messages, now).await?;
        outcome.queued = queued;
        outcome.duplicates += messages.len() as u64 - queued;
        self.store.enqueue_lifecycle_events(&lifecycle, now).await?;
        if queued > 0 {
            self.fetch_wake.notify_waiters();
        }
        if !lifecycle.is_empty() {
            self.owner_wake.notify_one();
        }
        count_items(&outcome);
        Ok(outcome)
    }
}

fn count_items(o: &IntakeOutcome) {
    for (outcome, n) in [
        ("queued", o.queued),
        ("duplicate", o.duplicates),
        ("bad_client_state", o.bad_client_state),
        ("unknown_subscription", o.unknown_subscription),
        ("lifecycle", o.lifecycle),
        ("unusable", o.unusable),
    ] {
        if n > 0 {
            metrics::counter!(names::WEBHOOK_NOTIFICATIONS_TOTAL, "outcome" => outcome)
                .increment(n);
        }
    }
}
