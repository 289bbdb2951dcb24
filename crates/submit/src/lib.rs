//! Downstream submission: every processed message's result is POSTed as
//! JSON to each configured endpoint, signed with HMAC-SHA256, from the
//! durable outbox the store fills in the transaction that records the
//! result. Failures retry with exponential backoff and jitter; after the
//! limit (or on a refusal retrying cannot fix) the delivery is dead,
//! counted and listed, never silently dropped.
//!
//! The signature header follows the widely used timestamped scheme:
//! `X-Mailroom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, so a receiver can reject replays of old deliveries.
//! `X-Mailroom-Delivery` is the same on every retry of one result: the
//! receiver's idempotency key.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use mailroom_app::{now_ms, query, run_leased};
use mailroom_domain::{MessageId, RetryPolicy};
use mailroom_security::Secret;
use mailroom_store::{LeasedSubmission, Store, SubmissionOutcome};
use mailroom_telemetry::names;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub const SIGNATURE_HEADER: &str = "X-Mailroom-Signature";
pub const DELIVERY_HEADER: &str = "X-Mailroom-Delivery";
pub const EVENT_HEADER: &str = "X-Mailroom-Event";
pub const EVENT: &str = "message.processed";

/// Errors of the submitter.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("configuration: {0}")]
    Config(String),
}

/// Where and how results are delivered.
#[derive(Debug, Clone)]
pub struct SubmitSettings {
    /// Endpoint URLs; every processed message goes to each.
    pub endpoints: Vec<String>,
    /// The HMAC key.
    pub secret: Secret<String>,
    /// Attempts per delivery and their backoff.
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

/// `t=<unix>,v1=<hex>` over `<t>.<body>`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A lease long enough for one request and its timeout.
const LEASE: Duration = Duration::from_secs(120);
/// How often the outbox is looked at when idle.
const POLL: Duration = Duration::from_millis(200);

pub struct Submitter {
    http: reqwest::Client,
    store: Store,
    settings: SubmitSettings,
}

enum Attempt {
    Delivered(u16),
    /// Worth retrying (timeout, network, 408, 429, 5xx).
    Transient {
        status: Option<u16>,
        error: String,
    },
    /// Retrying cannot help (another 4xx, the message is gone).
    Refused {
        status: Option<u16>,
        error: String,
    },
}

impl Submitter {
    pub fn new(store: Store, settings: SubmitSettings) -> Result<Self, SubmitError> {
        if settings.endpoints.is_empty() {
            return Err(SubmitError::Config("no endpoint".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SubmitError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            store,
            settings,
        })
    }

    /// Delivers until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let token = uuid::Uuid::now_v7().to_string();
        let lease = |room: usize| {
            let (this, token) = (Arc::clone(&self), token.clone());
            async move {
                let s = &this.settings;
                this.store
                    .lease_submissions(
                        &s.endpoints,
                        &token,
                        room as u32,
                        now_ms(),
                        LEASE.as_millis() as i64,
                        s.retry.max_attempts,
                    )
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "cannot lease submissions");
                        Vec::new()
                    })
            }
        };
        let work = |lease: LeasedSubmission| {
            let (this, token) = (Arc::clone(&self), token.clone());
            async move { this.deliver(lease, &token).await }
        };
        run_leased(self.settings.concurrency, lease, work, None, POLL, stop).await;
    }

    async fn deliver(&self, lease: LeasedSubmission, token: &str) {
        let attempt = self.attempt(&lease).await;
        let now = now_ms();
        let jitter = (uuid::Uuid::now_v7().as_u128() % 1000) as f64 / 1000.0;
        let outcome = match &attempt {
            Attempt::Delivered(status) => SubmissionOutcome::Delivered { status: *status },
            Attempt::Transient { status, error } => {
                match self.settings.retry.next_delay(lease.attempts, jitter) {
                    Some(delay) => SubmissionOutcome::Retry {
                        at_ms: now + delay.as_millis() as i64,
                        status: *status,
                        error,
                    },
                    None => SubmissionOutcome::Dead {
                        status: *status,
                        error,
                    },
                }
            }
            Attempt::Refused { status, error } => SubmissionOutcome::Dead {
                status: *status,
                error,
            },
        };
        let label = match outcome {
            SubmissionOutcome::Delivered { .. } => "delivered",
            SubmissionOutcome::Retry { .. } => "retry",
            SubmissionOutcome::Dead { .. } => "dead",
        };
        metrics::counter!(names::API_SUBMISSIONS_TOTAL, "outcome" => label).increment(1);
        if let SubmissionOutcome::Dead { error, .. } = outcome {
            warn!(message_id = %lease.message_id, endpoint = %lease.endpoint, attempts = lease.attempts, error, "downstream submission dead");
        }
        if let Err(e) = self
            .store
            .settle_submission(&lease, token, outcome, now)
            .await
        {
            // The lease runs out and the delivery is tried again; the
            // receiver deduplicates on X-Mailroom-Delivery.
            warn!(error = %e, "cannot record a submission outcome");
        }
    }

    async fn attempt(&self, lease: &LeasedSubmission) -> Attempt {
        let Ok(id) = MessageId::parse(&lease.message_id) else {
            return Attempt::Refused {
                status: None,
                error: "the outbox names an invalid message id".into(),
            };
        };
        let record = match self.store.message(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return Attempt::Refused {
                    status: None,
                    error: "the message was deleted before delivery".into(),
                }
            }
            Err(e) => {
                return Attempt::Transient {
                    status: None,
                    error: e.to_string(),
                }
            }
        };
        let delivery = format!("{}:{}", lease.message_id, lease.created_at_ms);
        let body = payload(&record, &delivery);
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Refused {
                    status: None,
                    error: format!("cannot serialise the result: {e}"),
                }
            }
        };
        let now_seconds = now_ms() / 1000;
        let signed = signature(self.settings.secret.expose().as_bytes(), now_seconds, &body);
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post(&lease.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .header(DELIVERY_HEADER, &delivery)
            .header(EVENT_HEADER, EVENT)
            .body(body)
            .send()
            .await;
        metrics::histogram!(names::API_SUBMISSION_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                debug!(message_id = %lease.message_id, endpoint = %lease.endpoint, status, "submission answered");
                match status {
                    200..=299 => Attempt::Delivered(status),
                    408 | 429 | 500..=599 => Attempt::Transient {
                        status: Some(status),
                        error: format!("the endpoint answered {status}"),
                    },
                    _ => Attempt::Refused {
                        status: Some(status),
                        error: format!("the endpoint refused the submission with {status}"),
                    },
                }
            }
            Err(e) => Attempt::Transient {
                status: None,
                error: if e.is_timeout() {
                    "the endpoint did not answer in time".into()
                } else {
                    format!("cannot reach the endpoint: {e}")
                },
            },
        }
    }
}

/// The JSON delivered: the message's summary (as the REST API lists it)
/// and the processing results (today: the score report).
fn payload(record: &mailroom_store::MessageRecord, delivery: &str) -> Value {
    let score = record.view.as_ref().and_then(|v| v.score.as_ref());
    json!({
        "event": EVENT,
        "delivery_id": delivery,
        "message": query::summary_json(&record.summary),
        "score": score,
        "to": record.view.as_ref().map(|v| v.to.iter().filter_map(|a| a.address.clone()).collect::<Vec<_>>()),
        "attachments": record.view.as_ref().map(|v| v.attachments.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("key", "1.x"), computed independently with Python's hmac module.
        let s = signature(b"key", 1, b"x");
        assert_eq!(
            s,
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }
}
