use std::sync::Arc;

use mailroom_domain::MessageId;
use mailroom_store::{InsertOutcome, NewMessage, Store, StoreError};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::debug;

use crate::{clock::now_ms, IngestError};

/// Where a message came from; recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Import,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Import => "import",
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
    max_bytes: usize,
    writer: mpsc::Sender<Box<Pending>>,
}

impl IngestService {
    /// Starts the writer task on the current Tokio runtime.
    pub fn new(store: Store, max_bytes: usize, wake: Arc<Notify>) -> Self {
        let (writer, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(group_commit_writer(store, queue, wake));
        Self { max_bytes, writer }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Stores `raw` and queues its processing. Returns only after the
    /// transaction committed, so an acknowledged message is never lost.
    pub async fn ingest(&self, raw: &[u8], source: Source) -> Result<IngestReceipt, IngestError> {
        if raw.len() > self.max_bytes {
            return Err(IngestError::TooLarge {
                size: raw.len(),
                limit: self.max_bytes,
            });
        }
        mailroom_mail::check_ingestible(raw)?;
        let message = NewMessage {
            id: MessageId::from_uuid(uuid::Uuid::now_v7()),
            content_hash: hex::encode(Sha256::digest(raw)),
            header_message_id: header_message_id(raw),
            source: source.as_str(),
            raw: raw.to_vec(),
            received_at_ms: now_ms(),
        };
        let (reply, answer) = oneshot::channel();
        let closed = || {
            IngestError::Store(StoreError::BatchFailed {
                message: "the ingest writer has stopped".into(),
                unavailable: true,
            })
        };
        self.writer
            .send(Box::new(Pending { message, reply }))
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
        debug!(id = %receipt.id, duplicate = receipt.duplicate, size = raw.len(), "message ingested");
        Ok(receipt)
    }
}

/// Drains the queue into transactions of up to [`MAX_GROUP`] messages.
async fn group_commit_writer(
    store: Store,
    mut queue: mpsc::Receiver<Box<Pending>>,
    wake: Arc<Notify>,
) {
    let mut batch: Vec<Box<Pending>> = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let messages: Vec<&NewMessage> = batch.iter().map(|p| &p.message).collect();
        let result = store.insert_messages(&messages).await;
        drop(messages);
        match result {
            Ok(outcomes) => {
                let stored = outcomes
                    .iter()
                    .any(|o| matches!(o, InsertOutcome::Stored(_)));
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
                if stored {
                    wake.notify_one();
                }
            }
            Err(e) => {
                // The batch failed as a whole: no caller's message is at
                // fault, so each is told the store is unavailable (503).
                let message = e.to_string();
                tracing::error!(error = %message, messages = batch.len(), "ingest transaction failed");
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(StoreError::BatchFailed {
                        message: message.clone(),
                        unavailable: true,
                    }));
                }
            }
        }
    }
}

/// The Message-ID header, read from the header block only.
fn header_message_id(raw: &[u8]) -> Option<String> {
    let headers_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"));
    let head = &raw[..headers_end.unwrap_or(raw.len()).min(raw.len())];
    mail_parser_id(head)
}

fn mail_parser_id(head: &[u8]) -> Option<String> {
    // Unfold and find the field case-insensitively; the full parser runs
    // later in the pipeline, this only labels the stored row.
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line
            .get(..11)
            .is_some_and(|p| p.eq_ignore_ascii_case("message-id:"))
        {
            let mut value = line[11..].trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            let value = value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string();
            // Control characters (NUL above all, which PostgreSQL's text
            // refuses) never belong in an id; the label must always store.
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(998)
                .collect();
            return (!value.is_empty()).then_some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
