#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use mailroom::{config::Layers, server::Application};
use serde_json::Value;
use tokio::sync::{oneshot, OnceCell};

pub const POSTGRES_ENV: &str = "MAILROOM_TEST_POSTGRES_URL";

/// The admin key child servers are provisioned with (`MAILROOM_API_KEYS`).
pub const PROCESS_ADMIN_KEY: &str = "test-admin-key-0123456789abcdef0123456789abcdef";

/// A client that sends `key` on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The status of a GET.
pub async fn status(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> u16 {
    client.get(url).send().await.expect("get").status().as_u16()
}

/// A client for child servers, authenticated as their admin.
pub fn process_client() -> reqwest::Client {
    client_with_key(PROCESS_ADMIN_KEY)
}

/// Generates one test per backend from one body:
/// `backend_test!(name, |db| async move { ... })`.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::TestDb::sqlite();
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = $crate::support::TestDb::postgres().await else {
                    return;
                };
                let cleanup = $db.clone();
                $body.await;
                cleanup.drop_database().await;
            }
        }
    };
}

/// A fresh database for one test: a SQLite file in a temp dir, or a new
/// PostgreSQL database created on the configured server.
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Arc<tempfile::TempDir>,
}

static PG_SWEEP: OnceCell<()> = OnceCell::const_new();

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/db/mailroom.db", dir.path().display());
        Self {
            url,
            admin_url: None,
            name: None,
            _dir: Arc::new(dir),
        }
    }

    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            eprintln!("\n*** SKIPPED on PostgreSQL: set {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test to run it ***\n");
            return None;
        };
        sqlx::any::install_default_drivers();
        PG_SWEEP
            .get_or_init(|| async {
                // Databases left by earlier runs that panicked.
                let mut conn = admin(&admin_url).await;
                let stale: Vec<String> = sqlx::query_scalar(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'mrt\\_%'",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list databases");
                for db in stale {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            })
            .await;
        let name = format!("mrt_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin(&admin_url).await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .expect("url has a database");
        let url = format!("{base}/{name}");
        Some(Self {
            url,
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: Arc::new(tempfile::tempdir().expect("tempdir")),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.name.is_some()
    }

    pub async fn drop_database(&self) {
        if let (Some(admin_url), Some(name)) = (&self.admin_url, &self.name) {
            let mut conn = admin(admin_url).await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    /// A scratch folder that lives as long as the database.
    pub fn dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }
}

async fn admin(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::AnyConnection::connect(url)
        .await
        .expect("connect to the PostgreSQL test server")
}

/// The application running in this process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Sends an admin key (issued through the real key service) on every
    /// request.
    pub client: reqwest::Client,
    /// Sends no credentials.
    pub anonymous: reqwest::Client,
    /// The admin key `client` sends.
    pub admin_key: String,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(db, &[]).await
    }

    /// `settings` are (key, value) pairs as in mailroom.toml (`queue.max_attempts`).
    pub async fn spawn_with(db: &TestDb, settings: &[(&str, &str)]) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = mailroom_telemetry::init_tracing("info", mailroom_telemetry::LogFormat::Pretty);
        }
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("MAILROOM_DATABASE_URL".into(), db.url.clone());
        env.insert("MAILROOM_BIND".into(), "127.0.0.1:0".into());
        env.insert("MAILROOM_WORKERS".into(), "2".into());
        env.insert("MAILROOM_DATABASE_MAX_CONNECTIONS".into(), "4".into());
        env.insert("MAILROOM_QUEUE_POLL_INTERVAL_MS".into(), "50".into());
        env.insert("MAILROOM_AUTH_BOOTSTRAP_ADMIN_KEY".into(), "false".into());
        for (k, v) in settings {
            env.insert(mailroom::config::env_name(k), (*v).to_string());
        }
        let config = Layers::load(None, &|name| env.get(name).cloned())
            .resolve()
            .expect("valid test config");
        let app = Application::build(config)
            .await
            .expect("application starts");
        let addr = app.local_addr().expect("bound");
        let admin_key = app
            .keys()
            .create(
                &format!("test-admin-{}", uuid::Uuid::now_v7().simple()),
                mailroom_security::Scopes::admin(),
                None,
                &mailroom_app::Actor::system(),
            )
            .await
            .expect("admin key")
            .secret
            .expose()
            .to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: client_with_key(&admin_key),
            anonymous: reqwest::Client::new(),
            admin_key,
            db: db.clone(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_message(&self, raw: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/messages"))
            .header("content-type", "message/rfc822")
            .body(raw)
            .send()
            .await
            .expect("request")
    }

    /// Posts and expects 202; returns the id.
    pub async fn ingest(&self, raw: impl Into<reqwest::Body>) -> String {
        let response = self.post_message(raw).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `DELETE /api/v1/messages/{id}`; returns the status code.
    pub async fn delete(&self, id: &str) -> u16 {
        let response = self
            .client
            .delete(self.url(&format!("/api/v1/messages/{id}")))
            .send()
            .await
            .expect("delete");
        response.status().as_u16()
    }

    /// `POST /process/trigger` with a JSON body; returns status and body.
    pub async fn trigger(&self, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/process/trigger"))
            .json(&body)
            .send()
            .await
            .expect("trigger");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn message(&self, id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/v1/messages/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the message reaches `status` (10 s at most).
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.message(id).await;
            if m["status"] == status {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} stuck in {} (wanted {status}): {m}",
                m["status"]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("clean shutdown");
        }
    }
}

/// A small valid message; `n` makes it unique.
pub fn email(n: usize, from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: Sender {n} <{from}>\r\nTo: team@example.org\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <msg-{n}-{}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        uuid::Uuid::now_v7().simple()
    )
}

/// The `mailroom` binary as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
}

