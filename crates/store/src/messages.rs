use mailroom_domain::{MessageId, MessageStatus, MessageView, ProcessingStep, StepOutcome};
use sqlx::{any::AnyRow, Row};

use crate::{
    jobs::{insert_queued_jobs, placeholders, value_rows},
    sealing::{view_aad, StoredRaw},
    Store, StoreError,
};

/// A message about to be stored by ingest.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub content_hash: String,
    pub header_message_id: Option<String>,
    pub source: &'static str,
    /// The bytes as stored: see [`Store::stored_raw`].
    pub raw: StoredRaw,
    pub received_at_ms: i64,
}

/// What ingest did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored, with its processing job queued.
    Stored(MessageId),
    /// The same content was stored before under this id.
    Duplicate(MessageId),
}

/// Summary row used by listings.
#[derive(Debug, Clone)]
pub struct MessageSummary {
    pub id: MessageId,
    pub status: MessageStatus,
    pub source: String,
    pub size_bytes: i64,
    pub received_at_ms: i64,
    pub processed_at_ms: Option<i64>,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub header_message_id: Option<String>,
}

/// Everything stored about one message, bar its raw bytes.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub summary: MessageSummary,
    pub content_hash: String,
    pub processing_ms: Option<f64>,
    pub view: Option<MessageView>,
    pub history: Vec<ProcessingStep>,
    pub job: Option<crate::jobs::JobInfo>,
}

/// Filters of `GET /api/v1/messages`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<MessageStatus>,
    /// Case-insensitive substring of the sender address (so a domain works).
    pub from: Option<String>,
    /// Received at or after (ms).
    pub since_ms: Option<i64>,
    /// Received before (ms).
    pub until_ms: Option<i64>,
    /// Case-insensitive text searched in subject and body.
    pub q: Option<String>,
    /// Return messages strictly older (in ingest order) than this id.
    pub before: Option<MessageId>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct MessagePage {
    pub items: Vec<MessageSummary>,
    /// Id to pass as `before` for the next page, when there is one.
    pub next: Option<MessageId>,
    /// Sealed bodies opened to answer (0 when SQL could search): the work
    /// a caller is charged for.
    pub opened: usize,
}

/// Rows per multi-row INSERT: 7 parameters a row stays far below SQLite's
/// limit of 32,766 bound parameters and keeps one statement under ~2 MB of
/// 10 KB messages.
const INSERT_ROWS_PER_STATEMENT: usize = 200;

const SUMMARY_COLUMNS: &str =
    "id, status, source, size_bytes, received_at, processed_at, from_addr, subject, header_message_id";

/// The parsed view is stored either in the clear (`view_json` without the
/// body + `text_body`, searchable in SQL) or sealed whole (`sealed_view`).
const VIEW_COLUMNS: &str = "view_json, text_body, sealed_view";

