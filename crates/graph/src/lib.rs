//! Microsoft 365 mailbox source over Microsoft Graph.
//!
//! - `client`: the HTTP client (token, retries, throttling, per-mailbox
//!   concurrency, metrics); `api`: the operations and their documents.
//! - `intake`: what the webhook does with a notification (clientState
//!   check, durable queue, dedup); `routes`: `/webhook` and
//!   `/api/v1/subscriptions`.
//! - `manager`: the one subscription owner across replicas (lease,
//!   reconcile, create, renew, lifecycle events, delta catch-up).
//! - `fetch`: every replica's fetchers (MIME → the one ingest path).
//!
//! Invariant: nothing is acknowledged to Graph before it is committed, and
//! a message reaches the pipeline once however often it is notified.

mod api;
mod client;
mod error;
mod fetch;
mod intake;
mod manager;
mod routes;
mod settings;

use std::sync::Arc;

use mailroom_app::IngestService;
use mailroom_domain::RetryPolicy;
use mailroom_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use api::{
    graph_time, inbox_resource, BatchRequest, BatchResponse, DeltaItem, DeltaPage, Notification,
    NotificationCollection, Subscription, MAX_BATCH,
};
pub use client::{AuthStatus, Call, GraphClient};
pub use error::GraphError;
pub use intake::{client_state_hash, IntakeOutcome, WebhookIntake};
pub use manager::{SubscriptionManager, INBOX, OWNER_LEASE};
pub use routes::{router, LIFECYCLE_PATH, SUBSCRIPTIONS_PATH, WEBHOOK_PATH};
pub use settings::{CertificateCredential, Credential, GraphSettings};

/// The running source: its client, intake and background tasks.
pub struct GraphSource {
    pub(crate) client: GraphClient,
    pub(crate) store: Store,
    pub(crate) intake: Arc<WebhookIntake>,
    pub(crate) holder: String,
    manager: Arc<SubscriptionManager>,
}

impl std::fmt::Debug for GraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSource")
            .field("holder", &self.holder)
            .finish()
    }
}

/// The background tasks, to await on shutdown.
pub struct GraphTasks {
    stop: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl GraphTasks {
    /// Stops the owner loop (releasing its lease) and the fetchers.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

impl GraphSource {
    /// Builds the source. `holder` names this process in the owner lease
    /// (unique per process: host, pid and a random part).
    pub fn new(settings: GraphSettings, store: Store, holder: String) -> Result<Self, GraphError> {
        if settings.mailboxes.is_empty() {
            return Err(GraphError::Config("graph.mailboxes is empty".into()));
        }
        let client = GraphClient::new(settings)?;
        let intake = Arc::new(WebhookIntake::new(store.clone()));
        let manager = Arc::new(SubscriptionManager {
            client: client.clone(),
            store: store.clone(),
            intake: Arc::clone(&intake),
            holder: holder.clone(),
        });
        Ok(Self {
            client,
            store,
            intake,
            holder,
            manager,
        })
    }

    pub fn client(&self) -> &GraphClient {
        &self.client
    }

    /// Starts the owner loop and the fetchers. Start it once the webhook
    /// is being served: creating a subscription makes Graph call it.
    pub fn start(&self, ingest: IngestService, retry: RetryPolicy) -> GraphTasks {
        let stop = CancellationToken::new();
        let fetcher = Arc::new(fetch::Fetcher {
            client: self.client.clone(),
            store: self.store.clone(),
            ingest,
            wake: Arc::clone(&self.intake.fetch_wake),
            retry,
        });
        let handles = vec![
            tokio::spawn(Arc::clone(&self.manager).run(stop.clone())),
            tokio::spawn(fetcher.run(stop.clone())),
        ];
        GraphTasks { stop, handles }
    }
}
