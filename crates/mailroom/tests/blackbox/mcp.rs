//! The MCP server through its real surfaces: `/mcp` on the HTTP server
//! (protection, scopes, sessions, errors, metrics) and `mailroom mcp` on
//! stdio (toolset flags, nothing but protocol on stdout). Clients nobody
//! here wrote (the Python SDK, the Inspector, the conformance suite) drive
//! it in `mcp_clients.rs`.

use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
    time::Duration,
};

use serde_json::{json, Value};

use crate::support::{binary, metric, TestApp, TestDb};

const MODERN: &str = "2026-07-28";

/// `_meta` a 2026-07-28 client sends with every request.
fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "blackbox", "version": "1"},
    })
}

/// The JSON-RPC message of a response, whether sent as JSON or as an SSE
/// stream (the last `data:` event that carries an id).
async fn rpc_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return v;
    }
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some_and(|id| !id.is_null()))
        .unwrap_or_else(|| panic!("no JSON-RPC response in {text:?}"))
}

/// One stateless 2026-07-28 request; returns (status, JSON-RPC message).
async fn modern_call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    mut params: Value,
) -> (u16, Value) {
    params["_meta"] = modern_meta();
    let mut request = client
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", MODERN)
        .header("Mcp-Method", method);
    if let Some(name) = params.get("name").and_then(|n| n.as_str()) {
        request = request.header("Mcp-Name", name);
    }
    let response = request
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    (status, rpc_body(response).await)
}

/// A 2025-11-25 initialize: (status, session id).
async fn legacy_initialize(client: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    let response = client
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "blackbox", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status == 200 {
        let body = rpc_body(response).await;
        assert_eq!(body["result"]["serverInfo"]["name"], "mailroom", "{body}");
        assert_eq!(body["result"]["protocolVersion"], "2025-11-25", "{body}");
    }
    (status, session)
}

/// A legacy session's `notifications/initialized`.
async fn send_initialized(client: &reqwest::Client, url: &str, session: &str) {
    let response = client
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("initialized");
    assert_eq!(response.status(), 202);
}

