//! The durable job queue.
//!
//! Rules: a job is leased (never simply taken) by stamping a lease token and
//! an expiry; only the holder of the current token may complete or fail it,
//! so a worker that stalls past its lease cannot overwrite the work of the
//! worker that took the job over. A crash therefore costs at most one lease
//! period, never a message. Finished jobs are deleted; dead ones stay until
//! an operator re-queues or deletes them.

use mailroom_domain::{
    JobState, MessageId, MessageStatus, MessageView, ProcessingStep, StepOutcome,
};
use serde::Serialize;
use sqlx::{any::AnyRow, Any, Row, Transaction};

use crate::{messages::parse_id, sealing::view_aad, Backend, Store, StoreError};

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub job_id: i64,
    pub message_id: MessageId,
    /// Attempts made, this one included.
    pub attempts: u32,
    pub lease_token: String,
}

/// The public state of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: i64,
    pub message_id: MessageId,
    pub state: JobState,
    pub attempts: u32,
    pub run_at_ms: i64,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Result of a successful processing run.
#[derive(Debug, Clone)]
pub struct CompletedJob {
    pub job: LeasedJob,
    pub view: MessageView,
    pub steps: Vec<ProcessingStep>,
    pub processing_ms: f64,
    pub finished_at_ms: i64,
}

/// Result of a failed processing run.
#[derive(Debug, Clone)]
pub struct FailedJob {
    pub job: LeasedJob,
    pub steps: Vec<ProcessingStep>,
    pub error: String,
    /// When to try again; `None` declares the job dead.
    pub retry_at_ms: Option<i64>,
    pub now_ms: i64,
}

/// Which jobs `POST /process/trigger` (failed, dead) and the MCP reprocess
/// tool (also processed) re-queue.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    /// Only these messages (empty: all that match `states`).
    pub message_ids: Vec<MessageId>,
    /// `Failed` (waiting for a retry), `Dead` and/or `Processed` (empty:
    /// failed and dead).
    pub statuses: Vec<MessageStatus>,
}

const JOB_COLUMNS: &str =
    "id, message_id, state, attempts, run_at, lease_until, last_error, created_at, updated_at";

