//! IMAP mailbox source: one task per configured account keeps a session
//! open, waits with IDLE where the server offers it (polls otherwise),
//! fetches every message whose UID is above the last one ingested, and
//! hands its bytes to the one ingest path. The (UIDVALIDITY, last UID)
//! pair is stored after each message, so a restart neither skips nor
//! refetches; a crash between the ingest commit and that store refetches
//! one message, which ingest recognises by its content hash. Connections
//! that fail are retried with exponential backoff and jitter.

mod account;
mod connect;

use std::{sync::Arc, time::Duration};

use mailroom_app::{now_ms, IngestError, IngestService, Source};
use mailroom_store::Store;
use mailroom_telemetry::names;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use account::{Account, Security};

use connect::{connect, ImapSession};

/// Errors of the IMAP source.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("the server refused the login of {user}: {reason}")]
    Login { user: String, reason: String },
    #[error("IMAP: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] mailroom_store::StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        ImapError::Protocol(e.to_string())
    }
}

/// How the accounts are watched.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub accounts: Vec<Account>,
    /// Wait between checks when the server has no IDLE.
    pub poll_interval: Duration,
    /// Longest IDLE before it is renewed (RFC 2177: under 29 minutes).
    pub idle_timeout: Duration,
    /// Extra CA certificates (PEM) trusted besides the public roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// UIDs fetched per FETCH command.
const FETCH_BATCH: usize = 50;
/// Longest wait for the answer to a command outside IDLE.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts one task per account; they run until `stop`.
pub fn start(
    settings: ImapSettings,
    store: Store,
    ingest: IngestService,
    stop: CancellationToken,
) -> Result<JoinSet<()>, ImapError> {
    let tls = Arc::new(connect::tls_config(settings.ca_file.as_deref())?);
    let mut tasks = JoinSet::new();
    for account in settings.accounts.clone() {
        let watcher = Watcher {
            account,
            store: store.clone(),
            ingest: ingest.clone(),
            tls: Arc::clone(&tls),
            poll_interval: settings.poll_interval,
            idle_timeout: settings.idle_timeout,
        };
        tasks.spawn(watcher.run(stop.clone()));
    }
    Ok(tasks)
}

struct Watcher {
    account: Account,
    store: Store,
    ingest: IngestService,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    poll_interval: Duration,
    idle_timeout: Duration,
}

enum Waited {
    Changed,
    Stopped,
}