/// The status of a `tools/list` in a legacy session.
async fn session_list(client: &reqwest::Client, url: &str, session: &str) -> u16 {
    client
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", session)
        .header("MCP-Protocol-Version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_endpoint_is_protected_like_the_api() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let url = app.url("/mcp");

    // No key: 401, and the challenge says where to learn how to authenticate.
    let refused = app
        .anonymous
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let metadata_url = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        app.addr
    );
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    let metadata: Value = app
        .anonymous
        .get(&metadata_url)
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["resource"], url);
    assert_eq!(
        metadata["scopes_supported"],
        json!(["read", "write", "admin"])
    );

    // A foreign browser Origin or Host is refused with a JSON body.
    for (header, value) in [("Origin", "https://evil.example"), ("Host", "evil.example")] {
        let response = app
            .client
            .post(&url)
            .header(header, value)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 403, "{header}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(header)),
            "{body}"
        );
    }

    // Unparsable JSON: 400 with a JSON-RPC parse error.
    let response = app
        .client
        .post(&url)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .header("MCP-Protocol-Version", MODERN)
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], -32700, "{body}");

    // An admin key sees every tool; a read key only the read-only ones,
    // and a tool it may not use is refused as a result the model can read.
    let (status, all) = modern_call(&app.client, &url, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{all}");
    let all = tool_names(&all);
    assert!(all.contains(&"message_delete".to_string()), "{all:?}");
    let (read_key, _) = app.create_key("mcp-reader", "read", None).await;
    let reader = crate::support::client_with_key(&read_key);
    let (_, listed) = modern_call(&reader, &url, "tools/list", json!({})).await;
    let mut visible = tool_names(&listed);
    visible.sort();
    assert_eq!(
        visible,
        [
            "message_get",
            "message_score",
            "messages_list",
            "processing_status"
        ]
    );
    let (_, denied) = modern_call(
        &reader,
        &url,
        "tools/call",
        json!({"name": "message_ingest", "arguments": {"raw": "From: a@b.c\r\n\r\nx"}}),
    )
    .await;
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(
        denied["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("`write` scope")),
        "{denied}"
    );

    // Errors a model can fix are results; a malformed call is a protocol error.
    let (_, invalid) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "messages_list", "arguments": {"since": "last tuesday"}}),
    )
    .await;
    assert_eq!(invalid["result"]["isError"], true, "{invalid}");
    let (_, unknown) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "no_such_tool", "arguments": {}}),
    )
    .await;
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");

    // Ingest over MCP lands in the same store the REST API reads.
    let raw = crate::support::email(1, "mcp@example.com", "Over MCP", "hello");
    let (_, ingested) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "message_ingest", "arguments": {"raw": raw}}),
    )
    .await;
    let id = ingested["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{ingested}"))
        .to_string();
    let detail = app.wait_for_status(&id, "processed").await;
    assert_eq!(detail["source"], "mcp");

    let metrics = app.metrics_text().await;
    assert!(
        metric(
            &metrics,
            "mcp_tool_calls_total{tool=\"message_ingest\",outcome=\"ok\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "mcp_tool_calls_total{tool=\"message_ingest\",outcome=\"denied\"}"
        ) >= 1.0
    );
    assert!(metrics.contains("mcp_tool_duration_seconds_bucket"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sessions_are_capped_and_closable() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(&db, &[("mcp.max_sessions", "2")]).await;
    let url = app.url("/mcp");
    let (first, one) = legacy_initialize(&app.client, &url).await;
    let (second, two) = legacy_initialize(&app.client, &url).await;
    assert_eq!((first, second), (200, 200));
    let (one, two) = (one.expect("session id"), two.expect("session id"));
    assert_ne!(one, two);
    let metrics = app.metrics_text().await;
    assert_eq!(metric(&metrics, "mcp_sessions_active"), 2.0, "{metrics}");

    // A third is refused with a JSON body while two are open, whatever
    // protocol version its headers name…
    for version in [None, Some("2025-11-25"), Some(MODERN)] {
        let mut request = app
            .client
            .post(&url)
            .header("Accept", "application/json, text/event-stream");
        if let Some(version) = version {
            request = request.header("MCP-Protocol-Version", version);
        }
        let response = request
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version.unwrap_or("2025-11-25"), "capabilities": {},
                "clientInfo": {"name": "blackbox", "version": "1"}}}),
            )
            .send()
            .await
            .expect("initialize");
        assert!(
            !response.headers().contains_key("mcp-session-id"),
            "{version:?} opened a session past the cap"
        );
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "too_many_sessions");
        } else {
            assert!(
                version == Some(MODERN),
                "{version:?}: {}",
                response.status()
            );
        }
    }
    let metrics = app.metrics_text().await;
    assert_eq!(metric(&metrics, "mcp_sessions_active"), 2.0, "{metrics}");
    // …while stateless 2026-07-28 requests still work.
    let (status, _) = modern_call(&app.client, &url, "tools/list", json!({})).await;
    assert_eq!(status, 200);

    // Ending a session frees its place; an ended session is unknown (404).
    let ended = app
        .client
        .delete(&url)
        .header("Mcp-Session-Id", &one)
        .send()
        .await
        .expect("delete");
    assert!(ended.status().is_success(), "{}", ended.status());
    assert_eq!(session_list(&app.client, &url, &one).await, 404);
    let (third, _) = legacy_initialize(&app.client, &url).await;
    assert_eq!(third, 200);

    // A session answers only the key that opened it.
    send_initialized(&app.client, &url, &two).await;
    assert_eq!(session_list(&app.client, &url, &two).await, 200);
    let (other_key, _) = app.create_key("mcp-other", "admin", None).await;
    let other = crate::support::client_with_key(&other_key);
    assert_eq!(session_list(&other, &url, &two).await, 404);
    let hijack = other
        .delete(&url)
        .header("Mcp-Session-Id", &two)
        .send()
        .await
        .expect("delete");
    assert_eq!(hijack.status(), 404);
    assert_eq!(session_list(&app.client, &url, &two).await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_legacy_sessions_expire() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(&db, &[("mcp.session_idle_seconds", "1")]).await;
    let url = app.url("/mcp");
    let (status, session) = legacy_initialize(&app.client, &url).await;
    assert_eq!(status, 200);
    let session = session.expect("session id");
    send_initialized(&app.client, &url, &session).await;
    assert_eq!(session_list(&app.client, &url, &session).await, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(session_list(&app.client, &url, &session).await, 404);
    app.stop().await;
}

/// `mailroom mcp` as a child, spoken to one JSON-RPC message per line.
struct StdioClient {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line so far.
    seen: Vec<String>,
}

impl StdioClient {
    fn start(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = binary();
        cmd.arg("mcp")
            .args(args)
            .env("MAILROOM_DATABASE_URL", &db.url)
            .env("MAILROOM_QUEUE_POLL_INTERVAL_MS", "50")
            .env("LOG_LEVEL", "info")
            .current_dir(db.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn mailroom mcp");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{message}").expect("write");
        stdin.flush().expect("flush");
    }

    /// The answer to request `id` (30 s at most); every line read is kept.
    fn answer(&mut self, id: i64) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no answer to request {id}; stdout: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    /// Lines arriving within `wait`.
    fn drain(&mut self, wait: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(wait) {
            self.seen.push(line.clone());
            lines.push(line);
        }
        lines
    }

    fn legacy_handshake(&mut self) -> Value {
        self.send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "blackbox", "version": "1"}}}),
        );
        let answer = self.answer(1);
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }

    fn call(&mut self, id: i64, tool: &str, arguments: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}));
        self.answer(id)
    }

    /// Closes stdin (the client leaves) and waits for a clean exit.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "mailroom mcp exited with {status}");
        self.drain(Duration::from_millis(200));
        self.seen
    }
}