/// Runs a `mailroom` command on `db` (with `env` added) to completion.
pub fn run_cli(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = binary();
    cmd.args(args)
        .env("MAILROOM_DATABASE_URL", &db.url)
        .env("LOG_LEVEL", "warn")
        .current_dir(db.dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mailroom")
}

impl ServerProcess {
    /// `mailroom serve` on loopback, provisioned with [`PROCESS_ADMIN_KEY`].
    pub fn start(db: &TestDb, settings: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> =
            vec![("MAILROOM_API_KEYS".into(), PROCESS_ADMIN_KEY.into())];
        env.extend(
            settings
                .iter()
                .map(|(k, v)| (mailroom::config::env_name(k), v.to_string())),
        );
        match Self::launch(db, &["--bind", "127.0.0.1:0"], &env) {
            Ok(server) => server,
            Err(logs) => panic!("server did not start: {logs:?}"),
        }
    }

    /// `mailroom serve ARGS` with exactly the environment `env` (plus the
    /// database); `Err(logs)` when it exits or does not listen in 20 s.
    pub fn launch(
        db: &TestDb,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<Self, Vec<String>> {
        let mut cmd = binary();
        cmd.arg("serve")
            .args(args)
            .args(["--log-format", "json"])
            .env("MAILROOM_DATABASE_URL", &db.url)
            .env("MAILROOM_QUEUE_POLL_INTERVAL_MS", "50")
            .env("LOG_LEVEL", "info")
            .current_dir(db.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn mailroom");
        let stderr = child.stderr.take().expect("stderr");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let printed = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let out = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().expect("stdout lock").push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(Self {
                child,
                addr: addr.parse().expect("listening address"),
                logs,
                stdout: printed,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // Let the reader threads drain what the process wrote.
                std::thread::sleep(Duration::from_millis(100));
                let lines = logs.lock().expect("log lock").clone();
                Err(lines)
            }
        }
    }

    /// What the server printed on standard output.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Posts a raw message, expects 202 and returns the new id.
    pub async fn ingest(&self, client: &reqwest::Client, raw: String) -> String {
        let response = client
            .post(self.url("/api/v1/messages"))
            .header("content-type", "message/rfc822")
            .body(raw)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn get_json(&self, client: &reqwest::Client, path: &str) -> Value {
        client
            .get(self.url(path))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// POSTs `body` (or nothing) and returns the JSON answer.
    pub async fn post_json(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = client.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json")
    }

    /// Waits (until `deadline`) for a message to be processed; returns it.
    pub async fn wait_processed(
        &self,
        client: &reqwest::Client,
        id: &str,
        deadline: Instant,
    ) -> Value {
        loop {
            let m = self
                .get_json(client, &format!("/api/v1/messages/{id}"))
                .await;
            if m["status"] == "processed" {
                return m;
            }
            assert!(Instant::now() < deadline, "{id} not processed: {m}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored bytes of a message.
    pub async fn raw(&self, client: &reqwest::Client, id: &str) -> Vec<u8> {
        let response = client
            .get(self.url(&format!("/api/v1/messages/{id}/raw")))
            .send()
            .await
            .expect("raw");
        response.bytes().await.expect("bytes").to_vec()
    }

    /// Sends a signal by name (TERM, KILL, INT).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit (30 s at most) and returns the exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "server did not exit; logs: {:?}",
                    self.logs.lock().expect("log lock")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` as raw bytes on a fresh connection and returns what the
/// server answered before closing or going quiet for `wait`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Prometheus sample's value (0 when absent), e.g.
/// `metric(&text, "auth_failures_total{reason=\"missing\"}")`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

impl TestApp {
    /// Issues a key through the API; returns (key, id).
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &str,
        expires_in: Option<&str>,
    ) -> (String, String) {
        let mut body = serde_json::json!({"name": name, "scopes": scopes});
        if let Some(e) = expires_in {
            body["expires_in"] = e.into();
        }
        let response = self
            .client
            .post(self.url("/api/v1/keys"))
            .json(&body)
            .send()
            .await
            .expect("create key");
        assert_eq!(response.status(), 201);
        let v: Value = response.json().await.expect("json");
        (
            v["key"].as_str().expect("key").to_string(),
            v["id"].as_str().expect("id").to_string(),
        )
    }

    /// Audit entries matching a query string (admin).
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Audit entries matching `query` once at least `count` exist (refused
    /// authentications are written in the background); 5 s at most.
    pub async fn audit_at_least(&self, query: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entries = self.audit(query).await;
            if entries.len() >= count || Instant::now() > deadline {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored bytes of a message (`GET …/raw`).
    pub async fn raw(&self, id: &str) -> Vec<u8> {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/messages/{id}/raw")))
            .send()
            .await
            .expect("raw");
        response.bytes().await.expect("bytes").to_vec()
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

pub const REDIS_ENV: &str = "MAILROOM_TEST_REDIS_URL";

/// The Redis the tests share (`MAILROOM_TEST_REDIS_URL`), or `None` with a
/// loud notice.
pub fn test_redis_url() -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!("\n*** SKIPPED the Redis half: set {REDIS_ENV}=redis://127.0.0.1:6379 to run it ***\n");
            None
        }
    }
}

/// A private `redis-server` on a free port, for tests that stop Redis.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = Self { child: None, port };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
