//! `graph-load`: the release server pointed at the Graph simulator. A
//! burst of notifications (all messages stored in the simulated mailbox
//! first, then their notifications POSTed with `concurrency` in flight)
//! measures the webhook's acknowledgements; the queue must then end with
//! every message processed exactly once. A paced phase measures each
//! message's time from its notification to `processed`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailroom_graph_sim::{DeliverOptions, GraphSim, SimConfig};
use serde_json::{json, Value};

use crate::{client_with_key, free_port, message, percentile, processed_today, Server, BENCH_KEY};

const MAILBOX: &str = "bench@example.test";

#[derive(Debug, clap::Args)]
pub struct GraphLoadArgs {
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// A fresh database URL.
    #[arg(long)]
    database_url: String,
    /// Notifications in the burst (one message each).
    #[arg(long, default_value_t = 5000)]
    notifications: usize,
    /// Notification POSTs in flight during the burst.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages delivered one by one for the latency phase.
    #[arg(long, default_value_t = 300)]
    latency_messages: usize,
    /// Their rate, per second.
    #[arg(long, default_value_t = 50)]
    latency_rate: u64,
}

pub async fn run(args: GraphLoadArgs) -> anyhow::Result<()> {
    let sim = GraphSim::start(SimConfig {
        mailboxes: vec![MAILBOX.into()],
        ..SimConfig::default()
    })
    .await?;
    let port = free_port()?;
    let webhook = format!("http://127.0.0.1:{port}/webhook");
    let (base_url, login_url) = (sim.base_url(), sim.login_url());
    let (server, _) = Server::spawn_at(
        &args.bin,
        port,
        &args.database_url,
        &[],
        &[
            ("MAILROOM_API_KEYS", BENCH_KEY),
            ("MAILROOM_RATE_LIMIT_KEY_PER_SECOND", "1000000"),
            ("MAILROOM_RATE_LIMIT_KEY_BURST", "10000000"),
            ("MAILROOM_GRAPH_TENANT_ID", &sim.config().tenant_id),
            ("MAILROOM_GRAPH_CLIENT_ID", &sim.config().client_id),
            ("MAILROOM_GRAPH_CLIENT_SECRET", &sim.config().client_secret),
            ("MAILROOM_GRAPH_MAILBOXES", MAILBOX),
            ("MAILROOM_GRAPH_NOTIFICATION_URL", &webhook),
            ("MAILROOM_GRAPH_BASE_URL", &base_url),
            ("MAILROOM_GRAPH_LOGIN_URL", &login_url),
        ],
    )?;
    let client = client_with_key(BENCH_KEY, 8)?;
    let subscribed = Instant::now();
    while sim.subscriptions().is_empty() {
        if subscribed.elapsed() > Duration::from_secs(30) {
            bail!("no subscription after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The burst.
    let messages: Vec<Vec<u8>> = (0..args.notifications).map(|n| message(n, 4096)).collect();
    let started = Instant::now();
    let burst = sim
        .deliver_burst(
            MAILBOX,
            messages,
            args.concurrency,
            DeliverOptions::default(),
        )
        .await;
    let burst_seconds = started.elapsed().as_secs_f64();
    let mut acks: Vec<Duration> = burst.posts.iter().map(|p| p.elapsed).collect();
    acks.sort();
    let refused = burst.posts.iter().filter(|p| p.status != Some(202)).count();
    let processed = wait_processed(&client, &server.base, args.notifications as i64).await?;
    let drain_seconds = started.elapsed().as_secs_f64();
    let subscriptions: Value = client
        .get(format!("{}/api/v1/subscriptions", server.base))
        .send()
        .await?
        .json()
        .await?;

    // Paced messages: notification → processed.
    let mut sent_at_ms = Vec::with_capacity(args.latency_messages);
    let interval = Duration::from_micros(1_000_000 / args.latency_rate.max(1));
    let offset = args.notifications;
    let mut next = Instant::now();
    for i in 0..args.latency_messages {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        sent_at_ms.push(chrono::Utc::now().timestamp_millis());
        let sim = sim.clone();
        let raw = message(offset + i, 4096);
        tokio::spawn(async move { sim.deliver(MAILBOX, raw, DeliverOptions::default()).await });
    }
    let total = (args.notifications + args.latency_messages) as i64;
    wait_processed(&client, &server.base, total).await?;
    let latencies = notification_latencies(&client, &server.base, offset, &sent_at_ms).await?;
    let rss_kib = server.rss_kib("VmRSS:");
    let report = json!({
        "burst": {
            "notifications": args.notifications,
            "concurrency": args.concurrency,
            "acknowledged_per_second": burst.posts.len() as f64 / burst_seconds,
            "ack_p50_ms": percentile(&acks, 0.50),
            "ack_p99_ms": percentile(&acks, 0.99),
            "ack_max_ms": percentile(&acks, 1.0),
            "not_202": refused,
            "all_processed_seconds": drain_seconds,
            "processed": processed,
            "queue": subscriptions["notifications"],
        },
        "latency": {
            "messages": args.latency_messages,
            "rate_per_second": args.latency_rate,
            "notification_to_processed_p50_ms": percentile(&latencies, 0.50),
            "notification_to_processed_p99_ms": percentile(&latencies, 0.99),
        },
        "server_rss_kib": rss_kib,
        "simulator": sim.stats(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    server.stop()?;
    if refused > 0 || processed != args.notifications as i64 {
        bail!(
            "{refused} notifications not acknowledged, {processed} of {} processed",
            args.notifications
        );
    }
    Ok(())
}

/// Waits until `count` messages are processed today (at most 300 s).
async fn wait_processed(client: &reqwest::Client, base: &str, count: i64) -> anyhow::Result<i64> {
    let started = Instant::now();
    loop {
        let done = processed_today(client, base).await?;
        if done >= count {
            // Settle: anything processed twice would show up now.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return processed_today(client, base).await;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{done} of {count} processed after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// processed_at − the moment each paced message's notification was sent,
/// matched by the number in its subject.
async fn notification_latencies(
    client: &reqwest::Client,
    base: &str,
    offset: usize,
    sent_at_ms: &[i64],
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(sent_at_ms.len());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/messages?limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await?.json().await?;
        for m in page["items"].as_array().context("items")? {
            let n = m["subject"]
                .as_str()
                .and_then(|s| s.strip_prefix("Load test message "))
                .and_then(|n| n.parse::<usize>().ok());
            let Some(i) = n.and_then(|n| n.checked_sub(offset)) else {
                continue;
            };
            let processed = m["processed_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis());
            if let (Some(sent), Some(done)) = (sent_at_ms.get(i), processed) {
                latencies.push(Duration::from_millis((done - sent).max(0) as u64));
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    latencies.sort();
    Ok(latencies)
}