#[test]
fn stdio_offers_the_chosen_toolsets_and_prints_only_protocol() {
    let db = TestDb::sqlite();
    let mut client = StdioClient::start(&db, &["--read-only"], &[("MAILROOM_TOOLSETS", "score")]);
    let initialized = client.legacy_handshake();
    assert_eq!(initialized["result"]["serverInfo"]["name"], "mailroom");
    assert_eq!(
        initialized["result"]["serverInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    client.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let listed = client.answer(2);
    assert_eq!(tool_names(&listed), ["message_score"], "{listed}");
    // Message resources and prompts come with the email toolset only.
    assert!(initialized["result"]["capabilities"]["resources"].is_null());
    assert!(initialized["result"]["capabilities"]["prompts"].is_null());
    client.send(json!({"jsonrpc": "2.0", "id": 3, "method": "resources/templates/list"}));
    assert_eq!(client.answer(3)["error"]["code"], -32601);
    // Logs went to stderr: every stdout line is a JSON-RPC message.
    for line in client.finish() {
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("not JSON-RPC on stdout: {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
    }

    // A modern client on stdio: server/discover, then a stateless call.
    let mut client = StdioClient::start(&db, &[], &[]);
    client.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover",
        "params": {"_meta": modern_meta()}}),
    );
    let discovered = client.answer(1);
    assert!(
        discovered["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(MODERN)) && v.contains(&json!("2025-11-25"))),
        "{discovered}"
    );
    client.send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "messages_list", "arguments": {"limit": 1}, "_meta": modern_meta()}}),
    );
    let answer = client.answer(2);
    assert_eq!(
        answer["result"]["structuredContent"]["items"],
        json!([]),
        "{answer}"
    );
    client.finish();
}

