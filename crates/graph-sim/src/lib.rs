//! A local simulator of the Microsoft Graph protocol subset mailroom uses:
//! the AAD v2 token endpoint, webhook subscriptions with the validation
//! handshake, change and lifecycle notifications, message reads and
//! updates, folder delta, JSON `$batch`, throttling, and Teams chats.
//!
//! It speaks the documented HTTP protocol (it does not mock any mailroom
//! function), so a Graph client tested against it is exercising the same
//! requests and replies it will see against `graph.microsoft.com`.
//! Deliberate simplifications are noted where they are made.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mailroom_graph_sim::{GraphSim, SimConfig, DeliverOptions};
//! let sim = GraphSim::start(SimConfig {
//!     mailboxes: vec!["alice@example.test".into()],
//!     ..SimConfig::default()
//! })
//! .await?;
//! println!("Graph at {}, login at {}", sim.base_url(), sim.login_url());
//! sim.deliver("alice@example.test", b"Subject: hi\r\n\r\nbody".to_vec(), DeliverOptions::default())
//!     .await;
//! # Ok(()) }
//! ```

mod auth;
mod batch;
mod chats;
mod control;
mod delta;
mod graph;
mod mail;
mod notify;
mod state;
mod subscriptions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use state::Inner;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Mailbox UPNs; each gets a stable GUID user id (derived from the UPN).
    pub mailboxes: Vec<String>,
    pub token_lifetime_secs: u64,
    /// Outlook message subscriptions may live at most 10,080 minutes.
    pub max_subscription_minutes: i64,
    /// Delta page size when the client sends no `Prefer: odata.maxpagesize`.
    pub delta_page_size: usize,
    /// (username, password) accepted by `grant_type=password` for a delegated token.
    pub service_account: Option<(String, String)>,
    pub listen: SocketAddr,
    /// Artificial delay, in milliseconds, for message and `$value` reads so
    /// that concurrent requests overlap observably (mailbox concurrency).
    pub read_delay_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tenant_id: "sim-tenant".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            mailboxes: Vec::new(),
            token_lifetime_secs: 3599,
            max_subscription_minutes: 10080,
            delta_page_size: 10,
            service_account: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            read_delay_ms: 2,
        }
    }
}

/// Options for [`GraphSim::deliver`] and [`GraphSim::deliver_burst`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliverOptions {
    /// Send every notification twice, in separate POSTs (Graph delivers at least once).
    pub duplicate: bool,
    /// Send a clientState that does not match the subscription's.
    pub bad_client_state: bool,
    /// Items per notification POST in a burst; 0 is treated as 1.
    pub items_per_post: usize,
    /// Shuffle the POSTs (and the items inside each POST).
    pub out_of_order: bool,
}

/// One notification POST the simulator made.
#[derive(Debug, Clone, Serialize)]
pub struct PostOutcome {
    /// HTTP status our server answered; None if it did not answer in time or the connection failed.
    pub status: Option<u16>,
    #[serde(rename = "elapsed_ms", serialize_with = "ser_ms")]
    pub elapsed: Duration,
    pub error: Option<String>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// Id of the stored message; empty if the mailbox is unknown.
    pub message_id: String,
    pub posts: Vec<PostOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    pub message_ids: Vec<String>,
    pub posts: Vec<PostOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LifecycleEvent {
    Missed,
    SubscriptionRemoved,
    ReauthorizationRequired,
}

impl LifecycleEvent {
    /// The `lifecycleEvent` value Graph sends.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::Missed => "missed",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
        }
    }

    /// Parses the Graph value (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [
            LifecycleEvent::Missed,
            LifecycleEvent::SubscriptionRemoved,
            LifecycleEvent::ReauthorizationRequired,
        ]
        .into_iter()
        .find(|e| e.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: chrono::DateTime<chrono::Utc>,
    pub reauthorization_required: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    pub tokens_issued: u64,
    /// 429s answered (explicit throttle and mailbox concurrency).
    pub throttled: u64,
    pub requests_by_op: BTreeMap<String, u64>,
    /// Highest number of requests in flight at once per mailbox UPN,
    /// counting the request that arrived (so a client sending 5 at once
    /// shows 5 even though the fifth was answered 429).
    pub max_concurrency_by_mailbox: BTreeMap<String, usize>,
    pub validations_sent: u64,
    /// Change-notification POSTs made (a POST may carry several items).
    pub notifications_sent: u64,
    /// Change-notification items sent, over all POSTs.
    pub notification_items_sent: u64,
    /// Lifecycle-notification POSTs made.
    pub lifecycle_notifications_sent: u64,
}

/// One request to the Graph API or the token endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as received, e.g. `/v1.0/users/x/messages/y?$select=id`.
    pub path: String,
    /// Operation name, e.g. `token`, `getMessage`, `delta`, `batch`.
    pub op: String,
    pub status: u16,
    /// The `Prefer` header(s), joined with ", ".
    pub prefer: Option<String>,
    pub has_authorization: bool,
    /// True for an item run from inside a `$batch`.
    pub in_batch: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatView {
    pub id: String,
    pub topic: Option<String>,
    pub chat_type: String,
    /// (user id from `user@odata.bind`, roles)
    pub members: Vec<(String, Vec<String>)>,
    /// Body contents of the messages posted to the chat.
    pub messages: Vec<String>,
}

