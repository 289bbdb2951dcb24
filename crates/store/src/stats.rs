use serde::Serialize;
use sqlx::Row;

use crate::{Store, StoreError};

/// Queue figures for `/health/detailed`, `/process/status` and `queue_depth`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// Jobs not finished: waiting, retrying or leased.
    pub depth: i64,
    pub queued: i64,
    pub leased: i64,
    /// Waiting jobs that have failed at least once.
    pub retrying: i64,
    pub dead: i64,
    /// Age of the oldest unfinished job, seconds.
    pub oldest_age_seconds: f64,
}

/// Processing figures since a point in time (midnight UTC for "today").
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessingStats {
    pub processed: i64,
    pub failed_attempts: i64,
    /// Mean processing time of the processed messages, milliseconds.
    pub average_processing_ms: f64,
}

impl Store {
    pub async fn queue_stats(&self, now_ms: i64) -> Result<QueueStats, StoreError> {
        let row = sqlx::query(
            "SELECT \
               COUNT(CASE WHEN state = 'queued' THEN 1 END) AS queued, \
               COUNT(CASE WHEN state = 'leased' THEN 1 END) AS leased, \
               COUNT(CASE WHEN state = 'queued' AND attempts > 0 THEN 1 END) AS retrying, \
               COUNT(CASE WHEN state = 'dead' THEN 1 END) AS dead, \
               MIN(CASE WHEN state IN ('queued', 'leased') THEN created_at END) AS oldest \
             FROM jobs",
        )
        .fetch_one(&self.read)
        .await?;
        let queued: i64 = row.try_get("queued")?;
        let leased: i64 = row.try_get("leased")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(QueueStats {
            depth: queued + leased,
            queued,
            leased,
            retrying: row.try_get("retrying")?,
            dead: row.try_get("dead")?,
            oldest_age_seconds: oldest
                .map(|t| (now_ms - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        })
    }

    pub async fn processing_stats(&self, since_ms: i64) -> Result<ProcessingStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS processed, CAST(COALESCE(AVG(processing_ms), 0) AS DOUBLE PRECISION) AS avg_ms \
             FROM messages WHERE processed_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(&self.read)
        .await?;
        // Each failed attempt writes exactly one step whose outcome is an error.
        let failed_attempts: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM processing_steps WHERE started_at >= $1 AND outcome = 'error'",
        )
        .bind(since_ms)
        .fetch_one(&self.read)
        .await?;
        Ok(ProcessingStats {
            processed: row.try_get("processed")?,
            failed_attempts,
            average_processing_ms: row.try_get("avg_ms")?,
        })
    }
}
