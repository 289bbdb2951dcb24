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
