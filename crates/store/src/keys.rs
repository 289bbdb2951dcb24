//! API keys as stored: the SHA-256 of each key, never the key. What a key
//! may do and how it is checked are decided in `mailroom-app`; this module
//! only reads and writes rows. Every change commits with its audit record.

use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use crate::{
    audit::{insert_audit, AuditEvent},
    Store, StoreError,
};

/// A key's row.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub key_hash: String,
    pub scopes: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub replaced_by: Option<String>,
    pub created_by: Option<String>,
}

/// A key about to be stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub created_by: Option<String>,
}

const KEY_COLUMNS: &str = "id, name, prefix, key_hash, scopes, created_at, expires_at, revoked_at, last_used_at, replaced_by, created_by";

impl Store {
    /// Stores a key and its audit record in one transaction.
    pub async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        insert_key(&mut *tx, key).await?;
        insert_audit(&mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores `key` only if no key was ever stored and no other process
    /// did this first (a marker row settles the race between replicas
    /// starting together). Returns whether it was stored.
    pub async fn insert_first_api_key(
        &self,
        key: &NewApiKey,
        now_ms: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let marked = sqlx::query(
            "INSERT INTO server_state (name, value, updated_at) VALUES ('bootstrap_admin_key', $1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(key.id.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_key(&mut *tx, key).await?;
        insert_audit(&mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Keys whose public prefix is `prefix`, read from the primary so a
    /// key created a moment ago on another replica is found.
    pub async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1"
        ))
        .bind(prefix)
        .fetch_all(self.primary())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.primary())
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Every key, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(self.primary())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Keys that can still authenticate at `now_ms`.
    pub async fn count_usable_api_keys(&self, now_ms: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(now_ms)
        .fetch_one(self.primary())
        .await?)
    }

    /// Revokes a key at once, with its audit record. Returns false (and
    /// records nothing) when there is no such unrevoked key.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now_ms: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if revoked {
            insert_audit(&mut tx, std::slice::from_ref(audit)).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Stores `new` as the successor of `old_id` and lets the old key live
    /// until `old_expires_at_ms` (the overlap), in one transaction. Returns
    /// false (storing nothing) when the old key is no longer live.
    pub async fn rotate_api_key(
        &self,
        old_id: &str,
        new: &NewApiKey,
        old_expires_at_ms: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        // The old key never gains time: an overlap past its own expiry ends
        // at that expiry.
        let updated = sqlx::query(
            "UPDATE api_keys SET replaced_by = $1, \
             expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END \
             WHERE id = $3 AND revoked_at IS NULL AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(new.id.as_str())
        .bind(old_expires_at_ms)
        .bind(old_id)
        .bind(new.created_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_key(&mut *tx, new).await?;
        insert_audit(&mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records when keys were last used (called at most about once a
    /// minute per key, off the request path).
    pub async fn touch_api_key(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let _turn = self.gate.background().await;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

async fn insert_key<'e, E>(executor: E, key: &NewApiKey) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, created_at, expires_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id.as_str())
    .bind(key.name.as_str())
    .bind(key.prefix.as_str())
    .bind(key.key_hash.as_str())
    .bind(key.scopes.as_str())
    .bind(key.created_at_ms)
    .bind(key.expires_at_ms)
    .bind(key.created_by.as_deref())
    .execute(executor)
    .await?;
    Ok(())
}

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        key_hash: r.try_get("key_hash")?,
        scopes: r.try_get("scopes")?,
        created_at_ms: r.try_get("created_at")?,
        expires_at_ms: r.try_get("expires_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
        last_used_at_ms: r.try_get("last_used_at")?,
        replaced_by: r.try_get("replaced_by")?,
        created_by: r.try_get("created_by")?,
    })
}
