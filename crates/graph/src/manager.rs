//! The subscription owner: exactly one replica at a time (a lease row that
//! works on both engines) reconciles subscriptions with Graph, creates what
//! is missing, renews before expiry, acts on lifecycle events and runs the
//! delta catch-ups. Every other replica only receives webhooks and fetches.
//!
//! Ordering rules from projects that got it wrong: reconcile and renew
//! before creating, one mailbox at a time (overlapping rounds create
//! duplicate subscriptions); store a new subscription only after Graph
//! created it (a crash in between leaves a stray that the next reconcile
//! deletes); recreate on `subscriptionRemoved` only if the removed id is
//! still the stored one (a late duplicate event must not orphan the
//! replacement).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use mailroom_app::now_ms;
use mailroom_security::random_hex;
use mailroom_store::{GraphSubscriptionRecord, NotifiedMessage, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::{self, BatchRequest, MAX_BATCH},
    intake::{client_state_hash, WebhookIntake},
    GraphClient, GraphError,
};

/// The lease every replica competes for.
pub const OWNER_LEASE: &str = "graph-subscriptions";
/// The folder whose delta link is kept (subscriptions watch the Inbox).
pub const INBOX: &str = "inbox";
/// Most delta pages in one catch-up (100 messages each): a bound on one
/// round's work; the stored link resumes the rest.
const MAX_DELTA_PAGES: usize = 1000;
/// How often the owner asks Graph for the full list again (a subscription
/// deleted behind our back is recreated within this).
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// How soon a reconcile that failed is tried again.
const RECONCILE_RETRY: Duration = Duration::from_secs(5);

/// What the owner has done since it took the lease.
#[derive(Default)]
struct OwnerRounds {
    next_reconcile: Option<tokio::time::Instant>,
    /// The start-up delta catch-up ran.
    caught_up: bool,
}

pub struct SubscriptionManager {
    pub(crate) client: GraphClient,
    pub(crate) store: Store,
    pub(crate) intake: Arc<WebhookIntake>,
    /// This process's name in the lease.
    pub(crate) holder: String,
}

