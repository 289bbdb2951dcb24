//! State of the mailbox sources: leases (one owner of a role across
//! replicas), Microsoft Graph subscriptions, delta links and the durable
//! queue of notified messages.

use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use crate::{
    leasing::{bind_lease, counts_by_state, lease_sql},
    Store, StoreError,
};

/// A Graph subscription as stored (the clientState only as its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphSubscriptionRecord {
    pub mailbox: String,
    pub subscription_id: String,
    pub resource: String,
    #[serde(skip)]
    pub client_state_hash: String,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub renewed_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
}

/// A message to fetch, as a worker leased it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedNotification {
    pub id: i64,
    pub mailbox: String,
    pub graph_message_id: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    pub received_at_ms: i64,
}

/// One message Graph told us about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedMessage {
    pub mailbox: String,
    pub graph_message_id: String,
    /// `webhook` or `delta`.
    pub origin: &'static str,
}

/// Counts of the notification queue by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotificationCounts {
    pub queued: u64,
    pub leased: u64,
    pub done: u64,
    pub dead: u64,
}

/// Most rows in one multi-row insert (PostgreSQL allows 65,535 binds).
const MAX_ROWS_PER_INSERT: usize = 1000;

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`.
    /// Succeeds when nobody holds it, `holder` already does, or the
    /// holder's lease has expired; one statement, so two contenders can
    /// never both win.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let won: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at, acquired_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, \
             acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .fetch_optional(&self.write)
        .await?;
        Ok(won.as_deref() == Some(holder))
    }

    /// Gives the lease up (a clean shutdown) so another replica need not
    /// wait for it to expire.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Who holds the lease and until when.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT holder, expires_at FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(self.primary())
            .await?;
        row.map(|r| Ok((r.try_get("holder")?, r.try_get("expires_at")?)))
            .transpose()
    }

    /// Records a subscription for its mailbox, replacing the one before.
    pub async fn put_graph_subscription(
        &self,
        record: &GraphSubscriptionRecord,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query(
            "INSERT INTO graph_subscriptions (mailbox, subscription_id, resource, client_state_hash, expires_at, created_at, renewed_at, last_error, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (mailbox) DO UPDATE SET \
             subscription_id = excluded.subscription_id, resource = excluded.resource, client_state_hash = excluded.client_state_hash, \
             expires_at = excluded.expires_at, created_at = excluded.created_at, renewed_at = excluded.renewed_at, \
             last_error = excluded.last_error, updated_at = excluded.updated_at",
        )
        .bind(&record.mailbox)
        .bind(&record.subscription_id)
        .bind(&record.resource)
        .bind(&record.client_state_hash)
        .bind(record.expires_at_ms)
        .bind(record.created_at_ms)
        .bind(record.renewed_at_ms)
        .bind(&record.last_error)
        .bind(record.updated_at_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Every stored subscription, by mailbox.
    pub async fn graph_subscriptions(&self) -> Result<Vec<GraphSubscriptionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM graph_subscriptions ORDER BY mailbox"
        ))
        .fetch_all(self.primary())
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    /// The stored subscription with this Graph id.
    pub async fn graph_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<GraphSubscriptionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM graph_subscriptions WHERE subscription_id = $1"
        ))
        .bind(subscription_id)
        .fetch_optional(self.primary())
        .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    /// Records a renewal, only if `subscription_id` is still the mailbox's.
    pub async fn renewed_graph_subscription(
        &self,
        subscription_id: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let done = sqlx::query(
            "UPDATE graph_subscriptions SET expires_at = $1, renewed_at = $2, updated_at = $2, last_error = NULL WHERE subscription_id = $3",
        )
        .bind(expires_at_ms)
        .bind(now_ms)
        .bind(subscription_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes a failure on a mailbox's subscription (shown in the API).
    pub async fn graph_subscription_error(
        &self,
        mailbox: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query(
            "UPDATE graph_subscriptions SET last_error = $1, updated_at = $2 WHERE mailbox = $3",
        )
        .bind(error)
        .bind(now_ms)
        .bind(mailbox)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Forgets a subscription, only if it is still the one stored (a late
    /// duplicate `subscriptionRemoved` must not drop its replacement).
    pub async fn remove_graph_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.urgent().await;
        let done = sqlx::query("DELETE FROM graph_subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The stored delta link of a mailbox folder.
    pub async fn delta_link(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<String>, StoreError> {
        let link: Option<Option<String>> = sqlx::query_scalar(
            "SELECT delta_link FROM graph_delta WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(self.primary())
        .await?;
        Ok(link.flatten())
    }

    /// Stores (or, with `None`, clears) a folder's delta link.
    pub async fn set_delta_link(
        &self,
        mailbox: &str,
        folder: &str,
        link: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.background().await;
        sqlx::query(
            "INSERT INTO graph_delta (mailbox, folder, delta_link, synced_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mailbox, folder) DO UPDATE SET delta_link = excluded.delta_link, synced_at = excluded.synced_at",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(link)
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// When each folder was last caught up, by (mailbox, folder).
    pub async fn delta_sync_times(&self) -> Result<Vec<(String, String, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT mailbox, folder, synced_at FROM graph_delta ORDER BY mailbox, folder",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("mailbox")?,
                    r.try_get("folder")?,
                    r.try_get("synced_at")?,
                ))
            })
            .collect()
    }

    /// Queues notified messages durably; a message already known (queued,
    /// fetched or dead) is ignored. Returns how many were new. Urgent at
    /// SQLite's writer: the webhook answers only after this commits.
    pub async fn enqueue_notified(
        &self,
        messages: &[NotifiedMessage],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        let mut inserted = 0;
        for chunk in messages.chunks(MAX_ROWS_PER_INSERT) {
            let rows = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, ${}, 'queued', $1, $1)",
                        3 * i + 2,
                        3 * i + 3,
                        3 * i + 4
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO graph_notifications (mailbox, graph_message_id, origin, state, run_at, received_at) \
                 VALUES {rows} ON CONFLICT (mailbox, graph_message_id) DO NOTHING"
            );
            let mut query = sqlx::query(&sql).bind(now_ms);
            for m in chunk {
                query = query
                    .bind(&m.mailbox)
                    .bind(&m.graph_message_id)
                    .bind(m.origin);
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Leases up to `limit` notified messages to fetch (due, or whose lease
    /// expired with attempts left) under `token`.
    pub async fn lease_notified(
        &self,
        token: &str,
        limit: u32,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<LeasedNotification>, StoreError> {
        let sql = lease_sql(
            self.backend,
            "graph_notifications",
            "",
            "id, mailbox, graph_message_id, attempts, received_at",
        );
        let _turn = self.gate.background().await;
        let query = bind_lease(
            sqlx::query(&sql),
            token,
            limit,
            now_ms,
            lease_ms,
            max_attempts,
        );
        let rows = query.fetch_all(&self.write).await?;
        let mut leased = rows
            .iter()
            .map(|r| {
                Ok(LeasedNotification {
                    id: r.try_get("id")?,
                    mailbox: r.try_get("mailbox")?,
                    graph_message_id: r.try_get("graph_message_id")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    received_at_ms: r.try_get("received_at")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        leased.sort_by_key(|n| n.id);
        Ok(leased)
    }

    /// Marks a fetched notification done (with the id of the stored
    /// message, or none when the message was gone), if still ours.
    pub async fn finish_notified(
        &self,
        id: i64,
        token: &str,
        message_id: Option<&str>,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.background().await;
        let done = sqlx::query(
            "UPDATE graph_notifications SET state = 'done', lease_token = NULL, lease_until = NULL, finished_at = $1, \
             message_id = $2, last_error = $3 WHERE id = $4 AND lease_token = $5 AND state = 'leased'",
        )
        .bind(now_ms)
        .bind(message_id)
        .bind(note)
        .bind(id)
        .bind(token)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed fetch: queued again at `retry_at_ms`, or dead.
    pub async fn fail_notified(
        &self,
        id: i64,
        token: &str,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.gate.background().await;
        let (state, run_at, finished) = match retry_at_ms {
            Some(at) => ("queued", at, None),
            None => ("dead", now_ms, Some(now_ms)),
        };
        let done = sqlx::query(
            "UPDATE graph_notifications SET state = $1, run_at = $2, lease_token = NULL, lease_until = NULL, last_error = $3, \
             finished_at = $4 WHERE id = $5 AND lease_token = $6 AND state = 'leased'",
        )
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(finished)
        .bind(id)
        .bind(token)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The notification queue by state.
    pub async fn notified_counts(&self) -> Result<NotificationCounts, StoreError> {
        let mut counts = NotificationCounts::default();
        for (state, n) in counts_by_state(&self.read, "graph_notifications").await? {
            match state.as_str() {
                "queued" => counts.queued = n,
                "leased" => counts.leased = n,
                "done" => counts.done = n,
                "dead" => counts.dead = n,
                other => return Err(StoreError::Corrupt(format!("notification state `{other}`"))),
            }
        }
        Ok(counts)
    }
}

const SUBSCRIPTION_COLUMNS: &str = "mailbox, subscription_id, resource, client_state_hash, expires_at, created_at, renewed_at, last_error, updated_at";

fn subscription_from_row(r: &AnyRow) -> Result<GraphSubscriptionRecord, StoreError> {
    Ok(GraphSubscriptionRecord {
        mailbox: r.try_get("mailbox")?,
        subscription_id: r.try_get("subscription_id")?,
        resource: r.try_get("resource")?,
        client_state_hash: r.try_get("client_state_hash")?,
        expires_at_ms: r.try_get("expires_at")?,
        created_at_ms: r.try_get("created_at")?,
        renewed_at_ms: r.try_get("renewed_at")?,
        last_error: r.try_get("last_error")?,
        updated_at_ms: r.try_get("updated_at")?,
    })
}

/// A lifecycle notification waiting for the subscription owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEventRecord {
    pub id: i64,
    pub subscription_id: String,
    pub event: String,
    pub received_at_ms: i64,
}

impl Store {
    /// Queues lifecycle notifications for the owner (any replica may
    /// receive them).
    pub async fn enqueue_lifecycle_events(
        &self,
        events: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        for (subscription_id, event) in events {
            sqlx::query(
                "INSERT INTO graph_lifecycle_events (subscription_id, event, received_at) VALUES ($1, $2, $3)",
            )
            .bind(subscription_id)
            .bind(event)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lifecycle events not handled yet, oldest first.
    pub async fn pending_lifecycle_events(
        &self,
        limit: u32,
    ) -> Result<Vec<LifecycleEventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, subscription_id, event, received_at FROM graph_lifecycle_events WHERE handled_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.primary())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LifecycleEventRecord {
                    id: r.try_get("id")?,
                    subscription_id: r.try_get("subscription_id")?,
                    event: r.try_get("event")?,
                    received_at_ms: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// Marks a lifecycle event handled.
    pub async fn lifecycle_event_handled(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        let _turn = self.gate.background().await;
        sqlx::query("UPDATE graph_lifecycle_events SET handled_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

impl Store {
    /// An IMAP account's (UIDVALIDITY, last ingested UID).
    pub async fn imap_state(&self, account: &str) -> Result<Option<(u32, u32)>, StoreError> {
        let row = sqlx::query("SELECT uid_validity, last_uid FROM imap_state WHERE account = $1")
            .bind(account)
            .fetch_optional(self.primary())
            .await?;
        row.map(|r| {
            let validity: i64 = r.try_get("uid_validity")?;
            let last: i64 = r.try_get("last_uid")?;
            Ok((validity as u32, last as u32))
        })
        .transpose()
    }

    /// Records how far an IMAP account's mailbox was read.
    pub async fn set_imap_state(
        &self,
        account: &str,
        uid_validity: u32,
        last_uid: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.urgent().await;
        sqlx::query(
            "INSERT INTO imap_state (account, uid_validity, last_uid, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(i64::from(uid_validity))
        .bind(i64::from(last_uid))
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