impl Store {
    /// Leases up to `limit` runnable jobs (due, or whose lease has expired
    /// with attempts left; exhausted ones are for `bury_exhausted_leases`)
    /// under one token. On PostgreSQL concurrent leasers skip each other's
    /// rows (`FOR UPDATE SKIP LOCKED`); on SQLite the single writer makes
    /// the statement atomic by itself.
    pub async fn lease_jobs(
        &self,
        token: &str,
        limit: u32,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<LeasedJob>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'leased', lease_token = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE (state = 'queued' AND run_at <= $3) OR (state = 'leased' AND lease_until <= $3 AND attempts < $5) \
             ORDER BY run_at, id LIMIT $4{lock}) RETURNING id, message_id, attempts"
        );
        // One autocommit statement: the jobs_leased trigger marks the
        // messages as processing within it.
        let _turn = self.gate.background().await;
        let rows = sqlx::query(&sql)
            .bind(token)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .bind(i64::from(max_attempts))
            .fetch_all(&self.write)
            .await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                Ok(LeasedJob {
                    job_id: r.try_get("id")?,
                    message_id: parse_id(&r.try_get::<String, _>("message_id")?)?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    lease_token: token.to_string(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        jobs.sort_by_key(|j| j.job_id);
        Ok(jobs)
    }

    /// Declares dead every job whose lease expired after its last permitted
    /// attempt: a message that kills its worker every time must not loop
    /// forever. Returns how many were buried.
    pub async fn bury_exhausted_leases(
        &self,
        max_attempts: u32,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let _turn = self.gate.background().await;
        let mut tx = self.write.begin().await?;
        // Jobs first, then messages: the order every other writer locks in.
        let buried: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'dead', last_error = 'lease expired on the last attempt (worker crashed or stalled)', \
             updated_at = $1, lease_token = NULL WHERE state = 'leased' AND lease_until <= $1 AND attempts >= $2 \
             RETURNING message_id",
        )
        .bind(now_ms)
        .bind(i64::from(max_attempts))
        .fetch_all(&mut *tx)
        .await?;
        set_message_status(&mut tx, &buried, MessageStatus::Dead).await?;
        tx.commit().await?;
        Ok(buried.len() as u64)
    }

    /// Records successful runs in one transaction. A job whose lease was
    /// lost meanwhile is skipped (its new holder will record it); the
    /// returned flags say which were recorded.
    pub async fn complete_jobs(&self, done: &[CompletedJob]) -> Result<Vec<bool>, StoreError> {
        // Serialise (and seal) outside the write turn: CPU work never holds
        // SQLite's single writer.
        let stored_views = done
            .iter()
            .map(|d| self.stored_view(&d.job.message_id, &d.view))
            .collect::<Result<Vec<_>, _>>()?;
        let _turn = self.gate.background().await;
        let mut tx = self.write.begin().await?;
        // Fence: only jobs still leased under their token are ours to finish.
        let mut still_ours = std::collections::HashSet::new();
        let mut tokens: Vec<&str> = done.iter().map(|d| d.job.lease_token.as_str()).collect();
        tokens.dedup();
        for token in tokens {
            let ids: Vec<i64> = done
                .iter()
                .filter(|d| d.job.lease_token == token)
                .map(|d| d.job.job_id)
                .collect();
            let sql = format!(
                "DELETE FROM jobs WHERE lease_token = $1 AND state = 'leased' AND id IN ({}) RETURNING id",
                placeholders(2, ids.len())
            );
            let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(token);
            for id in &ids {
                query = query.bind(*id);
            }
            still_ours.extend(query.fetch_all(&mut *tx).await?);
        }
        let ours: Vec<(&CompletedJob, &StoredView)> = done
            .iter()
            .zip(&stored_views)
            .filter(|(d, _)| still_ours.contains(&d.job.job_id))
            .collect();
        let recorded = done
            .iter()
            .map(|d| still_ours.contains(&d.job.job_id))
            .collect();
        // One UPDATE ... FROM (VALUES ...) per chunk; both engines name the
        // VALUES columns column1, column2, ...
        for chunk in ours.chunks(UPDATE_ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE messages SET status = 'processed', processed_at = v.column2, processing_ms = v.column3, \
                 from_addr = v.column4, subject = v.column5, date_unix = v.column6, text_body = v.column7, view_json = v.column8, \
                 sealed_view = v.column9, sealed_key_id = v.column10 \
                 FROM (VALUES {}) AS v WHERE messages.id = v.column1",
                value_rows(chunk.len(), 10)
            );
            let mut query = sqlx::query(&sql);
            for (item, stored) in chunk {
                query = query
                    .bind(item.job.message_id.as_str())
                    .bind(item.finished_at_ms)
                    .bind(item.processing_ms)
                    .bind(
                        item.view
                            .from
                            .as_ref()
                            .and_then(|a| a.address.as_deref())
                            .map(str::to_lowercase),
                    )
                    .bind(item.view.subject.as_deref())
                    .bind(item.view.date_unix)
                    .bind(stored.text_body.as_deref())
                    .bind(stored.view_json.as_deref())
                    .bind(stored.sealed.as_ref().map(|(bytes, _)| bytes.as_slice()))
                    .bind(stored.sealed.as_ref().map(|(_, key)| key.as_str()));
            }
            query.execute(&mut *tx).await?;
        }
        let steps: Vec<_> = ours
            .iter()
            .flat_map(|(item, _)| item.steps.iter().map(|s| (&item.job.message_id, s)))
            .collect();
        insert_steps(&mut tx, &steps).await?;
        let processed: Vec<(&str, i64)> = ours
            .iter()
            .map(|(item, _)| (item.job.message_id.as_str(), item.finished_at_ms))
            .collect();
        crate::submissions::queue_in(&mut tx, &self.outbox, &processed).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records a failed run: the job is rescheduled, or dead when
    /// `retry_at_ms` is `None`. Returns false when the lease was lost.
    pub async fn fail_job(&self, failed: &FailedJob) -> Result<bool, StoreError> {
        let _turn = self.gate.background().await;
        let mut tx = self.write.begin().await?;
        if !release_lease(&mut tx, &failed.job, Some(failed)).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let status = if failed.retry_at_ms.is_some() {
            MessageStatus::Failed
        } else {
            MessageStatus::Dead
        };
        sqlx::query("UPDATE messages SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(failed.job.message_id.as_str())
            .execute(&mut *tx)
            .await?;
        let steps: Vec<_> = failed
            .steps
            .iter()
            .map(|s| (&failed.job.message_id, s))
            .collect();
        insert_steps(&mut tx, &steps).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes failed (waiting) and dead jobs runnable now, resetting the
    /// attempt count of dead ones; with `processed` among the statuses,
    /// finished messages run through the pipeline again (after a model or
    /// rule change). Returns the messages re-queued.
    ///
    /// One set-based UPDATE picks and changes the jobs, so a worker that
    /// leases or finishes a job meanwhile is never overwritten: only rows
    /// still waiting or dead at that instant change.
    pub async fn requeue(
        &self,
        filter: &RequeueFilter,
        now_ms: i64,
    ) -> Result<Vec<MessageId>, StoreError> {
        let statuses: Vec<&str> = if filter.statuses.is_empty() {
            vec!["failed", "dead"]
        } else {
            filter.statuses.iter().map(|s| s.as_str()).collect()
        };
        let mut sql = format!(
            "UPDATE jobs SET state = 'queued', run_at = $1, updated_at = $1, lease_token = NULL, lease_until = NULL, \
             attempts = CASE WHEN state = 'dead' THEN 0 ELSE attempts END \
             WHERE state IN ('queued', 'dead') AND message_id IN (SELECT id FROM messages WHERE status IN ({}))",
            placeholders(2, statuses.len())
        );
        if !filter.message_ids.is_empty() {
            sql.push_str(&format!(
                " AND message_id IN ({})",
                placeholders(2 + statuses.len(), filter.message_ids.len())
            ));
        }
        sql.push_str(" RETURNING message_id");
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        let mut query = sqlx::query_scalar::<_, String>(&sql).bind(now_ms);
        for status in &statuses {
            query = query.bind(*status);
        }
        for id in &filter.message_ids {
            query = query.bind(id.as_str());
        }
        let mut ids = query.fetch_all(&mut *tx).await?;
        if filter.statuses.contains(&MessageStatus::Processed) {
            // A processed message's job was deleted when it completed: it
            // gets a new one. The UPDATE claims the messages first: it locks
            // their rows and re-checks `status = 'processed'` after any
            // concurrent claim commits, so two reprocess calls (or two
            // servers) never give one message two jobs.
            let mut sql =
                String::from("UPDATE messages SET status = 'queued' WHERE status = 'processed'");
            if !filter.message_ids.is_empty() {
                sql.push_str(&format!(
                    " AND id IN ({})",
                    placeholders(1, filter.message_ids.len())
                ));
            }
            sql.push_str(" RETURNING id");
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for id in &filter.message_ids {
                query = query.bind(id.as_str());
            }
            let claimed = query.fetch_all(&mut *tx).await?;
            let jobs: Vec<(&str, i64)> = claimed.iter().map(|id| (id.as_str(), now_ms)).collect();
            insert_queued_jobs(&mut tx, &jobs).await?;
            ids.extend(claimed);
        }
        set_message_status(&mut tx, &ids, MessageStatus::Queued).await?;
        tx.commit().await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    /// Jobs in one state, oldest first, at most `limit`.
    pub async fn jobs_in_state(
        &self,
        state: JobState,
        limit: u32,
    ) -> Result<Vec<JobInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 ORDER BY id LIMIT $2"
        ))
        .bind(state.as_str())
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(crate) async fn job_for_message(
        &self,
        id: &MessageId,
    ) -> Result<Option<JobInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE message_id = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }
}

