//! Outbound webhooks: the validation handshake, change notifications and
//! lifecycle notifications.
//!
//! Real Graph retries a failed or slow notification with exponential
//! back-off for up to 4 hours. The simulator sends each POST once and drops
//! it on failure, so tests exercise the client's catch-up path (delta)
//! instead of relying on redelivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use rand::seq::SliceRandom as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::state::{graph_time_precise, Inner, State};
use crate::{mail, BurstReport, DeliverOptions, DeliveryReport, LifecycleEvent, PostOutcome};

/// Graph gives the endpoint 10 s to answer the validation request.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Graph expects a notification to be acknowledged within 3 s.
const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(3);

/// Sent instead of the subscription's clientState for `bad_client_state`.
const WRONG_CLIENT_STATE: &str = "sim-wrong-client-state";

/// POSTs `validationToken=<token>` to the endpoint and checks the reply is
/// `200`, `text/plain`, with the decoded token as the whole body.
pub(crate) async fn validate_endpoint(inner: &Arc<Inner>, url: &str) -> Result<(), String> {
    // Same wording as Graph's token: spaces and colons make a client that
    // echoes the still-encoded value fail, as it would against Graph.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let mut u = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    // Appends to (and keeps) any query the notificationUrl already has.
    u.query_pairs_mut().append_pair("validationToken", &token);
    inner.lock().stats.validations_sent += 1;
    let resp = inner
        .http
        .post(u)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("validation request failed: {e}"))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if status.as_u16() != 200 {
        return Err(format!("validation answered {status}"));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!(
            "validation answered Content-Type '{content_type}', expected text/plain"
        ));
    }
    if body.as_ref() != token.as_bytes() {
        return Err(format!(
            "validation body '{}' is not the decoded token",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

struct Job {
    url: String,
    body: Value,
    items: u64,
}

/// Builds the notification POSTs for newly created messages, one list of
/// items per (subscription, chunk of `items_per_post` messages).
fn build_jobs(
    inner: &Inner,
    st: &mut State,
    idx: usize,
    ids: &[String],
    opts: &DeliverOptions,
) -> Vec<Job> {
    st.prune_subscriptions(chrono::Utc::now());
    let mb = &st.mailboxes[idx];
    let per_post = opts.items_per_post.max(1);
    let mut rng = rand::rng();
    let mut jobs = Vec::new();
    // Both Inbox and all-messages subscriptions cover an Inbox delivery.
    for sub in st
        .subscriptions
        .iter()
        .filter(|s| s.mailbox == idx && s.has_change_type("created"))
    {
        for chunk in ids.chunks(per_post) {
            let mut items: Vec<Value> = chunk
                .iter()
                .filter_map(|id| mb.messages.get(id))
                .map(|m| {
                    let resource = format!("Users/{}/Messages/{}", mb.id, m.id);
                    let client_state = if opts.bad_client_state {
                        Some(WRONG_CLIENT_STATE.to_string())
                    } else {
                        sub.client_state.clone()
                    };
                    json!({
                        "id": uuid::Uuid::new_v4().to_string(),
                        "subscriptionId": sub.id,
                        "subscriptionExpirationDateTime": graph_time_precise(sub.expiration),
                        "changeType": "created",
                        "resource": resource,
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Message",
                            "@odata.id": resource,
                            "@odata.etag": m.etag(),
                            "id": m.id,
                        },
                        "clientState": client_state,
                        "tenantId": inner.config.tenant_id,
                    })
                })
                .collect();
            if items.is_empty() {
                continue;
            }
            if opts.out_of_order {
                items.shuffle(&mut rng);
            }
            let job = Job {
                url: sub.notification_url.clone(),
                items: items.len() as u64,
                body: json!({ "value": items }),
            };
            if opts.duplicate {
                jobs.push(Job {
                    url: job.url.clone(),
                    body: job.body.clone(),
                    items: job.items,
                });
            }
            jobs.push(job);
        }
    }
    if opts.out_of_order {
        jobs.shuffle(&mut rng);
    }
    jobs
}

/// One JSON POST with the 3 s acknowledgement window; `elapsed` is the time
/// until the response head arrived.
async fn post_json(inner: &Inner, url: &str, body: &Value) -> PostOutcome {
    let started = Instant::now();
    let result = inner
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body.to_string())
        .timeout(NOTIFICATION_TIMEOUT)
        .send()
        .await;
    let elapsed = started.elapsed();
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Drain the body so the pooled connection can be reused.
            let _ = resp.bytes().await;
            PostOutcome {
                status: Some(status),
                elapsed,
                error: None,
            }
        }
        Err(e) => PostOutcome {
            status: None,
            elapsed,
            error: Some(if e.is_timeout() {
                format!("no answer within {} s: {e}", NOTIFICATION_TIMEOUT.as_secs())
            } else {
                e.to_string()
            }),
        },
    }
}