/// What the Graph API has done to a message (PATCH, move, reply).
#[derive(Debug, Clone, Serialize)]
pub struct MessageState {
    pub categories: Vec<String>,
    pub flagged: bool,
    /// `flag.flagStatus`: notFlagged, flagged or complete.
    pub flag_status: String,
    pub is_read: bool,
    /// "inbox", or the destinationId of the last move (well-known names lowercased).
    pub folder: String,
    /// `comment` of every reply.
    pub replies: Vec<String>,
}

/// Handle to a running simulator. Cheap to clone; the server runs until
/// [`GraphSim::shutdown`] or until the Tokio runtime stops.
#[derive(Clone)]
pub struct GraphSim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSim")
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl GraphSim {
    /// Binds `config.listen` and serves the simulator in a background task.
    pub async fn start(config: SimConfig) -> std::io::Result<GraphSim> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner::new(config, addr, http));
        let app = graph::router(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "graph simulator server stopped");
            }
        });
        *inner.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Ok(GraphSim { inner })
    }

    /// Stops serving (in-flight requests are dropped).
    pub fn shutdown(&self) {
        if let Some(h) = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }

    /// `http://127.0.0.1:PORT/v1.0`
    pub fn base_url(&self) -> String {
        self.inner.base_url()
    }

    /// `http://127.0.0.1:PORT` (token endpoint: `{login_url}/{tenant}/oauth2/v2.0/token`).
    pub fn login_url(&self) -> String {
        self.inner.login_url()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The GUID user id of a mailbox (UPN case-insensitive).
    pub fn user_id(&self, mailbox: &str) -> Option<String> {
        let st = self.inner.lock();
        st.mailbox_index(mailbox)
            .map(|i| st.mailboxes[i].id.clone())
    }

    /// Stores a message in the mailbox's Inbox and sends "created"
    /// notifications to every live subscription on it.
    pub async fn deliver(
        &self,
        mailbox: &str,
        raw: Vec<u8>,
        opts: DeliverOptions,
    ) -> DeliveryReport {
        notify::deliver(&self.inner, mailbox, raw, opts).await
    }

    /// Stores all messages first, then sends their notifications with
    /// `concurrency` POSTs in flight.
    pub async fn deliver_burst(
        &self,
        mailbox: &str,
        messages: Vec<Vec<u8>>,
        concurrency: usize,
        opts: DeliverOptions,
    ) -> BurstReport {
        notify::deliver_burst(&self.inner, mailbox, messages, concurrency, opts).await
    }

    /// Deletes a message (it shows up as `@removed` in delta). False if unknown.
    pub fn delete_message(&self, mailbox: &str, message_id: &str) -> bool {
        let mut st = self.inner.lock();
        match st.mailbox_index(mailbox) {
            Some(i) => mail::remove_message(&mut st.mailboxes[i], message_id),
            None => false,
        }
    }

    /// Ids of the messages currently in a mailbox, in delivery order.
    pub fn message_ids(&self, mailbox: &str) -> Vec<String> {
        let st = self.inner.lock();
        let Some(i) = st.mailbox_index(mailbox) else {
            return Vec::new();
        };
        let mut msgs: Vec<_> = st.mailboxes[i].messages.values().collect();
        msgs.sort_by_key(|m| (m.received, m.changed_seq));
        msgs.into_iter().map(|m| m.id.clone()).collect()
    }

    pub fn message_state(&self, mailbox: &str, message_id: &str) -> Option<MessageState> {
        let st = self.inner.lock();
        let i = st.mailbox_index(mailbox)?;
        st.mailboxes[i].messages.get(message_id).map(mail::state_of)
    }

    /// Live (unexpired) subscriptions.
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        let mut st = self.inner.lock();
        st.prune_subscriptions(chrono::Utc::now());
        st.subscriptions.iter().map(subscriptions::view).collect()
    }

    /// The next `requests` Graph API requests answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle(&self, requests: usize, retry_after_secs: u64) {
        self.inner.lock().throttle = (requests, retry_after_secs);
    }

    /// While paused, deliveries store messages but send no notifications.
    pub fn set_notifications_paused(&self, paused: bool) {
        self.inner.lock().paused = paused;
    }

    /// POSTs a lifecycle notification; returns our server's status (None if
    /// the subscription is unknown or the POST failed).
    pub async fn lifecycle(&self, subscription_id: &str, event: LifecycleEvent) -> Option<u16> {
        notify::lifecycle(&self.inner, subscription_id, event).await
    }

    /// Every delta and skip token issued so far now answers 410 Gone.
    pub fn expire_delta_tokens(&self) {
        self.inner.lock().delta_tokens.clear();
    }

    pub fn stats(&self) -> SimStats {
        self.inner.lock().stats.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    pub fn chats(&self) -> Vec<ChatView> {
        self.inner.lock().chats.iter().map(chats::view).collect()
    }

    /// Clears the stats and the request log (not mailboxes, subscriptions or tokens).
    pub fn reset_stats(&self) {
        let mut st = self.inner.lock();
        st.stats = SimStats::default();
        st.requests.clear();
    }
}
