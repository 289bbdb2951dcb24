//! Re-sealing stored mail under the current data key (after a rotation,
//! or when encryption is turned on for a database that holds mail in the
//! clear). Works in small batches while the server runs: every write is a
//! compare-and-set on what was read, so a row changed meanwhile is left
//! for the next pass rather than overwritten.

use sqlx::Row;

use crate::{
    jobs::placeholders,
    sealing::{raw_aad, view_aad},
    Store, StoreError,
};

/// Records not yet sealed under the current key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealBacklog {
    pub raw: u64,
    pub views: u64,
}

impl ResealBacklog {
    pub fn total(&self) -> u64 {
        self.raw + self.views
    }
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct ResealBatch {
    /// Records (raw messages and views) re-sealed.
    pub resealed: u64,
    /// Records that changed between read and write (left for a later pass).
    pub raced: u64,
    /// Messages examined; 0 means the pass is complete.
    pub messages: u64,
    /// Continue after this message id.
    pub last_id: Option<String>,
    /// Records that cannot be opened with the configured keys (message id,
    /// `raw` or `view`, why): left as they are, and reported.
    pub unreadable: Vec<(String, &'static str, String)>,
}

/// Most bytes of raw mail one batch holds in memory (one message larger
/// than this still makes a batch of its own).
const BATCH_BYTES: i64 = 64 * 1024 * 1024;

impl Store {
    /// How many records are not sealed under the current key.
    pub async fn reseal_backlog(&self) -> Result<ResealBacklog, StoreError> {
        let ring = self.keyring().ok_or(StoreError::Sealing(
            mailroom_security::SecurityError::NoDataKey,
        ))?;
        let current = ring.current_id().to_string();
        let raw: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM message_raw WHERE key_id IS NULL OR key_id <> $1",
        )
        .bind(current.as_str())
        .fetch_one(self.primary())
        .await?;
        let views: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE view_json IS NOT NULL OR (sealed_view IS NOT NULL AND sealed_key_id <> $1)",
        )
        .bind(current.as_str())
        .fetch_one(self.primary())
        .await?;
        Ok(ResealBacklog {
            raw: raw as u64,
            views: views as u64,
        })
    }