/// Ends the current lease if `job` still holds it: deletes the job on
/// success, reschedules or buries it on failure.
async fn release_lease(
    tx: &mut Transaction<'static, Any>,
    job: &LeasedJob,
    failure: Option<&FailedJob>,
) -> Result<bool, StoreError> {
    let affected = match failure {
        None => {
            sqlx::query("DELETE FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'leased'")
                .bind(job.job_id)
                .bind(job.lease_token.as_str())
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
        Some(f) => {
            let (state, run_at) = match f.retry_at_ms {
                Some(at) => ("queued", at),
                None => ("dead", f.now_ms),
            };
            sqlx::query(
                "UPDATE jobs SET state = $1, run_at = $2, last_error = $3, updated_at = $4, lease_token = NULL, lease_until = NULL \
                 WHERE id = $5 AND lease_token = $6 AND state = 'leased'",
            )
            .bind(state)
            .bind(run_at)
            .bind(f.error.as_str())
            .bind(f.now_ms)
            .bind(job.job_id)
            .bind(job.lease_token.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected()
        }
    };
    Ok(affected == 1)
}

/// A parsed view as it will be written: in the clear (JSON without the
/// body + the body in its own searchable column) or sealed whole.
pub(crate) struct StoredView {
    pub(crate) text_body: Option<String>,
    pub(crate) view_json: Option<String>,
    pub(crate) sealed: Option<(Vec<u8>, String)>,
}

impl Store {
    pub(crate) fn stored_view(
        &self,
        id: &MessageId,
        view: &MessageView,
    ) -> Result<StoredView, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        if let Some(ring) = self.keyring() {
            let json = serde_json::to_vec(view).map_err(corrupt)?;
            let sealed = ring.seal(&view_aad(id.as_str()), &json);
            return Ok(StoredView {
                text_body: None,
                view_json: None,
                sealed: Some((sealed.bytes, sealed.key_id.to_string())),
            });
        }
        let mut value = serde_json::to_value(view).map_err(corrupt)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("text_body");
        }
        Ok(StoredView {
            text_body: Some(view.text_body.clone()),
            view_json: Some(serde_json::to_string(&value).map_err(corrupt)?),
            sealed: None,
        })
    }
}

