//! Fetchers: lease queued notified messages, download their MIME
//! (`/messages/{id}/$value`) and hand it to the one ingest path, so a
//! Graph message is stored, deduplicated and processed like any other.
//! Every replica runs them; leases keep two from fetching the same row.

use std::{sync::Arc, time::Duration};

use mailroom_app::{now_ms, run_leased, IngestError, IngestService, Source};
use mailroom_domain::RetryPolicy;
use mailroom_store::{LeasedNotification, Store};
use mailroom_telemetry::names;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{client::read_limited, GraphClient, GraphError};

/// A lease long enough for the client's own retries on a throttled fetch.
const LEASE: Duration = Duration::from_secs(300);
/// Poll interval when nothing wakes the fetchers (another replica queued).
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Fetcher {
    pub(crate) client: GraphClient,
    pub(crate) store: Store,
    pub(crate) ingest: IngestService,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) retry: RetryPolicy,
}

enum Fetched {
    Ingested { message_id: String, duplicate: bool },
    Gone,
}

impl Fetcher {
    /// Runs until `stop`, with `settings.fetchers` downloads in flight.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let token = uuid::Uuid::now_v7().to_string();
        let lease = |room: usize| {
            let (this, token) = (Arc::clone(&self), token.clone());
            async move {
                this.store
                    .lease_notified(
                        &token,
                        room as u32,
                        now_ms(),
                        LEASE.as_millis() as i64,
                        this.client.settings().fetch_attempts,
                    )
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "cannot lease notified messages");
                        Vec::new()
                    })
            }
        };
        let work = |item: LeasedNotification| {
            let (this, token) = (Arc::clone(&self), token.clone());
            async move { this.one(item, &token).await }
        };
        let slots = self.client.settings().fetchers;
        let wake = Some(Arc::clone(&self.wake));
        run_leased(slots, lease, work, wake, IDLE_POLL, stop).await;
    }

    async fn one(&self, item: LeasedNotification, token: &str) {
        let result = self.fetch(&item).await;
        let now = now_ms();
        let stored = match result {
            Ok(Fetched::Ingested {
                message_id,
                duplicate,
            }) => {
                count(if duplicate { "duplicate" } else { "ingested" });
                self.store
                    .finish_notified(item.id, token, Some(&message_id), None, now)
                    .await
            }
            Ok(Fetched::Gone) => {
                count("gone");
                self.store
                    .finish_notified(
                        item.id,
                        token,
                        None,
                        Some("the message was no longer in the mailbox"),
                        now,
                    )
                    .await
            }
            Err(e) => {
                let transient = e.is_transient();
                let jitter = (uuid::Uuid::now_v7().as_u128() % 1000) as f64 / 1000.0;
                let retry_at = transient
                    .then(|| self.retry.next_delay(item.attempts, jitter))
                    .flatten()
                    .map(|d| now + d.as_millis() as i64);
                count(if retry_at.is_some() { "retry" } else { "dead" });
                warn!(mailbox = %item.mailbox, graph_message_id = %item.graph_message_id, attempts = item.attempts, error = %e, retry = retry_at.is_some(), "fetching a notified message failed");
                self.store
                    .fail_notified(item.id, token, &e.to_string(), retry_at, now)
                    .await
            }
        };
        if let Err(e) = stored {
            // The lease runs out and the row is fetched again; ingest
            // deduplicates the bytes.
            warn!(error = %e, "cannot record a fetch result");
        }
    }

    async fn fetch(&self, item: &LeasedNotification) -> Result<Fetched, GraphError> {
        let limit = self.ingest.max_bytes();
        let Some(resp) = self
            .client
            .open_message_mime(&item.mailbox, &item.graph_message_id)
            .await?
        else {
            return Ok(Fetched::Gone);
        };
        // Reserve the ingest budget before reading the body, as every
        // source does: the declared size, or the limit when undeclared.
        let size = resp.content_length().map_or(limit, |n| n as usize);
        let _reservation = self
            .ingest
            .reserve(size)
            .await
            .map_err(|e| GraphError::Exhausted {
                op: "ingest",
                attempts: 1,
                last: e.to_string(),
            })?;
        let raw = match read_limited("get_message_mime", resp, limit).await {
            Err(GraphError::TooLarge { limit }) => {
                return Err(GraphError::Protocol {
                    op: "ingest",
                    reason: format!("the message is larger than the ingest limit of {limit} bytes"),
                })
            }
            other => other?,
        };
        match self.ingest.ingest(raw, Source::Graph).await {
            Ok(receipt) => {
                debug!(message_id = %receipt.id, duplicate = receipt.duplicate, "Graph message ingested");
                Ok(Fetched::Ingested {
                    message_id: receipt.id.to_string(),
                    duplicate: receipt.duplicate,
                })
            }
            Err(e @ (IngestError::Busy | IngestError::Store(_))) => Err(GraphError::Exhausted {
                op: "ingest",
                attempts: 1,
                last: e.to_string(),
            }),
            // Not a message we can store (too large, not RFC 5322): dead,
            // with the reason, for an operator to look at.
            Err(e) => Err(GraphError::Protocol {
                op: "ingest",
                reason: e.to_string(),
            }),
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!(names::GRAPH_FETCHES_TOTAL, "outcome" => outcome).increment(1);
}
