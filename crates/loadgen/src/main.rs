//! Benchmark driver for mailroom.
//!
//! `ingest` (the default when no subcommand is given) spawns the release
//! `mailroom serve` on a fresh database and measures: time from spawn to
//! `/health/ready` = 200, RSS at idle, messages accepted per second over
//! HTTP (unique ~10 KB messages, N concurrent clients), end-to-end processed
//! per second (first request sent to last message processed), request
//! latency percentiles and peak RSS (VmHWM).
//!
//! `auth-overhead` measures what authentication and rate limiting cost on a
//! cheap authenticated GET: requests per second with both off
//! (`--insecure-no-auth`, no limiter), with API-key authentication and the
//! in-memory limiter, and with the Redis limiter; runs alternate so drift of
//! the machine hits every configuration alike.
//!
//! `score-load` offers `POST /api/v1/score` a fixed rate of requests (open
//! loop: each request is due at its own instant whether or not earlier ones
//! have been answered), cycling through the messages of a corpus directory,
//! and reports the rate achieved and latency measured from each request's
//! due time, so a stalled server cannot hide its queue (no coordinated
//! omission).
//!
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

mod graph_load;

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    about = "Measure mailroom: ingest throughput, RSS and start-up; auth and rate-limit overhead"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    ingest: Args,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Requests/s of a cheap authenticated GET with and without auth + rate limits.
    AuthOverhead(OverheadArgs),
    /// Latency of POST /api/v1/score at a fixed offered rate (open loop).
    ScoreLoad(ScoreLoadArgs),
    /// MCP over Streamable HTTP: tool calls/s and latency (closed loop), and
    /// the memory a legacy session holds.
    McpLoad(McpLoadArgs),
    /// Microsoft 365 source against the Graph simulator: webhook
    /// acknowledgements under a notification burst, exactly-once
    /// processing, notification-to-processed latency.
    GraphLoad(graph_load::GraphLoadArgs),
}

#[derive(Debug, clap::Args)]
struct McpLoadArgs {
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// A fresh database URL.
    #[arg(long)]
    database_url: String,
    /// Messages stored before the calls (listed and fetched by the tools).
    #[arg(long, default_value_t = 500)]
    messages: usize,
    /// Concurrent MCP clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load per workload (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Legacy (2025-11-25) sessions opened to measure their memory.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
}

#[derive(Debug, clap::Args)]
struct ScoreLoadArgs {
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// A fresh database URL (nothing is stored by scoring).
    #[arg(long)]
    database_url: String,
    /// Directory of messages (*.eml, recursive) sent in turn.
    #[arg(long)]
    corpus: std::path::PathBuf,
    /// Requests offered per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds of measured load (after one second of warm-up at the rate).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The model file the server scores with (score.model_path); a path that
    /// does not exist means the model compiled into the binary.
    #[arg(long)]
    model: Option<String>,
    /// Requests allowed in flight before the run counts the server as overloaded.
    #[arg(long, default_value_t = 2048)]
    max_in_flight: usize,
}

#[derive(Debug, clap::Args)]
struct OverheadArgs {
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// A fresh database URL (the runs share it; it holds one key).
    #[arg(long)]
    database_url: String,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load per run (after one second of warm-up).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Runs of each configuration, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Redis for the shared-limiter configuration (empty: skip it).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// The mailroom binary (build with --release first).
    #[arg(long, default_value = "target/release/mailroom")]
    bin: String,
    /// Database URL for the server under test; must be empty/fresh.
    #[arg(long)]
    database_url: Option<String>,
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

/// The key every benchmarked server is provisioned with (MAILROOM_API_KEYS).
const BENCH_KEY: &str = "bench-admin-key-0123456789abcdef0123456789abcdef";

/// A client that authenticates with `key`.
fn client_with_key(key: &str, pool: usize) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(pool)
        .build()?)
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Ingest runs: authenticated as usual, with limits far above the load
    /// (the benchmark measures the pipeline, not the limiter).
    fn spawn(args: &Args) -> anyhow::Result<(Self, Duration)> {
        let database_url = args
            .database_url
            .as_deref()
            .context("--database-url is required")?;
        Self::spawn_with(
            &args.bin,
            database_url,
            &[],
            &[
                ("MAILROOM_API_KEYS", BENCH_KEY),
                ("MAILROOM_RATE_LIMIT_KEY_PER_SECOND", "1000000"),
                ("MAILROOM_RATE_LIMIT_KEY_BURST", "10000000"),
            ],
        )
    }

    fn spawn_with(
        bin: &str,
        database_url: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Self, Duration)> {
        let port = free_port()?;
        Self::spawn_at(bin, port, database_url, flags, env)
    }

    fn spawn_at(
        bin: &str,
        port: u16,
        database_url: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Self, Duration)> {
        let started = Instant::now();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("DATABASE_URL", database_url)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| format!("spawning {bin}"))?;
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
    let cli = Cli::parse();
    match cli.command {
        Some(Mode::AuthOverhead(args)) => auth_overhead(args).await,
        Some(Mode::ScoreLoad(args)) => score_load(args).await,
        Some(Mode::McpLoad(args)) => mcp_load(args).await,
        Some(Mode::GraphLoad(args)) => graph_load::run(args).await,
        None => ingest(cli.ingest).await,
    }
}