impl Watcher {
    async fn run(self, stop: CancellationToken) {
        let key = self.account.key();
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.session(&stop, &mut failures) => r,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    metrics::counter!(names::IMAP_ERRORS_TOTAL, "account" => key.clone())
                        .increment(1);
                    warn!(account = %key, error = %e, retry_in_ms = delay.as_millis() as u64, "IMAP session failed; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection: catch up, then wait and catch up until stopped.
    async fn session(&self, stop: &CancellationToken, failures: &mut u32) -> Result<(), ImapError> {
        let key = self.account.key();
        let mut session = connect(&self.account, &self.tls).await?;
        let idle = session.capabilities().await?.has_str("IDLE");
        let mailbox = session.select(&self.account.mailbox).await?;
        let validity = mailbox
            .uid_validity
            .ok_or_else(|| ImapError::Protocol("SELECT gave no UIDVALIDITY".into()))?;
        info!(account = %key, idle, uid_validity = validity, exists = mailbox.exists, "IMAP mailbox selected");
        *failures = 0;
        let mut last_uid = match self.store.imap_state(&key).await? {
            Some((stored, last)) if stored == validity => last,
            Some((stored, _)) => {
                warn!(account = %key, previous = stored, now = validity, "UIDVALIDITY changed: reading the mailbox again");
                0
            }
            None => 0,
        };
        self.store
            .set_imap_state(&key, validity, last_uid, now_ms())
            .await?;
        loop {
            last_uid = self.fetch_new(&mut session, validity, last_uid).await?;
            let waited;
            (session, waited) = if idle {
                wait_idle(session, self.idle_timeout, stop).await?
            } else {
                tokio::select! {
                    _ = stop.cancelled() => (session, Waited::Stopped),
                    _ = tokio::time::sleep(self.poll_interval) => {
                        // NOOP lets the server report new messages.
                        bounded(session.noop()).await??;
                        (session, Waited::Changed)
                    }
                }
            };
            if let Waited::Stopped = waited {
                let _ = session.logout().await;
                return Ok(());
            }
        }
    }

    /// Fetches and ingests every message above `last_uid`, in UID order;
    /// returns the new last UID.
    async fn fetch_new(
        &self,
        session: &mut ImapSession,
        validity: u32,
        mut last_uid: u32,
    ) -> Result<u32, ImapError> {
        use futures::TryStreamExt;
        let key = self.account.key();
        // `n:*` always matches the newest message, even below n.
        let mut uids: Vec<u32> =
            bounded(session.uid_search(format!("UID {}:*", last_uid.saturating_add(1))))
                .await??
                .into_iter()
                .filter(|u| *u > last_uid)
                .collect();
        uids.sort_unstable();
        for chunk in uids.chunks(FETCH_BATCH) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let fetch = async {
                session
                    .uid_fetch(&set, "(UID BODY.PEEK[])")
                    .await?
                    .try_filter_map(|f| async move {
                        Ok(f.uid
                            .map(|uid| (uid, f.body().map(<[u8]>::to_vec).unwrap_or_default())))
                    })
                    .try_collect::<Vec<_>>()
                    .await
            };
            let mut fetched: Vec<(u32, Vec<u8>)> = bounded(fetch).await??;
            fetched.sort_by_key(|(uid, _)| *uid);
            for (uid, raw) in fetched {
                self.ingest_one(&key, uid, raw).await?;
                last_uid = uid;
                self.store
                    .set_imap_state(&key, validity, last_uid, now_ms())
                    .await?;
            }
        }
        Ok(last_uid)
    }

    async fn ingest_one(&self, key: &str, uid: u32, raw: Vec<u8>) -> Result<(), ImapError> {
        let _reservation = self.ingest.reserve(raw.len()).await?;
        let outcome = match self.ingest.ingest(raw, Source::Imap).await {
            Ok(receipt) if receipt.duplicate => "duplicate",
            Ok(_) => "ingested",
            // Not storable (too large, not a message): skipped, logged,
            // counted; the mailbox moves on.
            Err(e @ (IngestError::TooLarge { .. } | IngestError::Rejected(_))) => {
                warn!(account = %key, uid, error = %e, "IMAP message skipped");
                "rejected"
            }
            Err(e) => return Err(e.into()),
        };
        metrics::counter!(names::IMAP_MESSAGES_TOTAL, "outcome" => outcome).increment(1);
        Ok(())
    }
}

/// IDLE until the server reports a change, `timeout` passes, or `stop`.
/// A connection that ends during IDLE is an error (the caller reconnects);
/// leaving IDLE is bounded in time, so a dead peer cannot hang the source.
async fn wait_idle(
    session: ImapSession,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<(ImapSession, Waited), ImapError> {
    use async_imap::extensions::idle::IdleResponse;
    let mut handle = session.idle();
    handle.init().await?;
    let (wait, interrupt) = handle.wait_with_timeout(timeout);
    let waited = tokio::select! {
        _ = stop.cancelled() => {
            drop(interrupt);
            Waited::Stopped
        }
        r = wait => match r? {
            IdleResponse::NewData(_) | IdleResponse::Timeout => Waited::Changed,
            // The stream ended without our asking: the server went away.
            IdleResponse::ManualInterrupt => {
                return Err(ImapError::Protocol("the server closed the connection during IDLE".into()))
            }
        },
    };
    let session = tokio::time::timeout(COMMAND_TIMEOUT, handle.done())
        .await
        .map_err(|_| ImapError::Protocol("no answer to DONE".into()))??;
    Ok((session, waited))
}

/// `fut`, or an error after [`COMMAND_TIMEOUT`] (a peer that vanished
/// without closing the connection).
async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> Result<T, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, fut)
        .await
        .map_err(|_| {
            ImapError::Protocol(format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()))
        })
}

/// 1 s doubled per failure, at most 5 minutes, with jitter.
fn backoff(failures: u32) -> Duration {
    let ceiling = 1000u64
        .saturating_mul(1 << failures.min(9))
        .min(MAX_BACKOFF.as_millis() as u64);
    let jitter = (uuid::Uuid::now_v7().as_u128() % 1000) as u64;
    Duration::from_millis(ceiling / 2 + ceiling / 2 * jitter / 1000)
}
