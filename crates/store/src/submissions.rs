//! The outbox of downstream submissions: queued with each processing
//! result, leased by the submitter, finished, retried or dead.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use crate::{
    jobs::placeholders,
    leasing::{bind_lease, counts_by_state, lease_sql},
    Store, StoreError,
};

/// A delivery a submitter holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedSubmission {
    pub id: i64,
    pub message_id: String,
    pub endpoint: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the result being delivered was recorded (its version).
    pub created_at_ms: i64,
}

/// The outbox by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubmissionCounts {
    pub queued: u64,
    pub leased: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// One outbox row, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmissionInfo {
    pub id: i64,
    pub message_id: String,
    pub endpoint: String,
    pub state: String,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// Queues `processed` (message id, result time) for every endpoint, in
/// the caller's transaction. A message processed again is queued afresh
/// (its new result is delivered too).
pub(crate) async fn queue_in(
    tx: &mut Transaction<'_, Any>,
    endpoints: &[String],
    processed: &[(&str, i64)],
) -> Result<(), StoreError> {
    if endpoints.is_empty() || processed.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&str, &str, i64)> = processed
        .iter()
        .flat_map(|(id, at)| endpoints.iter().map(move |e| (*id, e.as_str(), *at)))
        .collect();
    for chunk in rows.chunks(500) {
        let values = (0..chunk.len())
            .map(|i| {
                format!(
                    "(${}, ${}, 'queued', ${}, ${})",
                    3 * i + 1,
                    3 * i + 2,
                    3 * i + 3,
                    3 * i + 3
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO submissions (message_id, endpoint, state, run_at, created_at) VALUES {values} \
             ON CONFLICT (message_id, endpoint) DO UPDATE SET state = 'queued', attempts = 0, run_at = excluded.run_at, \
             created_at = excluded.created_at, lease_token = NULL, lease_until = NULL, finished_at = NULL, last_error = NULL"
        );
        let mut query = sqlx::query(&sql);
        for (id, endpoint, at) in chunk {
            query = query.bind(*id).bind(*endpoint).bind(*at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Leases up to `limit` due deliveries to the given endpoints.
    pub async fn lease_submissions(
        &self,
        endpoints: &[String],
        token: &str,
        limit: u32,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<LeasedSubmission>, StoreError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let sql = lease_sql(
            self.backend,
            "submissions",
            &format!(" AND endpoint IN ({})", placeholders(6, endpoints.len())),
            "id, message_id, endpoint, attempts, created_at",
        );
        let _turn = self.gate.background().await;
        let mut query = bind_lease(
            sqlx::query(&sql),
            token,
            limit,
            now_ms,
            lease_ms,
            max_attempts,
        );
        for e in endpoints {
            query = query.bind(e);
        }
        let rows = query.fetch_all(&self.write).await?;
        let mut leased = rows
            .iter()
            .map(|r| {
                Ok(LeasedSubmission {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    endpoint: r.try_get("endpoint")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        leased.sort_by_key(|s| s.id);
        Ok(leased)
    }

    /// Records a delivery's outcome if the lease is still ours: delivered
    /// (`state` "delivered"), queued again at `retry_at_ms`, or dead.
    pub async fn settle_submission(
        &self,
        lease: &LeasedSubmission,
        token: &str,
        outcome: SubmissionOutcome<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (state, run_at, status, error) = match outcome {
            SubmissionOutcome::Delivered { status } => ("delivered", now_ms, Some(status), None),
            SubmissionOutcome::Retry {
                at_ms,
                status,
                error,
            } => ("queued", at_ms, status, Some(error)),
            SubmissionOutcome::Dead { status, error } => ("dead", now_ms, status, Some(error)),
        };
        let finished = (state != "queued").then_some(now_ms);
        let _turn = self.gate.background().await;
        let done = sqlx::query(
            "UPDATE submissions SET state = $1, run_at = $2, last_status = $3, last_error = $4, finished_at = $5, \
             lease_token = NULL, lease_until = NULL WHERE id = $6 AND lease_token = $7 AND state = 'leased'",
        )
        .bind(state)
        .bind(run_at)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(finished)
        .bind(lease.id)
        .bind(token)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The outbox by state.
    pub async fn submission_counts(&self) -> Result<SubmissionCounts, StoreError> {
        let mut counts = SubmissionCounts::default();
        for (state, n) in counts_by_state(&self.read, "submissions").await? {
            match state.as_str() {
                "queued" => counts.queued = n,
                "leased" => counts.leased = n,
                "delivered" => counts.delivered = n,
                "dead" => counts.dead = n,
                other => return Err(StoreError::Corrupt(format!("submission state `{other}`"))),
            }
        }
        Ok(counts)
    }

    /// Outbox rows in `state` (newest first), at most `limit`.
    pub async fn submissions(
        &self,
        state: &str,
        limit: u32,
    ) -> Result<Vec<SubmissionInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, message_id, endpoint, state, attempts, created_at, finished_at, last_status, last_error \
             FROM submissions WHERE state = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubmissionInfo {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    endpoint: r.try_get("endpoint")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    created_at_ms: r.try_get("created_at")?,
                    finished_at_ms: r.try_get("finished_at")?,
                    last_status: r.try_get("last_status")?,
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }

    /// Queues every dead delivery again; returns how many.
    pub async fn requeue_dead_submissions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let _turn = self.gate.urgent().await;
        let done = sqlx::query(
            "UPDATE submissions SET state = 'queued', attempts = 0, run_at = $1, finished_at = NULL WHERE state = 'dead'",
        )
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum SubmissionOutcome<'a> {
    Delivered {
        status: u16,
    },
    Retry {
        at_ms: i64,
        status: Option<u16>,
        error: &'a str,
    },
    Dead {
        status: Option<u16>,
        error: &'a str,
    },
}
