use std::{sync::Arc, time::Duration};

use mailroom_domain::MessageId;
use mailroom_store::{InsertOutcome, NewMessage, Store, StoreError};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::{clock::now_ms, IngestError};

/// Where a message came from; recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Import,
    Mcp,
    /// Fetched from Microsoft Graph after a notification or a delta catch-up.
    Graph,
    /// Fetched from an IMAP mailbox.
    Imap,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Import => "import",
            Source::Mcp => "mcp",
            Source::Graph => "graph",
            Source::Imap => "imap",
        }
    }
}

/// What the caller is told once the message is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    pub id: MessageId,
    pub duplicate: bool,
}

/// Most messages written in one group commit.
const MAX_GROUP: usize = 128;

/// A message waiting for the group-commit writer, with the caller's reply.
struct Pending {
    message: NewMessage,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.message.id)
            .finish()
    }
}

/// The one ingest path every source uses: admission check, content hash,
/// durable insert of the message with its job, then a wake-up for workers.
///
/// Inserts go through one writer task that commits whatever has queued up
/// while the previous commit ran (group commit): under load one transaction
/// carries many messages, and each caller is answered only after the
/// transaction holding its message has committed.
#[derive(Debug, Clone)]
pub struct IngestService {
    store: Store,
    max_bytes: usize,
    writer: mpsc::Sender<Pending>,
    budget: Arc<Semaphore>,
    budget_kib: usize,
}

/// Memory reserved for one message on its way in; released on drop.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] OwnedSemaphorePermit);

/// How long a message may wait for room in the memory budget before the
/// caller is told the server is busy.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of raw mail written in one group commit (a single statement
/// stays far below PostgreSQL's 1 GiB message limit).
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