impl SubscriptionManager {
    fn mailboxes(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.client
            .settings()
            .mailboxes
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty() && seen.insert(m.to_ascii_lowercase()))
            .collect()
    }

    fn lease_ms(&self) -> i64 {
        self.client.settings().lease_ttl.as_millis() as i64
    }

    async fn still_owner(&self) -> Result<bool, GraphError> {
        Ok(self
            .store
            .try_lease(OWNER_LEASE, &self.holder, now_ms(), self.lease_ms())
            .await?)
    }

    /// Competes for the lease until `stop`; while it holds it, does the
    /// owner's work. Releases the lease on the way out.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tick = (self.client.settings().lease_ttl / 3).max(Duration::from_millis(200));
        let mut owner = false;
        let mut round = OwnerRounds::default();
        loop {
            match self.still_owner().await {
                Ok(true) => {
                    if !owner {
                        info!(holder = %self.holder, "took the Graph subscription lease");
                        owner = true;
                        round = OwnerRounds::default();
                    }
                    if let Err(e) = self.owner_round(&mut round).await {
                        warn!(error = %e, "Graph subscription round failed; retrying");
                    }
                }
                Ok(false) => {
                    if owner {
                        warn!(holder = %self.holder, "lost the Graph subscription lease");
                    }
                    owner = false;
                }
                Err(e) => warn!(error = %e, "cannot take the Graph subscription lease"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                _ = self.intake.owner_wake.notified(), if owner => {}
            }
        }
        if owner {
            if let Err(e) = self.store.release_lease(OWNER_LEASE, &self.holder).await {
                warn!(error = %e, "cannot release the Graph subscription lease");
            }
        }
    }

    async fn owner_round(&self, round: &mut OwnerRounds) -> Result<(), GraphError> {
        if round
            .next_reconcile
            .is_none_or(|t| tokio::time::Instant::now() >= t)
        {
            // A failure (Graph down, one mailbox refused) brings the next
            // attempt closer; it never stops the rest of the round.
            let complete = match self.reconcile().await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "reconciling the subscriptions failed; retrying soon");
                    false
                }
            };
            let wait = if complete {
                RECONCILE_EVERY
            } else {
                RECONCILE_RETRY
            };
            round.next_reconcile = Some(tokio::time::Instant::now() + wait);
            if !round.caught_up {
                // Whatever arrived while no owner ran (downtime, a crash).
                for mailbox in self.mailboxes() {
                    if !self.still_owner().await? {
                        return Ok(());
                    }
                    self.catch_up_logged(&mailbox).await;
                }
                round.caught_up = true;
            }
        }
        self.handle_lifecycle_events().await?;
        self.renew_due().await
    }

    /// Adopts our subscriptions, deletes strays, creates what is missing.
    pub async fn reconcile(&self) -> Result<(), GraphError> {
        let ours = self
            .client
            .settings()
            .notification_url
            .trim_end_matches('/')
            .to_string();
        let remote: HashMap<String, api::Subscription> = self
            .client
            .list_subscriptions()
            .await?
            .into_iter()
            .filter(|s| s.notification_url.trim_end_matches('/') == ours)
            .map(|s| (s.id.clone(), s))
            .collect();
        let stored = self.store.graph_subscriptions().await?;
        let mailboxes = self.mailboxes();
        let configured: HashSet<String> =
            mailboxes.iter().map(|m| m.to_ascii_lowercase()).collect();
        let mut kept = HashSet::new();
        let mut failed = None;
        for record in &stored {
            if !configured.contains(&record.mailbox.to_ascii_lowercase()) {
                info!(mailbox = %record.mailbox, subscription_id = %record.subscription_id, "mailbox no longer configured; deleting its subscription");
                self.client
                    .delete_subscription(&record.subscription_id)
                    .await?;
                self.store
                    .remove_graph_subscription(&record.subscription_id)
                    .await?;
                self.intake.forget(&record.subscription_id);
                continue;
            }
            if let Some(remote) = remote.get(&record.subscription_id) {
                kept.insert(record.subscription_id.clone());
                let expires = remote.expiration_date_time.timestamp_millis();
                if expires != record.expires_at_ms {
                    self.store
                        .renewed_graph_subscription(&record.subscription_id, expires, now_ms())
                        .await?;
                }
            }
        }
        for (id, sub) in &remote {
            if !kept.contains(id) {
                info!(subscription_id = %id, resource = %sub.resource, "deleting a stray subscription");
                self.client.delete_subscription(id).await?;
            }
        }
        for mailbox in mailboxes {
            let current = stored
                .iter()
                .find(|r| r.mailbox.eq_ignore_ascii_case(&mailbox))
                .filter(|r| kept.contains(&r.subscription_id));
            if current.is_none() {
                if !self.still_owner().await? {
                    return Ok(());
                }
                let had_one = stored
                    .iter()
                    .any(|r| r.mailbox.eq_ignore_ascii_case(&mailbox));
                // One mailbox Graph refuses (no permission, unknown user)
                // must not keep the others unsubscribed: noted, retried
                // next round, the rest go on.
                if let Err(e) = self.create(&mailbox).await {
                    warn!(mailbox = %mailbox, error = %e, "cannot create the subscription; retrying next round");
                    failed = Some(e);
                    continue;
                }
                if had_one {
                    // It vanished while we were not looking: notifications
                    // were lost.
                    self.catch_up_logged(&mailbox).await;
                }
            }
        }
        // An error keeps the round due, so the failed mailbox is retried.
        failed.map_or(Ok(()), Err)
    }

    async fn create(&self, mailbox: &str) -> Result<(), GraphError> {
        let client_state = random_hex(32);
        let expires = Utc::now()
            + chrono::Duration::from_std(self.client.settings().subscription_lifetime)
                .unwrap_or(chrono::Duration::days(6));
        let created = match self
            .client
            .create_subscription(mailbox, &client_state, expires)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = self
                    .store
                    .graph_subscription_error(mailbox, &e.to_string(), now_ms())
                    .await;
                return Err(e);
            }
        };
        let now = now_ms();
        let previous = self
            .store
            .graph_subscriptions()
            .await?
            .into_iter()
            .find(|r| r.mailbox.eq_ignore_ascii_case(mailbox));
        self.store
            .put_graph_subscription(&GraphSubscriptionRecord {
                mailbox: mailbox.to_string(),
                subscription_id: created.id.clone(),
                resource: created.resource.clone(),
                client_state_hash: client_state_hash(&client_state),
                expires_at_ms: created.expiration_date_time.timestamp_millis(),
                created_at_ms: now,
                renewed_at_ms: None,
                last_error: None,
                updated_at_ms: now,
            })
            .await?;
        if let Some(previous) = previous {
            self.intake.forget(&previous.subscription_id);
        }
        info!(
            subscription_id = %created.id,
            mailbox = %mailbox,
            expires_at = %api::graph_time(created.expiration_date_time),
            "subscription created"
        );
        Ok(())
    }

    /// Renews every subscription with less than `renew_before` left, in
    /// `$batch`es of 20; one Graph no longer knows is recreated.
    async fn renew_due(&self) -> Result<(), GraphError> {
        let s = self.client.settings();
        let now = now_ms();
        let due: Vec<GraphSubscriptionRecord> = self
            .store
            .graph_subscriptions()
            .await?
            .into_iter()
            .filter(|r| r.expires_at_ms - now < s.renew_before.as_millis() as i64)
            .collect();
        let expires = Utc::now()
            + chrono::Duration::from_std(s.subscription_lifetime)
                .unwrap_or(chrono::Duration::days(6));
        for chunk in due.chunks(MAX_BATCH) {
            if !self.still_owner().await? {
                return Ok(());
            }
            let requests = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| BatchRequest {
                    id: i.to_string(),
                    method: "PATCH".into(),
                    url: format!("/subscriptions/{}", r.subscription_id),
                    body: Some(serde_json::json!({"expirationDateTime": api::graph_time(expires)})),
                    headers: Some(serde_json::json!({"Content-Type": "application/json"})),
                })
                .collect();
            let responses = self.client.batch(requests).await?;
            for (i, record) in chunk.iter().enumerate() {
                let answer = responses.iter().find(|r| r.id == i.to_string());
                match answer.map(|a| a.status) {
                    Some(200) => {
                        let granted = answer
                            .and_then(|a| a.body.as_ref())
                            .and_then(|b| b.get("expirationDateTime"))
                            .and_then(|v| v.as_str())
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.timestamp_millis())
                            .unwrap_or(expires.timestamp_millis());
                        self.store
                            .renewed_graph_subscription(&record.subscription_id, granted, now_ms())
                            .await?;
                        info!(subscription_id = %record.subscription_id, mailbox = %record.mailbox, "subscription renewed");
                    }
                    Some(404) => {
                        warn!(subscription_id = %record.subscription_id, mailbox = %record.mailbox, "subscription gone at renewal; recreating");
                        self.replace(record).await?;
                    }
                    other => {
                        // Throttled or failed item: noted, tried next round.
                        let note = format!("renewal answered {other:?}");
                        self.store
                            .graph_subscription_error(&record.mailbox, &note, now_ms())
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Recreates a mailbox's subscription and catches up what was missed.
    async fn replace(&self, record: &GraphSubscriptionRecord) -> Result<(), GraphError> {
        self.store
            .remove_graph_subscription(&record.subscription_id)
            .await?;
        self.intake.forget(&record.subscription_id);
        self.create(&record.mailbox).await?;
        self.catch_up_logged(&record.mailbox).await;
        Ok(())
    }

    async fn handle_lifecycle_events(&self) -> Result<(), GraphError> {
        for event in self.store.pending_lifecycle_events(100).await? {
            let record = self
                .store
                .graph_subscription(&event.subscription_id)
                .await?;
            match (event.event.as_str(), record) {
                ("reauthorizationRequired", Some(record)) => {
                    info!(subscription_id = %record.subscription_id, "reauthorizing subscription");
                    match self
                        .client
                        .reauthorize_subscription(&record.subscription_id)
                        .await
                    {
                        Err(e) if e.status() == Some(404) => self.replace(&record).await?,
                        other => other?,
                    }
                }
                ("subscriptionRemoved", Some(record)) => {
                    info!(subscription_id = %record.subscription_id, mailbox = %record.mailbox, "subscription removed by Graph; recreating");
                    self.replace(&record).await?;
                }
                ("missed", Some(record)) => {
                    info!(subscription_id = %record.subscription_id, mailbox = %record.mailbox, "notifications missed; catching up");
                    self.catch_up(&record.mailbox).await?;
                }
                (name, None) => {
                    // Not (or no longer) the current subscription: a late
                    // duplicate; acting on it would orphan the replacement.
                    info!(subscription_id = %event.subscription_id, event = name, "lifecycle event for a replaced subscription ignored");
                }
                (name, Some(_)) => {
                    warn!(subscription_id = %event.subscription_id, event = name, "unknown lifecycle event ignored");
                }
            }
            self.store
                .lifecycle_event_handled(event.id, now_ms())
                .await?;
        }
        Ok(())
    }

    async fn catch_up_logged(&self, mailbox: &str) {
        if let Err(e) = self.catch_up(mailbox).await {
            warn!(mailbox = %mailbox, error = %e, "delta catch-up failed; it runs again next round");
        }
    }

    /// Follows the mailbox's Inbox delta from its stored link (or from
    /// `resync_window` ago) and queues every message it lists; a link Graph
    /// has expired (410) restarts from the window, once. Returns how many
    /// messages were new to the queue.
    pub async fn catch_up(&self, mailbox: &str) -> Result<u64, GraphError> {
        let window = chrono::Duration::from_std(self.client.settings().resync_window)
            .unwrap_or(chrono::Duration::days(1));
        let since = Utc::now() - window;
        let mut url = self.store.delta_link(mailbox, INBOX).await?;
        let mut resynced = false;
        let mut queued = 0;
        let mut pages = 0;
        loop {
            let page = match self.client.delta_page(mailbox, url.as_deref(), since).await {
                Ok(page) => page,
                Err(e) if e.status() == Some(410) && !resynced => {
                    warn!(mailbox = %mailbox, "delta link expired (410); full resync of the window");
                    resynced = true;
                    url = None;
                    self.store
                        .set_delta_link(mailbox, INBOX, None, now_ms())
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let messages: Vec<NotifiedMessage> = page
                .value
                .into_iter()
                .filter(|item| item.removed.is_none() && !item.id.is_empty())
                .map(|item| NotifiedMessage {
                    mailbox: mailbox.to_string(),
                    graph_message_id: item.id,
                    origin: "delta",
                })
                .collect();
            let new = self.store.enqueue_notified(&messages, now_ms()).await?;
            if new > 0 {
                self.intake.fetch_wake.notify_waiters();
            }
            queued += new;
            pages += 1;
            match (page.next_link, page.delta_link) {
                (Some(next), _) if pages < MAX_DELTA_PAGES => {
                    // Store progress so a crash resumes mid-round.
                    self.store
                        .set_delta_link(mailbox, INBOX, Some(&next), now_ms())
                        .await?;
                    url = Some(next);
                }
                (Some(_), _) => break,
                (None, Some(delta)) => {
                    self.store
                        .set_delta_link(mailbox, INBOX, Some(&delta), now_ms())
                        .await?;
                    break;
                }
                (None, None) => {
                    return Err(GraphError::Protocol {
                        op: "delta",
                        reason: "a page with neither nextLink nor deltaLink".into(),
                    })
                }
            }
        }
        info!(mailbox = %mailbox, queued, pages, "delta catch-up done");
        Ok(queued)
    }
}
