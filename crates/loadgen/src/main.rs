//! Benchmark driver for mailroom's ingest pipeline.
//!
//! Spawns the release `mailroom serve` on a fresh database and measures:
//! time from spawn to `/health/ready` = 200, RSS at idle, messages accepted
//! per second over HTTP (unique ~10 KB messages, N concurrent clients),
//! end-to-end processed per second (first request sent to last message
//! processed), request latency percentiles and peak RSS (VmHWM).
//! Loopback only; every loop is bounded in count and time.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Measure mailroom ingest and processing throughput, RSS and start-up time")]
struct Args {
    /// The mailroom binary (build with --release first).
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// Database URL for the server under test; must be empty/fresh.
    #[arg(long)]
    database_url: String,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Approximate size of each message, bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Start-up measurements to take (each a fresh start on the same database).
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn spawn(args: &Args) -> anyhow::Result<(Self, Duration)> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let started = Instant::now();
        let child = Command::new(&args.bin)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", &args.database_url)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", args.bin))?;
        let base = format!("http://127.0.0.1:{port}");
        let mut server = Server { child, base };
        let ready = server.wait_ready(started)?;
        Ok((server, ready))
    }

    /// Polls /health/ready over a raw blocking socket every 0.5 ms.
    fn wait_ready(&mut self, started: Instant) -> anyhow::Result<Duration> {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.write_all(
                    b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                let mut buf = [0u8; 16];
                if s.read(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                    return Ok(started.elapsed());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited during start-up: {status}");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        bail!("server not ready after 30 s")
    }

    fn rss_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0)
    }

    /// User + system CPU seconds the server has used.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        bail!("server ignored SIGTERM for 30 s")
    }
}

/// utime + stime of a process from /proc/PID/stat, in seconds (USER_HZ = 100).
fn cpu_seconds_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after_name = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A plausible business message of about `size` bytes; `n` makes it unique.
fn message(n: usize, size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "invoice", "meeting", "project", "delivery", "customer", "schedule", "review", "contract",
        "payment", "support", "update", "report", "quarter", "budget", "team", "request",
    ];
    let mut m = format!(
        "From: Sender {n} <sender{n}@example.com>\r\nTo: inbox@example.org\r\nSubject: Load test message {n}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <load-{n}-{}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\n",
        std::process::id()
    );
    let mut i = n;
    while m.len() < size.saturating_sub(64) {
        for _ in 0..12 {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            m.push_str(WORDS[i >> 60]);
            m.push(' ');
        }
        m.push_str("\r\n");
    }
    m.push_str("See https://example.com/orders/");
    m.push_str(&n.to_string());
    m.push_str("\r\n");
    m.into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn processed_today(client: &reqwest::Client, base: &str) -> anyhow::Result<i64> {
    let v: serde_json::Value = client
        .get(format!("{base}/process/status"))
        .send()
        .await?
        .json()
        .await?;
    v["emails_processed_today"]
        .as_i64()
        .context("emails_processed_today missing")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    // Start-up: the first start creates and migrates the database; the
    // following ones measure a start on an existing database.
    let mut ready_ms = Vec::new();
    for _ in 0..args.startup_runs.max(1) - 1 {
        let (server, ready) = Server::spawn(&args)?;
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        server.stop()?;
    }
    let (server, ready) = Server::spawn(&args)?;
    ready_ms.push(ready.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kib = server.rss_kib("VmRSS:");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let baseline = processed_today(&client, &server.base).await?;
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..args.messages).map(|n| message(n, args.size)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let (server_cpu_before, own_cpu_before) = (server.cpu_seconds(), cpu_seconds_of("self"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, bodies, next, url) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            format!("{}/api/v1/messages", server.base),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let t = Instant::now();
                match client
                    .post(&url)
                    .header("content-type", "message/rfc822")
                    .body(bodies[i].clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let accept_secs = started.elapsed().as_secs_f64();
    let (server_cpu_ingest, own_cpu_ingest) = (
        server.cpu_seconds() - server_cpu_before,
        cpu_seconds_of("self") - own_cpu_before,
    );
    let accepted = latencies.len();
    let rss_after_ingest_kib = server.rss_kib("VmRSS:");

    let deadline = Instant::now() + Duration::from_secs(600);
    let target = baseline + accepted as i64;
    loop {
        if processed_today(&client, &server.base).await? >= target {
            break;
        }
        if Instant::now() > deadline {
            bail!("processing did not finish within 10 minutes");
        }
        // Each poll costs the server a count over today's rows; 100 ms keeps
        // the probe's load negligible at a resolution of 1% of a 10 s run.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_to_end_secs = started.elapsed().as_secs_f64();
    let peak_rss_kib = server.rss_kib("VmHWM:");
    let server_cpu_total = server.cpu_seconds() - server_cpu_before;
    server.stop()?;

    latencies.sort();
    let first_start_ms = ready_ms.first().copied();
    ready_ms.sort_by(f64::total_cmp);
    let result = json!({
        "label": args.label,
        "messages": args.messages,
        "message_bytes": bodies.first().map(Vec::len),
        "concurrency": args.concurrency,
        "accepted": accepted,
        "errors": errors,
        "accepted_per_second": accepted as f64 / accept_secs,
        "ingest_latency_ms": {"p50": percentile(&latencies, 0.50), "p95": percentile(&latencies, 0.95), "p99": percentile(&latencies, 0.99)},
        "processed_per_second_end_to_end": accepted as f64 / end_to_end_secs,
        "ready_ms": {"first_start_with_migrations": first_start_ms, "median": ready_ms[ready_ms.len() / 2], "all": ready_ms},
        "cpu_seconds": {
            "server_during_ingest": server_cpu_ingest,
            "load_generator_during_ingest": own_cpu_ingest,
            "server_total": server_cpu_total,
            "server_microseconds_per_message": server_cpu_total * 1e6 / accepted.max(1) as f64,
        },
        "rss_mib": {"idle": idle_rss_kib as f64 / 1024.0, "after_ingest": rss_after_ingest_kib as f64 / 1024.0, "peak": peak_rss_kib as f64 / 1024.0},
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