/// Keeps `concurrency` clients busy on `url` for `seconds`; returns
/// requests/s and the latency percentiles. Every non-200 is an error.
async fn hammer(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    // Warm-up: connections opened, caches filled.
    let warm_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warm_until {
        client.get(url).send().await?.error_for_status()?;
    }
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < stop_at {
                let t = Instant::now();
                let status = client.get(&url).send().await?.status().as_u16();
                if status != 200 {
                    bail!("GET {url} answered {status}");
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((
        latencies.len() as f64 / secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    ))
}

/// Every `*.eml` under `dir`, read into memory (sorted, so runs repeat).
fn corpus_files(dir: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

async fn score_load(args: ScoreLoadArgs) -> anyhow::Result<()> {
    let corpus = Arc::new(corpus_files(&args.corpus)?);
    if corpus.is_empty() {
        bail!("no *.eml files under {}", args.corpus.display());
    }
    let mut env = vec![
        ("MAILROOM_API_KEYS", BENCH_KEY),
        ("MAILROOM_RATE_LIMIT_KEY_PER_SECOND", "1000000"),
        ("MAILROOM_RATE_LIMIT_KEY_BURST", "10000000"),
    ];
    if let Some(model) = &args.model {
        env.push(("MAILROOM_SCORE_MODEL_PATH", model.as_str()));
    }
    let (server, _) = Server::spawn_with(&args.bin, &args.database_url, &[], &env)?;
    let client = client_with_key(BENCH_KEY, args.max_in_flight)?;
    let url = format!("{}/api/v1/score", server.base);
    let rate = f64::from(args.rate.max(1));
    let warm_up = rate as usize;
    let total = warm_up + (rate * args.seconds as f64) as usize;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let cpu_before = server.cpu_seconds();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut overloaded = 0usize;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            overloaded += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, url, corpus, in_flight) = (
            client.clone(),
            url.clone(),
            Arc::clone(&corpus),
            Arc::clone(&in_flight),
        );
        tasks.push(tokio::spawn(async move {
            let body = corpus[i % corpus.len()].clone();
            let status = match client
                .post(&url)
                .header("content-type", "message/rfc822")
                .body(body)
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // The whole report is read: the client pays for it too.
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            (i, status, due.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0usize;
    let sent = tasks.len();
    for task in tasks {
        let (i, status, latency) = task.await?;
        if status != 200 {
            failures += 1;
        } else if i >= warm_up {
            latencies.push(latency);
        }
    }
    let measured_secs = started.elapsed().as_secs_f64() - 1.0;
    let cpu = server.cpu_seconds() - cpu_before;
    server.stop()?;
    latencies.sort();
    let result = json!({
        "route": "/api/v1/score",
        "corpus_messages": corpus.len(),
        "offered_per_second": args.rate,
        "seconds": args.seconds,
        "answered_per_second": latencies.len() as f64 / measured_secs.max(1e-9),
        "answered": latencies.len(),
        "failed": failures,
        "not_sent_overloaded": overloaded,
        "latency_ms_from_due_time": {"p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "server_cpu_us_per_request": cpu * 1e6 / sent.max(1) as f64,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if failures > 0 || overloaded > 0 {
        bail!("{failures} requests failed and {overloaded} were not sent (server overloaded)");
    }
    Ok(())
}

/// One stateless 2026-07-28 request body and its headers' method and name.
fn mcp_request(method: &str, params: Value) -> (String, Option<String>, Value) {
    let name = params
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mailroom-loadgen", "version": "1"},
    });
    (
        method.to_string(),
        name,
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
}

/// Sends one MCP request; Ok when the answer is a result, not an error.
async fn mcp_send(
    client: &reqwest::Client,
    url: &str,
    request: &(String, Option<String>, Value),
) -> anyhow::Result<()> {
    let (method, name, body) = request;
    let mut post = client
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method);
    if let Some(name) = name {
        post = post.header("Mcp-Name", name);
    }
    let response = post.json(body).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    if status != 200 || !text.contains("\"result\"") || text.contains("\"isError\":true") {
        bail!(
            "{method} answered {status}: {}",
            &text[..text.len().min(300)]
        );
    }
    Ok(())
}

/// `concurrency` clients each sending `requests` in turn for `seconds`:
/// calls/s, p50 and p99 latency (ms), server CPU per call (µs).
async fn mcp_workload(
    server: &Server,
    client: &reqwest::Client,
    requests: Arc<Vec<(String, Option<String>, Value)>>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let url = format!("{}/mcp", server.base);
    let warm_until = Instant::now() + Duration::from_secs(1);
    let mut n = 0;
    while Instant::now() < warm_until {
        mcp_send(client, &url, &requests[n % requests.len()]).await?;
        n += 1;
    }
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, requests) = (client.clone(), url.clone(), Arc::clone(&requests));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = worker;
            while Instant::now() < stop_at {
                let t = Instant::now();
                mcp_send(&client, &url, &requests[n % requests.len()]).await?;
                latencies.push(t.elapsed());
                n += concurrency;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    latencies.sort();
    Ok(json!({
        "calls_per_second": latencies.len() as f64 / secs,
        "latency_ms": {"p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99)},
        "server_cpu_us_per_call": cpu * 1e6 / latencies.len().max(1) as f64,
    }))
}

async fn mcp_load(args: McpLoadArgs) -> anyhow::Result<()> {
    let sessions = args.sessions.to_string();
    let (server, _) = Server::spawn_with(
        &args.bin,
        &args.database_url,
        &[],
        &[
            ("MAILROOM_API_KEYS", BENCH_KEY),
            ("MAILROOM_RATE_LIMIT_KEY_PER_SECOND", "1000000"),
            ("MAILROOM_RATE_LIMIT_KEY_BURST", "10000000"),
            ("MAILROOM_MCP_MAX_SESSIONS", sessions.as_str()),
        ],
    )?;
    let client = client_with_key(BENCH_KEY, args.concurrency)?;
    let mut ids = Vec::with_capacity(args.messages);
    for n in 0..args.messages {
        let response = client
            .post(format!("{}/api/v1/messages", server.base))
            .header("content-type", "message/rfc822")
            .body(message(n, 4 * 1024))
            .send()
            .await?
            .error_for_status()?;
        let v: Value = response.json().await?;
        ids.push(v["id"].as_str().context("an id")?.to_string());
    }
    let drained = Instant::now();
    loop {
        let status: Value = client
            .get(format!("{}/process/status", server.base))
            .send()
            .await?
            .json()
            .await?;
        if status["current_queue_size"] == 0 {
            break;
        }
        if drained.elapsed() > Duration::from_secs(120) {
            bail!("the messages were not processed in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list_tools = Arc::new(vec![mcp_request("tools/list", json!({}))]);
    let list_messages = Arc::new(vec![mcp_request(
        "tools/call",
        json!({"name": "messages_list", "arguments": {"limit": 20}}),
    )]);
    let get_message = Arc::new(
        ids.iter()
            .map(|id| {
                mcp_request(
                    "tools/call",
                    json!({"name": "message_get", "arguments": {"id": id}}),
                )
            })
            .collect::<Vec<_>>(),
    );
    let mut workloads = serde_json::Map::new();
    for (label, requests) in [
        ("tools/list", list_tools),
        ("tools/call messages_list (20)", list_messages),
        ("tools/call message_get", get_message),
    ] {
        let result =
            mcp_workload(&server, &client, requests, args.concurrency, args.seconds).await?;
        workloads.insert(label.into(), result);
    }

    // Memory of legacy sessions: RSS before and after opening them.
    let url = format!("{}/mcp", server.base);
    let rss_before = server.rss_kib("VmRSS:");
    let mut opened = 0usize;
    for _ in 0..args.sessions {
        let response = client
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "mailroom-loadgen", "version": "1"}}}),
            )
            .send()
            .await?;
        if response.headers().contains_key("mcp-session-id") {
            opened += 1;
        }
        let _ = response.bytes().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib("VmRSS:");
    server.stop()?;
    let result = json!({
        "messages_stored": ids.len(),
        "concurrency": args.concurrency,
        "seconds_per_workload": args.seconds,
        "workloads": workloads,
        "legacy_sessions": {
            "opened": opened,
            "rss_kib_before": rss_before,
            "rss_kib_after": rss_after,
            "kib_per_session": rss_after.saturating_sub(rss_before) as f64 / opened.max(1) as f64,
        },
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// A label, the `serve` flags and the environment of one configuration.
type Configuration<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);

struct Run {
    round: usize,
    label: String,
    rps: f64,
    cpu_us: f64,
    p50: f64,
    p99: f64,
}

async fn auth_overhead(args: OverheadArgs) -> anyhow::Result<()> {
    // The route needs the `read` scope and does one small query.
    let path = "/api/v1/jobs?state=dead&limit=1";
    let high_limits = [
        ("MAILROOM_API_KEYS", BENCH_KEY),
        ("MAILROOM_RATE_LIMIT_KEY_PER_SECOND", "1000000"),
        ("MAILROOM_RATE_LIMIT_KEY_BURST", "10000000"),
    ];
    // A key stored in the database: the path every request with a
    // generated key takes (configured keys skip the lookup).
    let created = Command::new(&args.bin)
        .args([
            "keys",
            "create",
            "--name",
            &format!("bench-{}", std::process::id()),
            "--scopes",
            "read",
        ])
        .env("DATABASE_URL", &args.database_url)
        .env("LOG_LEVEL", "warn")
        .stderr(Stdio::null())
        .output()
        .context("creating the benchmark key")?;
    if !created.status.success() {
        bail!("`mailroom keys create` failed");
    }
    let db_key = String::from_utf8(created.stdout)?.trim().to_string();
    let mut configurations: Vec<Configuration> = vec![
        (
            "no_auth_no_limits",
            vec!["--insecure-no-auth"],
            vec![("MAILROOM_RATE_LIMIT_ENABLED", "false")],
        ),
        ("api_key_and_memory_limits", vec![], high_limits.to_vec()),
    ];
    if !args.redis_url.is_empty() {
        let mut with_redis = high_limits.to_vec();
        with_redis.push(("REDIS_URL", args.redis_url.as_str()));
        configurations.push(("api_key_and_redis_limits", vec![], with_redis));
    }
    let client = client_with_key(&db_key, args.concurrency)?;
    // Each round runs every configuration back to back; overheads are
    // computed against the same round's baseline, so slow drift of a shared
    // machine cancels out.
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..args.rounds.max(1) {
        for (label, flags, env) in &configurations {
            let (server, _) = Server::spawn_with(&args.bin, &args.database_url, flags, env)?;
            let url = format!("{}{path}", server.base);
            let cpu_before = server.cpu_seconds();
            let result = hammer(&client, &url, args.concurrency, args.seconds).await;
            let cpu = server.cpu_seconds() - cpu_before;
            server.stop()?;
            let (rps, p50, p99) = result?;
            // Warm-up requests are few against the measured ones; CPU per
            // request counts them as measured (a slight overestimate alike
            // for every configuration).
            let cpu_us = cpu * 1e6 / (rps * args.seconds as f64).max(1.0);
            eprintln!("round {round} {label}: {rps:.0} req/s, server {cpu_us:.1} us CPU/request (p50 {p50:.2} ms, p99 {p99:.2} ms)");
            runs.push(Run {
                round,
                label: label.to_string(),
                rps,
                cpu_us,
                p50,
                p99,
            });
        }
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let base_of = |round: usize| {
        runs.iter()
            .find(|r| r.round == round && r.label == "no_auth_no_limits")
    };
    let summary = |label: &str| -> Value {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.label == label).collect();
        let throughput_overhead: Vec<f64> = mine
            .iter()
            .filter_map(|r| base_of(r.round).map(|b| (1.0 - r.rps / b.rps) * 100.0))
            .collect();
        let cpu_overhead: Vec<f64> = mine
            .iter()
            .filter_map(|r| base_of(r.round).map(|b| (r.cpu_us / b.cpu_us - 1.0) * 100.0))
            .collect();
        json!({
            "median_requests_per_second": median(mine.iter().map(|r| r.rps).collect()),
            "median_server_cpu_us_per_request": median(mine.iter().map(|r| r.cpu_us).collect()),
            "median_throughput_overhead_percent": median(throughput_overhead.clone()),
            "throughput_overhead_percent_per_round": throughput_overhead,
            "median_cpu_overhead_percent": median(cpu_overhead),
        })
    };
    let mut configs = serde_json::Map::new();
    for (label, _, _) in &configurations {
        configs.insert(label.to_string(), summary(label));
    }
    let result = json!({
        "route": path,
        "concurrency": args.concurrency,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "configurations": configs,
        "runs": runs.iter().map(|r| json!({"round": r.round, "config": r.label, "rps": r.rps, "server_cpu_us_per_request": r.cpu_us, "p50_ms": r.p50, "p99_ms": r.p99})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

async fn ingest(args: Args) -> anyhow::Result<()> {
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

    let client = client_with_key(BENCH_KEY, args.concurrency)?;
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