impl IngestService {
    /// Starts the writer task on the current Tokio runtime. `max_inflight_bytes`
    /// bounds the memory of all messages being received at once.
    pub fn new(
        store: Store,
        max_bytes: usize,
        max_inflight_bytes: usize,
        wake: Arc<Notify>,
    ) -> Self {
        let (writer, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(group_commit_writer(store.clone(), queue, wake));
        let budget_kib = max_inflight_bytes.max(max_bytes).div_ceil(1024).max(1);
        Self {
            store,
            max_bytes,
            writer,
            budget: Arc::new(Semaphore::new(budget_kib)),
            budget_kib,
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Reserves memory for a message of up to `bytes` before it is read:
    /// every source holds a reservation while it buffers and ingests, so the
    /// total is bounded however many senders there are. Waits for room (at
    /// most 30 s, then [`IngestError::Busy`]).
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, IngestError> {
        let kib = bytes
            .min(self.max_bytes)
            .div_ceil(1024)
            .clamp(1, self.budget_kib) as u32;
        match tokio::time::timeout(
            RESERVE_TIMEOUT,
            Arc::clone(&self.budget).acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Reservation(permit)),
            _ => Err(IngestError::Busy),
        }
    }

    /// Stores `raw` and queues its processing. Returns only after the
    /// transaction committed, so an acknowledged message is never lost.
    /// The caller holds a [`Reservation`] for `raw` until this returns.
    pub async fn ingest(&self, raw: Vec<u8>, source: Source) -> Result<IngestReceipt, IngestError> {
        if raw.len() > self.max_bytes {
            return Err(IngestError::TooLarge {
                size: raw.len(),
                limit: self.max_bytes,
            });
        }
        mailroom_mail::check_ingestible(&raw)?;
        let id = MessageId::from_uuid(uuid::Uuid::now_v7());
        let content_hash = hex::encode(Sha256::digest(&raw));
        let header_message_id = header_message_id(&raw);
        // Sealed here, in the caller's task, so encryption runs in parallel
        // rather than in the one group-commit writer.
        let message = NewMessage {
            raw: self.store.stored_raw(&id, raw),
            id,
            content_hash,
            header_message_id,
            source: source.as_str(),
            received_at_ms: now_ms(),
        };
        let size = message.raw.len();
        let (reply, answer) = oneshot::channel();
        let closed = || {
            IngestError::Store(StoreError::BatchFailed {
                message: "the ingest writer has stopped".into(),
                unavailable: true,
            })
        };
        self.writer
            .send(Pending { message, reply })
            .await
            .map_err(|_| closed())?;
        let outcome = answer.await.map_err(|_| closed())??;
        let receipt = match outcome {
            InsertOutcome::Stored(id) => IngestReceipt {
                id,
                duplicate: false,
            },
            InsertOutcome::Duplicate(id) => IngestReceipt {
                id,
                duplicate: true,
            },
        };
        metrics::counter!(
            mailroom_telemetry::names::EMAILS_INGESTED_TOTAL,
            "source" => source.as_str(),
            "outcome" => if receipt.duplicate { "duplicate" } else { "stored" }
        )
        .increment(1);
        debug!(id = %receipt.id, duplicate = receipt.duplicate,
            size,  "message ingested");
        Ok(receipt)
    }
}

/// Drains the queue into transactions of up to [`MAX_GROUP`] messages.
async fn group_commit_writer(store: Store, mut queue: mpsc::Receiver<Pending>, wake: Arc<Notify>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut batch, MAX_GROUP).await > 0 {
        while !batch.is_empty() {
            let mut bytes = 0;
            let take = batch
                .iter()
                .position(|p| {
                    bytes += p.message.raw.len();
                    bytes > MAX_GROUP_BYTES
                })
                .unwrap_or(batch.len())
                .max(1);
            let group: Vec<Pending> = batch.drain(..take).collect();
            commit_group(&store, group, &wake).await;
        }
    }
}

/// One transaction for `group`; every caller is answered after it.
async fn commit_group(store: &Store, group: Vec<Pending>, wake: &Notify) {
    let messages: Vec<&NewMessage> = group.iter().map(|p| &p.message).collect();
    let result = store.insert_messages(&messages).await;
    drop(messages);
    match result {
        Ok(outcomes) => {
            let stored = outcomes
                .iter()
                .any(|o| matches!(o, InsertOutcome::Stored(_)));
            for (pending, outcome) in group.into_iter().zip(outcomes) {
                let _ = pending.reply.send(Ok(outcome));
            }
            if stored {
                wake.notify_one();
            }
        }
        Err(e) => {
            // The group failed as a whole: no caller's message is at fault,
            // so each is told the store is unavailable (503).
            let message = e.to_string();
            tracing::error!(error = %message, messages = group.len(), "ingest transaction failed");
            for pending in group {
                let _ = pending.reply.send(Err(StoreError::BatchFailed {
                    message: message.clone(),
                    unavailable: true,
                }));
            }
        }
    }
}

/// The Message-ID header (unfolded), read from the header block only and
/// without copying the message: the full parser runs later in the
/// pipeline, this only labels the stored row.
pub fn header_message_id(raw: &[u8]) -> Option<String> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line
            .get(..11)
            .filter(|name| name.eq_ignore_ascii_case(b"message-id:"))
            .map(|_| &line[11..])
        else {
            continue;
        };
        let mut value = String::from_utf8_lossy(value).trim().to_string();
        while let Some(folded) = lines.next_if(|l| l.starts_with(b" ") || l.starts_with(b"\t")) {
            value.push_str(String::from_utf8_lossy(folded).trim());
        }
        // Control characters (NUL above all, which PostgreSQL's text
        // refuses) never belong in an id; the label must always store.
        let value: String = value
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(998)
            .collect();
        return (!value.is_empty()).then_some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_in_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect(&mailroom_store::StoreOptions::new(format!(
            "sqlite://{}/t.db",
            dir.path().display()
        )))
        .await
        .expect("store");
        let ingest = IngestService::new(store, 4096, 8192, Arc::new(Notify::new()));
        let first = ingest.reserve(4096).await.expect("room for one");
        let _second = ingest.reserve(4096).await.expect("room for two");
        let third = tokio::time::timeout(Duration::from_millis(50), ingest.reserve(10)).await;
        assert!(third.is_err(), "the budget is spent: the third waits");
        drop(first);
        tokio::time::timeout(Duration::from_millis(50), ingest.reserve(4096))
            .await
            .expect("room again once the first is released")
            .expect("reservation");
    }

    #[test]
    fn reads_folded_message_id() {
        assert_eq!(
            header_message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>"),
            Some("a@b".into())
        );
        assert_eq!(
            header_message_id(b"message-id: <z@y>\n\n"),
            Some("z@y".into())
        );
        assert_eq!(header_message_id(b"Subject: none\n\n"), None);
        assert_eq!(
            header_message_id(b"Message-ID: <a\0b\x07c@d>\n\n"),
            Some("abc@d".into())
        );
        assert_eq!(header_message_id("Sübjéct: ü\n\n".as_bytes()), None);
    }
}