impl Store {
    /// Stores several messages with their jobs in one transaction (group
    /// commit): all are durable when this returns Ok, none when it fails.
    /// A duplicate inside the batch resolves to the first copy's id.
    pub async fn insert_messages(
        &self,
        batch: &[&NewMessage],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        let mut inserted = std::collections::HashSet::new();
        // Multi-row statements: a handful of round trips per batch, whatever
        // its size. ON CONFLICT DO NOTHING also settles duplicates inside the
        // batch (the first copy wins).
        for chunk in batch.chunks(INSERT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO messages (id, content_hash, header_message_id, source, size_bytes, status, received_at) \
                 VALUES {} ON CONFLICT (content_hash) DO NOTHING RETURNING id",
                value_rows(chunk.len(), 7)
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for new in chunk {
                query = query
                    .bind(new.id.as_str())
                    .bind(new.content_hash.as_str())
                    .bind(new.header_message_id.as_deref())
                    .bind(new.source)
                    .bind(new.raw.len() as i64)
                    .bind(MessageStatus::Queued.as_str())
                    .bind(new.received_at_ms);
            }
            inserted.extend(query.fetch_all(&mut *tx).await?);
        }
        let stored: Vec<&NewMessage> = batch
            .iter()
            .copied()
            .filter(|m| inserted.contains(m.id.as_str()))
            .collect();
        for chunk in stored.chunks(INSERT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO message_raw (message_id, raw, key_id) VALUES {}",
                value_rows(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for new in chunk {
                query = query
                    .bind(new.id.as_str())
                    .bind(new.raw.bytes.as_slice())
                    .bind(new.raw.key_id.as_deref());
            }
            query.execute(&mut *tx).await?;
            let jobs: Vec<(&str, i64)> = chunk
                .iter()
                .map(|new| (new.id.as_str(), new.received_at_ms))
                .collect();
            insert_queued_jobs(&mut tx, &jobs).await?;
        }
        // Duplicates resolve to the id already stored under their hash.
        let duplicates: Vec<&str> = batch
            .iter()
            .filter(|m| !inserted.contains(m.id.as_str()))
            .map(|m| m.content_hash.as_str())
            .collect();
        let mut existing = std::collections::HashMap::new();
        for chunk in duplicates.chunks(INSERT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT content_hash, id FROM messages WHERE content_hash IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String)>(&sql);
            for hash in chunk {
                query = query.bind(*hash);
            }
            existing.extend(query.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        batch
            .iter()
            .map(|m| {
                if inserted.contains(m.id.as_str()) {
                    Ok(InsertOutcome::Stored(m.id.clone()))
                } else {
                    let id = existing.get(&m.content_hash).ok_or_else(|| {
                        StoreError::Corrupt(format!("no row for content hash {}", m.content_hash))
                    })?;
                    Ok(InsertOutcome::Duplicate(parse_id(id)?))
                }
            })
            .collect()
    }

    /// Raw bytes of every message leased under `token`, read in one query
    /// from the primary (a replica may not have the lease yet). Each
    /// message is opened on its own: one that cannot be decrypted fails
    /// alone, not the batch.
    #[allow(clippy::type_complexity)]
    pub async fn leased_raw_messages(
        &self,
        token: &str,
    ) -> Result<Vec<(MessageId, Result<Vec<u8>, StoreError>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.message_id, r.raw, r.key_id FROM message_raw r JOIN jobs j ON j.message_id = r.message_id WHERE j.lease_token = $1",
        )
        .bind(token)
        .fetch_all(self.primary())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("message_id")?;
                let raw = self.open_raw(&id, r.try_get("raw")?, r.try_get("key_id")?);
                Ok((parse_id(&id)?, raw))
            })
            .collect()
    }

    /// Raw bytes of a message, as received (opened if sealed).
    pub async fn raw_message(&self, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>, Option<String>)> =
            sqlx::query_as("SELECT raw, key_id FROM message_raw WHERE message_id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.read)
                .await?;
        row.map(|(bytes, key_id)| self.open_raw(id.as_str(), bytes, key_id))
            .transpose()
    }

    /// How many of `ids` are in each status (ids that no longer exist are
    /// not counted). Read from the primary (SQLite: a reader; never the
    /// single writer): a caller waiting for its own re-queued work must not
    /// see a lagging replica.
    pub async fn status_counts(
        &self,
        ids: &[MessageId],
    ) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        let mut counts: Vec<(MessageStatus, u64)> = Vec::new();
        // Bounded statement size whatever the number of ids.
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT status, COUNT(*) FROM messages WHERE id IN ({}) GROUP BY status",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for (status, n) in query.fetch_all(self.primary()).await? {
                let status = status
                    .parse::<MessageStatus>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                match counts.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, total)) => *total += n as u64,
                    None => counts.push((status, n as u64)),
                }
            }
        }
        Ok(counts)
    }

    /// The parsed view, status and full history of one message.
    pub async fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS}, content_hash, processing_ms, {VIEW_COLUMNS} FROM messages WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let summary = summary_from_row(&row)?;
        let view = self.view_from_row(id.as_str(), &row)?;
        let history = self.history(id).await?;
        let job = self.job_for_message(id).await?;
        Ok(Some(MessageRecord {
            summary,
            content_hash: row.try_get("content_hash")?,
            processing_ms: row.try_get("processing_ms")?,
            view,
            history,
            job,
        }))
    }

    pub async fn history(&self, id: &MessageId) -> Result<Vec<ProcessingStep>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage, attempt, outcome, started_at, duration_ms, error FROM processing_steps WHERE message_id = $1 ORDER BY id",
        )
        .bind(id.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProcessingStep {
                    stage: r.try_get("stage")?,
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
                    outcome: if r.try_get::<String, _>("outcome")? == "ok" {
                        StepOutcome::Ok
                    } else {
                        StepOutcome::Error
                    },
                    started_at_ms: r.try_get("started_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    /// One page of messages, newest first, in a stable order (by id, which
    /// grows with ingest time).
    ///
    /// With encryption on, bodies are sealed and SQL cannot search them: a
    /// text search then scans candidate rows newest first and opens each
    /// body, at most [`MAX_SEARCH_SCAN_ROWS`] rows per page. A page cut
    /// short by that bound carries a `next` cursor to continue from.
    pub async fn list_messages(&self, filter: &ListFilter) -> Result<MessagePage, StoreError> {
        let limit = filter.limit.clamp(1, 500) as usize;
        if filter.q.is_some() && self.keyring().is_some() {
            return self.search_sealed(filter, limit).await;
        }
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM messages WHERE 1 = 1");
        let mut args = self.filter_clauses(filter, &mut sql, true);
        args.push(Arg::Int(limit as i64 + 1));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        let rows = bind_args(sqlx::query(&sql), args)
            .fetch_all(&self.read)
            .await?;
        let mut items = rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.id.clone())
        } else {
            None
        };
        Ok(MessagePage {
            items,
            next,
            opened: 0,
        })
    }

    /// Text search over sealed bodies: SQL narrows by the other filters,
    /// the matching happens here after opening each body.
    async fn search_sealed(
        &self,
        filter: &ListFilter,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let needle = filter.q.as_deref().unwrap_or_default().to_lowercase();
        let mut items: Vec<MessageSummary> = Vec::new();
        let mut before = filter.before.clone();
        let mut scanned = 0usize;
        loop {
            let mut sql =
                format!("SELECT {SUMMARY_COLUMNS}, {VIEW_COLUMNS} FROM messages WHERE 1 = 1");
            let page_filter = ListFilter {
                before: before.clone(),
                ..filter.clone()
            };
            let mut args = self.filter_clauses(&page_filter, &mut sql, false);
            args.push(Arg::Int(SEARCH_SCAN_CHUNK as i64));
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
            let rows = bind_args(sqlx::query(&sql), args)
                .fetch_all(&self.read)
                .await?;
            let exhausted = rows.len() < SEARCH_SCAN_CHUNK;
            // Opening and matching is CPU work: off the async threads.
            let store = self.clone();
            let needle_for_chunk = needle.clone();
            let judged = tokio::task::spawn_blocking(move || {
                rows.iter()
                    .map(|row| {
                        let summary = summary_from_row(row)?;
                        let matched = store
                            .row_matches(&summary, row, &needle_for_chunk)
                            .unwrap_or_else(|e| {
                                // One unreadable record must not fail the search.
                                tracing::warn!(message_id = %summary.id, error = %e, "search skipped a message it cannot open");
                                false
                            });
                        Ok((summary, matched))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("search task failed: {e}")))??;
            for (summary, matched) in judged {
                scanned += 1;
                before = Some(summary.id.clone());
                if matched {
                    items.push(summary);
                    if items.len() > limit {
                        items.truncate(limit);
                        let next = items.last().map(|m| m.id.clone());
                        return Ok(MessagePage {
                            items,
                            next,
                            opened: scanned,
                        });
                    }
                }
                if scanned >= MAX_SEARCH_SCAN_ROWS {
                    // Bounded work per request: continue from here.
                    return Ok(MessagePage {
                        items,
                        next: before,
                        opened: scanned,
                    });
                }
            }
            if exhausted {
                return Ok(MessagePage {
                    items,
                    next: None,
                    opened: scanned,
                });
            }
        }
    }

    /// Case-insensitive match of `needle` (lower-cased) in the subject or
    /// the body, opening a sealed body.
    fn row_matches(
        &self,
        summary: &MessageSummary,
        row: &AnyRow,
        needle: &str,
    ) -> Result<bool, StoreError> {
        if summary
            .subject
            .as_deref()
            .is_some_and(|s| s.to_lowercase().contains(needle))
        {
            return Ok(true);
        }
        if let Some(body) = row.try_get::<Option<String>, _>("text_body")? {
            return Ok(body.to_lowercase().contains(needle));
        }
        let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>("sealed_view")? else {
            return Ok(false);
        };
        #[derive(serde::Deserialize)]
        struct BodyOnly {
            #[serde(default)]
            text_body: String,
        }
        let json = self.open(&view_aad(summary.id.as_str()), &sealed)?;
        let body: BodyOnly = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("view of {}: {e}", summary.id)))?;
        Ok(body.text_body.to_lowercase().contains(needle))
    }

    /// The parsed view of a row selected with [`VIEW_COLUMNS`].
    pub(crate) fn view_from_row(
        &self,
        id: &str,
        row: &AnyRow,
    ) -> Result<Option<MessageView>, StoreError> {
        if let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>("sealed_view")? {
            let json = self.open(&view_aad(id), &sealed)?;
            let view = serde_json::from_slice(&json)
                .map_err(|e| StoreError::Corrupt(format!("view of {id}: {e}")))?;
            return Ok(Some(view));
        }
        // In the clear, the body is stored once, in its own (searchable)
        // column.
        match row.try_get::<Option<String>, _>("view_json")? {
            Some(json) => {
                let mut view: MessageView = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("view of {id}: {e}")))?;
                view.text_body = row
                    .try_get::<Option<String>, _>("text_body")?
                    .unwrap_or_default();
                Ok(Some(view))
            }
            None => Ok(None),
        }
    }

    /// Appends the WHERE clauses of `filter` (the text search only when
    /// `with_text` and SQL can see the bodies) and returns their arguments.
    fn filter_clauses(&self, filter: &ListFilter, sql: &mut String, with_text: bool) -> Vec<Arg> {
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |clause: &str, arg: Arg, sql: &mut String| {
            args.push(arg);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(status) = filter.status {
            push(" AND status = ?", Arg::Text(status.as_str().into()), sql);
        }
        if let Some(from) = &filter.from {
            push(
                " AND from_addr LIKE ? ESCAPE '\\'",
                Arg::Text(like_pattern(from)),
                sql,
            );
        }
        if let Some(since) = filter.since_ms {
            push(" AND received_at >= ?", Arg::Int(since), sql);
        }
        if let Some(until) = filter.until_ms {
            push(" AND received_at < ?", Arg::Int(until), sql);
        }
        if let (Some(q), true) = (&filter.q, with_text) {
            // SQLite's LIKE ignores ASCII case by itself; PostgreSQL needs ILIKE.
            let clause = match self.backend {
                crate::Backend::Sqlite => {
                    " AND (subject LIKE ? ESCAPE '\\' OR text_body LIKE ? ESCAPE '\\')"
                }
                crate::Backend::Postgres => {
                    " AND (subject ILIKE ? ESCAPE '\\' OR text_body ILIKE ? ESCAPE '\\')"
                }
            };
            push(clause, Arg::Text(like_pattern(q)), sql);
        }
        if let Some(before) = &filter.before {
            push(" AND id < ?", Arg::Text(before.as_str().into()), sql);
        }
        args
    }

    /// Erases a message and everything derived from it (raw bytes, job,
    /// history). Returns false when there was no such message.
    ///
    /// On SQLite the freed pages are zeroed (`secure_delete`) and the WAL,
    /// which still holds earlier images of those pages, is checkpointed and
    /// truncated, so the content is gone from the files on disk too.
    pub async fn delete_message(&self, id: &MessageId) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        for table in ["processing_steps", "jobs", "message_raw", "submissions"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE message_id = $1"))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM messages WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        drop(_turn);
        if deleted > 0 {
            // Best effort: a reader holding an old snapshot can delay the
            // truncation; the background checkpoint finishes it later.
            if let Err(e) = self.truncate_wal().await {
                tracing::warn!(error = %e, "WAL truncation after delete failed");
            }
        }
        Ok(deleted > 0)
    }
}