    /// Re-seals the records of up to `limit` messages after `after` (in
    /// id order) that are not under the current key.
    pub async fn reseal_batch(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ResealBatch, StoreError> {
        let ring = self.keyring().ok_or(StoreError::Sealing(
            mailroom_security::SecurityError::NoDataKey,
        ))?;
        let current = ring.current_id().to_string();
        // Candidates and their sizes first, so a batch of large messages
        // stays within BATCH_BYTES of memory however big each one is.
        let candidates: Vec<(String, i64)> = sqlx::query_as(
            "SELECT m.id, m.size_bytes FROM messages m LEFT JOIN message_raw r ON r.message_id = m.id \
             WHERE m.id > $1 AND ((r.message_id IS NOT NULL AND (r.key_id IS NULL OR r.key_id <> $2)) \
               OR m.view_json IS NOT NULL OR (m.sealed_view IS NOT NULL AND m.sealed_key_id <> $2)) \
             ORDER BY m.id LIMIT $3",
        )
        .bind(after.unwrap_or(""))
        .bind(current.as_str())
        .bind(i64::from(limit.max(1)))
        .fetch_all(self.primary())
        .await?;
        let mut bytes = 0i64;
        let chosen: Vec<&str> = candidates
            .iter()
            .enumerate()
            .take_while(|(i, (_, size))| {
                bytes += size;
                *i == 0 || bytes <= BATCH_BYTES
            })
            .map(|(_, (id, _))| id.as_str())
            .collect();
        if chosen.is_empty() {
            return Ok(ResealBatch::default());
        }
        let sql = format!(
            "SELECT m.id, m.view_json, m.text_body, m.sealed_view, m.sealed_key_id, r.raw, r.key_id \
             FROM messages m LEFT JOIN message_raw r ON r.message_id = m.id \
             WHERE m.id IN ({}) ORDER BY m.id",
            placeholders(1, chosen.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &chosen {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(self.primary()).await?;
        let mut batch = ResealBatch {
            messages: chosen.len() as u64,
            last_id: chosen.last().map(|id| id.to_string()),
            ..ResealBatch::default()
        };
        // Open and seal before taking the write turn.
        let mut writes = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let raw_key: Option<String> = row.try_get("key_id")?;
            let raw: Option<Vec<u8>> = row.try_get("raw")?;
            let new_raw = match raw {
                Some(bytes) if raw_key.as_deref() != Some(current.as_str()) => {
                    match self.open_raw(&id, bytes, raw_key.clone()) {
                        Ok(plain) => Some((ring.seal(&raw_aad(&id), &plain), raw_key)),
                        Err(e) => {
                            batch.unreadable.push((id.clone(), "raw", e.to_string()));
                            None
                        }
                    }
                }
                _ => None,
            };
            let sealed_view: Option<Vec<u8>> = row.try_get("sealed_view")?;
            let sealed_key: Option<String> = row.try_get("sealed_key_id")?;
            let view_json: Option<String> = row.try_get("view_json")?;
            let text_body: Option<String> = row.try_get("text_body")?;
            let new_view = match (&sealed_view, &view_json) {
                (Some(old), _) if sealed_key.as_deref() != Some(current.as_str()) => {
                    match self.open(&view_aad(&id), old) {
                        Ok(plain) => Some((
                            ring.seal(&view_aad(&id), &plain),
                            ViewWas::Sealed(old.clone()),
                        )),
                        Err(e) => {
                            batch.unreadable.push((id.clone(), "view", e.to_string()));
                            None
                        }
                    }
                }
                (None, Some(json)) => {
                    let full = view_with_body(json, text_body.as_deref().unwrap_or_default())?;
                    Some((
                        ring.seal(&view_aad(&id), &full),
                        ViewWas::Plain(json.clone()),
                    ))
                }
                _ => None,
            };
            writes.push((id, new_raw, new_view));
        }
        let _turn = self.gate.background().await;
        let mut tx = self.write.begin().await?;
        for (id, new_raw, new_view) in &writes {
            if let Some((sealed, old_key)) = new_raw {
                // The raw bytes never change after ingest: the key id is
                // the whole state to compare.
                let sql = match old_key {
                    Some(_) => "UPDATE message_raw SET raw = $1, key_id = $2 WHERE message_id = $3 AND key_id = $4",
                    None => "UPDATE message_raw SET raw = $1, key_id = $2 WHERE message_id = $3 AND key_id IS NULL",
                };
                let mut query = sqlx::query(sql)
                    .bind(sealed.bytes.as_slice())
                    .bind(sealed.key_id.as_str())
                    .bind(id.as_str());
                if let Some(old) = old_key {
                    query = query.bind(old.as_str());
                }
                count(&mut batch, query.execute(&mut *tx).await?.rows_affected());
            }
            if let Some((sealed, was)) = new_view {
                let result = match was {
                    ViewWas::Sealed(old) => sqlx::query(
                        "UPDATE messages SET sealed_view = $1, sealed_key_id = $2 WHERE id = $3 AND sealed_view = $4",
                    )
                    .bind(sealed.bytes.as_slice())
                    .bind(sealed.key_id.as_str())
                    .bind(id.as_str())
                    .bind(old.as_slice()),
                    ViewWas::Plain(json) => sqlx::query(
                        "UPDATE messages SET sealed_view = $1, sealed_key_id = $2, view_json = NULL, text_body = NULL \
                         WHERE id = $3 AND sealed_view IS NULL AND view_json = $4",
                    )
                    .bind(sealed.bytes.as_slice())
                    .bind(sealed.key_id.as_str())
                    .bind(id.as_str())
                    .bind(json.as_str()),
                }
                .execute(&mut *tx)
                .await?;
                count(&mut batch, result.rows_affected());
            }
        }
        tx.commit().await?;
        Ok(batch)
    }
}

enum ViewWas {
    Sealed(Vec<u8>),
    Plain(String),
}

fn count(batch: &mut ResealBatch, affected: u64) {
    if affected == 1 {
        batch.resealed += 1;
    } else {
        batch.raced += 1;
    }
}

/// A view stored in the clear (JSON without the body + the body) as the
/// single JSON document that is sealed.
fn view_with_body(json: &str, body: &str) -> Result<Vec<u8>, StoreError> {
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("text_body".into(), serde_json::Value::String(body.into()));
    }
    serde_json::to_vec(&value).map_err(|e| StoreError::Corrupt(e.to_string()))
}