/// Messages per batched completion UPDATE (10 parameters each).
const UPDATE_ROWS_PER_STATEMENT: usize = 200;

/// Rows per multi-row INSERT: 7 parameters each stays far below SQLite's
/// limit of 32,766 bound parameters.
const STEP_ROWS_PER_INSERT: usize = 500;

async fn insert_steps(
    tx: &mut Transaction<'static, Any>,
    steps: &[(&MessageId, &ProcessingStep)],
) -> Result<(), StoreError> {
    for chunk in steps.chunks(STEP_ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO processing_steps (message_id, stage, attempt, outcome, started_at, duration_ms, error) VALUES {}",
            value_rows(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for (message_id, step) in chunk {
            query = query
                .bind(message_id.as_str())
                .bind(step.stage.as_str())
                .bind(i64::from(step.attempt))
                .bind(match step.outcome {
                    StepOutcome::Ok => "ok",
                    StepOutcome::Error => "error",
                })
                .bind(step.started_at_ms)
                .bind(step.duration_ms)
                .bind(step.error.as_deref());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Sets the status of the given messages, in chunks of bounded size.
async fn set_message_status(
    tx: &mut Transaction<'static, Any>,
    ids: &[String],
    status: MessageStatus,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(STEP_ROWS_PER_INSERT) {
        let sql = format!(
            "UPDATE messages SET status = $1 WHERE id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(status.as_str());
        for id in chunk {
            query = query.bind(id.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// New queued jobs, one per (message id, time); the time is when the job
/// runs, and when it was created and updated.
pub(crate) async fn insert_queued_jobs(
    tx: &mut Transaction<'static, Any>,
    jobs: &[(&str, i64)],
) -> Result<(), StoreError> {
    for chunk in jobs.chunks(STEP_ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let (id, at) = (1 + i * 2, 2 + i * 2);
                format!("(${id}, 'queued', 0, ${at}, ${at}, ${at})")
            })
            .collect();
        let sql = format!(
            "INSERT INTO jobs (message_id, state, attempts, run_at, created_at, updated_at) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (id, at) in chunk {
            query = query.bind(*id).bind(*at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `($1, ..., $cols), ($cols+1, ...), ...` — `rows` rows of numbered
/// placeholders for a multi-row VALUES list.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", placeholders(1 + i * cols, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, ...` — `count` numbered placeholders.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn job_from_row(r: &AnyRow) -> Result<JobInfo, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(JobInfo {
        id: r.try_get("id")?,
        message_id: parse_id(&r.try_get::<String, _>("message_id")?)?,
        state: state
            .parse()
            .map_err(|e: mailroom_domain::UnknownStatus| StoreError::Corrupt(e.to_string()))?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        run_at_ms: r.try_get("run_at")?,
        lease_until_ms: r.try_get("lease_until")?,
        last_error: r.try_get("last_error")?,
        created_at_ms: r.try_get("created_at")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}