/// Rows read per round trip of a sealed-body search.
const SEARCH_SCAN_CHUNK: usize = 256;
/// Most rows a sealed-body search opens for one page.
pub const MAX_SEARCH_SCAN_ROWS: usize = 10_000;

enum Arg {
    Text(String),
    Int(i64),
}

fn bind_args<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(t) => query.bind(t),
            Arg::Int(i) => query.bind(i),
        };
    }
    query
}

/// `%needle%` with LIKE's wildcards in the needle escaped, lower-cased to
/// match the lower-cased columns it is compared with.
fn like_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

pub(crate) fn parse_id(raw: &str) -> Result<MessageId, StoreError> {
    MessageId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn summary_from_row(row: &AnyRow) -> Result<MessageSummary, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(MessageSummary {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        status: status
            .parse()
            .map_err(|e: mailroom_domain::UnknownStatus| StoreError::Corrupt(e.to_string()))?,
        source: row.try_get("source")?,
        size_bytes: row.try_get("size_bytes")?,
        received_at_ms: row.try_get("received_at")?,
        processed_at_ms: row.try_get("processed_at")?,
        from_addr: row.try_get("from_addr")?,
        subject: row.try_get("subject")?,
        header_message_id: row.try_get("header_message_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern("ABC"), "%abc%");
    }
}