fn count_jobs(inner: &Inner, jobs: &[Job]) {
    let mut st = inner.lock();
    st.stats.notifications_sent += jobs.len() as u64;
    st.stats.notification_items_sent += jobs.iter().map(|j| j.items).sum::<u64>();
}

/// Stores the messages, then builds their notification jobs (none while
/// paused: Graph drops notifications it could not deliver during an outage).
fn store_and_plan(
    inner: &Inner,
    mailbox: &str,
    raws: Vec<Vec<u8>>,
    opts: &DeliverOptions,
) -> Option<(Vec<String>, Vec<Job>)> {
    let mut st = inner.lock();
    let Some(idx) = st.mailbox_index(mailbox) else {
        tracing::warn!(mailbox, "deliver to an unknown mailbox ignored");
        return None;
    };
    let ids: Vec<String> = raws
        .into_iter()
        .map(|raw| mail::store_message(&mut st.mailboxes[idx], raw))
        .collect();
    let jobs = if st.paused {
        Vec::new()
    } else {
        build_jobs(inner, &mut st, idx, &ids, opts)
    };
    Some((ids, jobs))
}

pub(crate) async fn deliver(
    inner: &Arc<Inner>,
    mailbox: &str,
    raw: Vec<u8>,
    opts: DeliverOptions,
) -> DeliveryReport {
    let Some((ids, jobs)) = store_and_plan(inner, mailbox, vec![raw], &opts) else {
        return DeliveryReport {
            message_id: String::new(),
            posts: Vec::new(),
        };
    };
    count_jobs(inner, &jobs);
    let mut posts = Vec::with_capacity(jobs.len());
    for job in &jobs {
        posts.push(post_json(inner, &job.url, &job.body).await);
    }
    DeliveryReport {
        message_id: ids.into_iter().next().unwrap_or_default(),
        posts,
    }
}

pub(crate) async fn deliver_burst(
    inner: &Arc<Inner>,
    mailbox: &str,
    messages: Vec<Vec<u8>>,
    concurrency: usize,
    opts: DeliverOptions,
) -> BurstReport {
    let Some((ids, jobs)) = store_and_plan(inner, mailbox, messages, &opts) else {
        return BurstReport {
            message_ids: Vec::new(),
            posts: Vec::new(),
        };
    };
    count_jobs(inner, &jobs);
    let n = jobs.len();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        // Taking the permit before spawning caps the POSTs in flight.
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let inner = inner.clone();
        set.spawn(async move {
            let _permit = permit;
            (i, post_json(&inner, &job.url, &job.body).await)
        });
    }
    let mut outcomes: Vec<Option<PostOutcome>> = vec![None; n];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, outcome)) => outcomes[i] = Some(outcome),
            Err(e) => tracing::error!(error = %e, "notification task failed"),
        }
    }
    let posts = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| PostOutcome {
                status: None,
                elapsed: Duration::ZERO,
                error: Some("notification task did not complete".into()),
            })
        })
        .collect();
    BurstReport {
        message_ids: ids,
        posts,
    }
}

pub(crate) async fn lifecycle(
    inner: &Arc<Inner>,
    subscription_id: &str,
    event: LifecycleEvent,
) -> Option<u16> {
    let (url, body) = {
        let mut st = inner.lock();
        let sub = st.live_subscription(subscription_id)?;
        match event {
            LifecycleEvent::ReauthorizationRequired => sub.reauthorization_required = true,
            LifecycleEvent::Missed | LifecycleEvent::SubscriptionRemoved => {}
        }
        let sub = sub.clone();
        if event == LifecycleEvent::SubscriptionRemoved {
            // Graph has already removed the subscription when it says so.
            st.subscriptions.retain(|s| s.id != sub.id);
        }
        st.stats.lifecycle_notifications_sent += 1;
        let url = sub
            .lifecycle_url
            .clone()
            .unwrap_or_else(|| sub.notification_url.clone());
        let body = json!({"value": [{
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": graph_time_precise(sub.expiration),
            "tenantId": inner.config.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event.as_str(),
        }]});
        (url, body)
    };
    post_json(inner, &url, &body).await.status
}