#[test]
fn a_cancelled_reprocess_stops_waiting_and_sends_nothing() {
    let db = TestDb::sqlite();
    let mut client = StdioClient::start(&db, &[], &[("MAILROOM_FAULT_INJECTION", "true")]);
    client.legacy_handshake();
    // Each pipeline run of this message takes 1.5 s.
    let raw = "From: slow@example.com\r\nSubject: slow\r\nX-Mailroom-Fault: delay-ms=1500\r\n\r\nslow\r\n";
    let receipt = client.call(2, "message_ingest", json!({"raw": raw}));
    let id = receipt["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{receipt}"))
        .to_string();
    let mut n = 10;
    loop {
        n += 1;
        let got = client.call(n, "message_get", json!({"id": id}));
        if got["result"]["structuredContent"]["status"] == "processed" {
            break;
        }
        assert!(n < 200, "not processed: {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
    client.send(
        json!({"jsonrpc": "2.0", "id": 500, "method": "tools/call", "params": {
        "name": "messages_reprocess", "arguments": {"ids": [id], "status": ["processed"]},
        "_meta": {"progressToken": "reprocess-1"}}}),
    );
    // The first progress report says it is under way; then the client
    // gives up.
    let started = std::time::Instant::now();
    let progress = loop {
        let lines = client.drain(Duration::from_millis(100));
        if let Some(p) = lines.iter().find(|l| l.contains("notifications/progress")) {
            break p.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no progress: {:?}",
            client.seen
        );
    };
    let progress: Value = serde_json::from_str(&progress).expect("json");
    assert_eq!(progress["params"]["progressToken"], "reprocess-1");
    assert_eq!(progress["params"]["progress"], 0.0, "{progress}");
    client.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 500, "reason": "user gave up"}}),
    );
    // The server stays responsive; the cancelled call stops waiting, so
    // neither its answer nor its final progress (1 of 1) ever comes, though
    // the message finishes meanwhile.
    let listed = client.call(501, "messages_list", json!({}));
    assert!(listed["result"]["structuredContent"]["items"].is_array());
    let later = client.drain(Duration::from_millis(2500));
    assert!(
        later
            .iter()
            .all(|l| !l.contains("\"id\":500") && !l.contains("notifications/progress")),
        "the cancelled call went on: {later:?}"
    );
    let got = client.call(502, "message_get", json!({"id": id}));
    let detail = &got["result"]["structuredContent"];
    assert_eq!(detail["status"], "processed", "{got}");
    let parses = detail["history"]
        .as_array()
        .map(|h| h.iter().filter(|s| s["stage"] == "parse").count());
    assert_eq!(parses, Some(2), "it ran again: {got}");
    client.finish();
}

