//! Small named facts the server keeps between starts.

use crate::{Store, StoreError};

impl Store {
    pub async fn state_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM server_state WHERE name = $1")
                .bind(name)
                .fetch_optional(self.primary())
                .await?,
        )
    }

    pub async fn set_state_value(
        &self,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query(
            "INSERT INTO server_state (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

/// Names of the rows in which running servers report their data key.
const KEYRING_PREFIX: &str = "keyring:";

impl Store {
    /// Reports that server `instance` seals with `key_id` (`None`: in the
    /// clear), so a re-encryption can wait until every server has switched.
    pub async fn report_keyring(
        &self,
        instance: &str,
        key_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.set_state_value(
            &format!("{KEYRING_PREFIX}{instance}"),
            key_id.unwrap_or(""),
            now_ms,
        )
        .await
    }

    /// The server withdraws its report (clean shutdown).
    pub async fn withdraw_keyring_report(&self, instance: &str) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query("DELETE FROM server_state WHERE name = $1")
            .bind(format!("{KEYRING_PREFIX}{instance}"))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// (instance, key id or `None` for the clear) of every server that
    /// reported since `since_ms`.
    pub async fn keyring_reports(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM server_state WHERE name LIKE 'keyring:%' AND updated_at >= $1",
        )
        .bind(since_ms)
        .fetch_all(self.primary())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, key)| {
                (
                    name.trim_start_matches(KEYRING_PREFIX).to_string(),
                    (!key.is_empty()).then_some(key),
                )
            })
            .collect())
    }
}