#[test]
fn unknown_toolsets_fail_start_up() {
    let db = TestDb::sqlite();
    let output = crate::support::run_cli(&db, &["mcp", "--toolsets", "email,emial"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mcp.toolsets") && stderr.contains("unknown toolset `emial`"),
        "{stderr}"
    );
    let output = crate::support::run_cli(&db, &["serve"], &[("MAILROOM_TOOLSETS", "bogus")]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_cost_what_their_rest_twins_cost() {
    let db = TestDb::sqlite();
    // 12 tokens, refilled one a second: one reprocess (10) fits, two do not.
    let app = TestApp::spawn_with(
        &db,
        &[
            ("rate_limit.key_burst", "12"),
            ("rate_limit.key_per_second", "1"),
        ],
    )
    .await;
    let url = app.url("/mcp");
    let reprocess = json!({"name": "messages_reprocess", "arguments": {"wait": false}});
    let (_, first) = modern_call(&app.client, &url, "tools/call", reprocess.clone()).await;
    assert_eq!(first["result"]["isError"], false, "{first}");
    let (status, second) = modern_call(&app.client, &url, "tools/call", reprocess).await;
    assert_eq!(status, 200, "the request itself fits in the bucket");
    assert_eq!(second["result"]["isError"], true, "{second}");
    assert!(
        second["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("rate limit exceeded") && t.contains("retry")),
        "{second}"
    );
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "mcp_tool_calls_total{tool=\"messages_reprocess\",outcome=\"rate_limited\"}"
        ),
        1.0,
        "{metrics}"
    );
    app.stop().await;
}

crate::backend_test!(reprocess_reruns_processed_messages, |db| async move {
    let app = TestApp::spawn(&db).await;
    let url = app.url("/mcp");
    let mut ids = Vec::new();
    for n in 0..3 {
        let raw = crate::support::email(n, "again@example.com", "Run again", "body");
        let (_, receipt) = modern_call(
            &app.client,
            &url,
            "tools/call",
            json!({"name": "message_ingest", "arguments": {"raw": raw}}),
        )
        .await;
        ids.push(
            receipt["result"]["structuredContent"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{receipt}"))
                .to_string(),
        );
    }
    for id in &ids {
        app.wait_for_status(id, "processed").await;
    }
    // Two of the three, by id: each gets one new job and runs once more.
    let (_, result) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "messages_reprocess", "arguments": {
            "ids": [ids[0], ids[1]], "status": ["processed"], "timeout_seconds": 30}}),
    )
    .await;
    let done = &result["result"]["structuredContent"];
    assert_eq!(done["requeued"], 2, "{result}");
    assert_eq!(done["processed"], 2, "{result}");
    assert_eq!(done["pending"], 0, "{result}");
    for (n, id) in ids.iter().enumerate() {
        let detail = app.message(id).await;
        let parses = detail["history"]
            .as_array()
            .map(|h| h.iter().filter(|s| s["stage"] == "parse").count())
            .unwrap_or(0);
        assert_eq!(parses, if n < 2 { 2 } else { 1 }, "{detail}");
        assert_eq!(detail["status"], "processed");
    }
    // Nothing left queued: no message got two jobs.
    let (_, status) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "processing_status", "arguments": {}}),
    )
    .await;
    assert_eq!(
        status["result"]["structuredContent"]["current_queue_size"], 0,
        "{status}"
    );
    // Only failed, dead and processed can be re-run.
    let (_, refused) = modern_call(
        &app.client,
        &url,
        "tools/call",
        json!({"name": "messages_reprocess", "arguments": {"status": ["queued"]}}),
    )
    .await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    app.stop().await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_page_through_every_message_and_bodies_are_bounded() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(&db, &[("mcp.max_request_bytes", "8192")]).await;
    let url = app.url("/mcp");
    let mut ids = Vec::new();
    for n in 0..55 {
        ids.push(
            app.ingest(crate::support::email(n, "page@example.com", "Paged", "x"))
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let (status, page) = modern_call(&app.client, &url, "resources/list", params).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for r in page["result"]["resources"].as_array().expect("resources") {
            seen.push(r["uri"].as_str().expect("uri").to_string());
        }
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "the pages never end");
    }
    assert_eq!(pages, 2);
    let mut expected: Vec<String> = ids
        .iter()
        .map(|id| format!("mailroom://messages/{id}"))
        .collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
    let (_, bad) = modern_call(
        &app.client,
        &url,
        "resources/list",
        json!({"cursor": "not-a-cursor"}),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    // A body past mcp.max_request_bytes: 413, with a JSON body.
    let big = "x".repeat(10_000);
    let response = app
        .client
        .post(&url)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", MODERN)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "message_ingest", "arguments": {"raw": big}, "_meta": modern_meta()}}),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ingest_is_counted_once_in_the_memory_budget() {
    let db = TestDb::sqlite();
    // The budget holds exactly one largest message.
    let app = TestApp::spawn_with(
        &db,
        &[
            ("max_message_bytes", "1048576"),
            ("ingest.max_inflight_bytes", "1048576"),
        ],
    )
    .await;
    let body = "y".repeat(700 * 1024);
    let raw = format!("From: big@example.com\r\nSubject: big\r\n\r\n{body}\r\n");
    let started = std::time::Instant::now();
    let (status, receipt) = modern_call(
        &app.client,
        &app.url("/mcp"),
        "tools/call",
        json!({"name": "message_ingest", "arguments": {"raw": raw}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(receipt["result"]["isError"], false, "{receipt}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the ingest waited for memory it already held"
    );
    app.stop().await;
}

crate::backend_test!(
    concurrent_reprocess_calls_run_a_message_once,
    |db| async move {
        let app = TestApp::spawn_with(&db, &[("fault_injection", "true")]).await;
        let url = app.url("/mcp");
        // Each run takes 0.8 s, so the second call arrives while the first
        // call's run is queued or under way.
        let raw = "From: race@example.com\r\nSubject: race\r\nX-Mailroom-Fault: delay-ms=800\r\n\r\nrace\r\n";
        let id = app.ingest(raw.to_string()).await;
        app.wait_for_status(&id, "processed").await;
        let call = json!({"name": "messages_reprocess", "arguments": {
        "ids": [id], "status": ["processed"], "wait": false}});
        let (a, b) = tokio::join!(
            modern_call(&app.client, &url, "tools/call", call.clone()),
            modern_call(&app.client, &url, "tools/call", call.clone()),
        );
        let requeued: Vec<i64> = [&a.1, &b.1]
            .iter()
            .map(|r| {
                r["result"]["structuredContent"]["requeued"]
                    .as_i64()
                    .unwrap_or(-1)
            })
            .collect();
        assert_eq!(requeued.iter().sum::<i64>(), 1, "{requeued:?}: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.wait_for_status(&id, "processed").await;
        // Give a second job, had there been one, time to run.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let detail = app.message(&id).await;
        let parses = detail["history"]
            .as_array()
            .map(|h| h.iter().filter(|s| s["stage"] == "parse").count());
        assert_eq!(parses, Some(2), "{detail}");
        app.stop().await;
    }
);
