//! Trying to get in where one should not: every attempt is answered 401 or
//! 403 with nothing leaked, counted in `auth_failures_total` and audited.

use std::time::Duration;

use mailroom_security::ApiKeySecret;
use serde_json::Value;

use crate::{backend_test, support::*};

/// A request with `auth` headers; returns status, body and headers.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = app.anonymous.request(method, app.url(path));
    for (k, v) in auth {
        request = request.header(*k, *v);
    }
    if path == "/api/v1/messages" {
        request = request.header("content-type", "message/rfc822").body(email(
            1,
            "a@example.com",
            "hi",
            "hello",
        ));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn expect_401(app: &TestApp, auth: &[(&str, &str)], what: &str) {
    let (status, body, headers) = call(app, reqwest::Method::GET, "/api/v1/messages", auth).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"mailroom\""),
        "{what}: {challenge}"
    );
    // Nothing of the presented secret comes back.
    for (_, value) in auth {
        let secret = value.trim_start_matches("Bearer ");
        if secret.len() > 12 {
            assert!(
                !body.to_string().contains(&secret[12..]),
                "{what}: echoed the key"
            );
        }
    }
}

backend_test!(
    every_way_in_without_a_proper_key_is_refused,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let before = app.metrics_text().await;

        // No key at all, on every protected surface.
        expect_401(&app, &[], "no key").await;
        for (method, path) in [
            (reqwest::Method::POST, "/api/v1/messages"),
            (reqwest::Method::GET, "/api/v1/jobs"),
            (reqwest::Method::POST, "/process/trigger"),
            (reqwest::Method::GET, "/api/v1/keys"),
            (reqwest::Method::GET, "/api/v1/audit"),
            (
                reqwest::Method::DELETE,
                "/api/v1/messages/019a0000-0000-7000-8000-000000000000",
            ),
        ] {
            let (status, body, _) = call(&app, method.clone(), path, &[]).await;
            assert_eq!(status, 401, "{method} {path}: {body}");
        }
        // The probes stay open.
        assert_eq!(status(&app.anonymous, app.url("/health")).await, 200);
        assert_eq!(status(&app.anonymous, app.url("/health/ready")).await, 200);

        // Malformed: wrong scheme, empty, a mistyped key (checksum), spaces,
        // two different keys, two Authorization headers, absurd length.
        let real = ApiKeySecret::generate();
        let mut typo = real.expose().to_string().into_bytes();
        typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
        let typo = String::from_utf8(typo).expect("ascii");
        let long = "a".repeat(4000);
        for (what, auth) in [
            (
                "basic scheme",
                vec![("authorization", "Basic dXNlcjpwYXNz".to_string())],
            ),
            (
                "bearer without key",
                vec![("authorization", "Bearer".to_string())],
            ),
            ("checksum mismatch", vec![("authorization", bearer(&typo))]),
            (
                "x-api-key too short",
                vec![("x-api-key", "mr_short".to_string())],
            ),
            ("huge key", vec![("x-api-key", long.clone())]),
            (
                "two different keys",
                vec![
                    ("authorization", bearer(&app.admin_key)),
                    ("x-api-key", real.expose().to_string()),
                ],
            ),
        ] {
            let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            expect_401(&app, &auth, what).await;
        }
        // A well-formed key nobody issued.
        expect_401(
            &app,
            &[("authorization", &bearer(real.expose()))],
            "unknown key",
        )
        .await;
        expect_401(
            &app,
            &[("x-api-key", real.expose())],
            "unknown key as X-API-Key",
        )
        .await;

        // Revoked.
        let (revoked, revoked_id) = app.create_key("to-revoke", "read", None).await;
        assert_eq!(
            call(
                &app,
                reqwest::Method::GET,
                "/api/v1/messages",
                &[("x-api-key", &revoked)]
            )
            .await
            .0,
            200
        );
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/keys/{revoked_id}")))
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), 200);
        expect_401(&app, &[("authorization", &bearer(&revoked))], "revoked key").await;

        // Expired.
        let (expired, _) = app.create_key("short-lived", "read", Some("1s")).await;
        assert_eq!(
            call(
                &app,
                reqwest::Method::GET,
                "/api/v1/messages",
                &[("x-api-key", &expired)]
            )
            .await
            .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        expect_401(&app, &[("x-api-key", &expired)], "expired key").await;

        // Too few scopes, and a key for another route: 403 naming the scope.
        let (reader, _) = app.create_key("reader", "read", None).await;
        let (writer, _) = app.create_key("writer", "write", None).await;
        for (key, method, path, needed) in [
            (&reader, reqwest::Method::POST, "/api/v1/messages", "write"),
            (&reader, reqwest::Method::POST, "/process/trigger", "admin"),
            (&reader, reqwest::Method::GET, "/api/v1/keys", "admin"),
            (&writer, reqwest::Method::GET, "/api/v1/messages", "read"),
            (&writer, reqwest::Method::GET, "/metrics", "read"),
        ] {
            let (status, body, headers) = call(
                &app,
                method.clone(),
                path,
                &[("authorization", &bearer(key))],
            )
            .await;
            if path == "/metrics" {
                // Open on loopback binds by default.
                assert_eq!(status, 200);
                continue;
            }
            assert_eq!(status, 403, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "insufficient_scope");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("`{needed}`")),
                "{body}"
            );
            let challenge = headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                challenge.contains("insufficient_scope") && challenge.contains(needed),
                "{challenge}"
            );
        }
        // The writer can do what it is for.
        assert_eq!(
            call(
                &app,
                reqwest::Method::POST,
                "/api/v1/messages",
                &[("x-api-key", &writer)]
            )
            .await
            .0,
            202
        );

        // Rotated: both work during the overlap, only the new one after it.
        let (old, old_id) = app.create_key("rotating", "read", None).await;
        let rotated: Value = app
            .client
            .post(app.url(&format!("/api/v1/keys/{old_id}/rotate")))
            .json(&serde_json::json!({"overlap": "1s"}))
            .send()
            .await
            .expect("rotate")
            .json()
            .await
            .expect("json");
        let new = rotated["key"].as_str().expect("new key").to_string();
        assert_eq!(rotated["previous"]["status"], "expiring", "{rotated}");
        for key in [&old, &new] {
            assert_eq!(
                call(
                    &app,
                    reqwest::Method::GET,
                    "/api/v1/messages",
                    &[("x-api-key", key)]
                )
                .await
                .0,
                200
            );
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        expect_401(
            &app,
            &[("x-api-key", &old)],
            "rotated key after its overlap",
        )
        .await;
        assert_eq!(
            call(
                &app,
                reqwest::Method::GET,
                "/api/v1/messages",
                &[("x-api-key", &new)]
            )
            .await
            .0,
            200
        );

        // Counted by reason.
        let after = app.metrics_text().await;
        for (reason, at_least) in [
            ("missing", 7.0),
            ("malformed", 6.0),
            ("unknown", 2.0),
            ("revoked", 1.0),
            ("expired", 1.0),
            ("rotated", 1.0),
            ("insufficient_scope", 4.0),
        ] {
            let series = format!("auth_failures_total{{reason=\"{reason}\"}}");
            let grew = metric(&after, &series) - metric(&before, &series);
            assert!(
                grew >= at_least,
                "{series} grew by {grew}, expected at least {at_least}"
            );
        }
        // Audited (asynchronously) with the key's public prefix and the address,
        // never the secret.
        let failures = app
            .audit_at_least("action=auth.failure&limit=500", 22)
            .await;
        assert!(
            failures.len() >= 22,
            "{} auth failures audited",
            failures.len()
        );
        let text = serde_json::to_string(&failures).expect("json");
        for secret in [&revoked, &expired, &reader, &writer, &old, &typo] {
            assert!(
                !text.contains(&secret[12..]),
                "a secret reached the audit log"
            );
        }
        let revoked_prefix = &revoked[..11];
        assert!(failures.iter().any(|f| f["actor"] == revoked_prefix
            && f["details"]["reason"] == "revoked"
            && f["ip"] == "127.0.0.1"));
        app.stop().await;
    }
);

backend_test!(
    headers_that_try_to_smuggle_or_overflow_are_refused,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let key = app.admin_key.clone();
        let wait = Duration::from_secs(2);
        // A folded (obs-fold) header line could hide a second header in the
        // first; a CR without LF, a NUL: the parser refuses them all.
        for (what, head) in [
        ("obs-fold", format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-API-Key: mr_nothing\r\n X-API-Key: {key}\r\n\r\n")),
        ("bare CR", format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-API-Key: junk\rAuthorization: Bearer {key}\r\n\r\n")),
        ("NUL in value", format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\0\r\n\r\n")),
    ] {
        let answer = raw_exchange(app.addr, head.as_bytes(), wait).await;
        let status_line = answer.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.1 400") || status_line.starts_with("HTTP/1.1 401") || answer.is_empty(),
            "{what}: {status_line}"
        );
        assert!(!answer.contains("\"items\""), "{what} got in: {answer}");
    }
        // Bytes outside visible ASCII in the credential: 401 malformed.
        let mut head = b"GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-API-Key: mr_\xff\xfe\r\nConnection: close\r\n\r\n".to_vec();
        let answer = raw_exchange(app.addr, &head, wait).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("\"unauthorized\""));
        // Two Authorization headers, even both valid-looking: ambiguous, refused.
        head = format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").into_bytes();
        let answer = raw_exchange(app.addr, &head, wait).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        // Oversized request heads: one huge header, or very many.
        let huge = format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nAuthorization: Bearer {key}\r\n\r\n", "a".repeat(64 * 1024));
        let answer = raw_exchange(app.addr, huge.as_bytes(), wait).await;
        assert!(
            answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
            "{}",
            answer.lines().next().unwrap_or_default()
        );
        let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
        let answer = raw_exchange(
        app.addr,
        format!("GET /api/v1/messages HTTP/1.1\r\nHost: x\r\n{many}Authorization: Bearer {key}\r\n\r\n").as_bytes(),
        wait,
    )
    .await;
        assert!(
            answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
            "{}",
            answer.lines().next().unwrap_or_default()
        );
        // The server is unharmed.
        assert_eq!(app.get_json("/api/v1/messages").await.0, 200);
        app.stop().await;
    }
);

backend_test!(keys_api_issues_lists_rotates_and_revokes, |db| async move {
    let app = TestApp::spawn(&db).await;
    let (key, id) = app.create_key("ci-bot", "read,write", Some("90d")).await;
    assert!(key.starts_with("mr_") && key.len() == 52, "{key}");
    // Names are unique among live keys.
    let dup = app
        .client
        .post(app.url("/api/v1/keys"))
        .json(&serde_json::json!({"name": "ci-bot", "scopes": ["read"]}))
        .send()
        .await
        .expect("post");
    assert_eq!(dup.status(), 409);
    // Bad requests are 400 with the field named.
    for (body, field) in [
        (serde_json::json!({"name": "x", "scopes": "root"}), "scopes"),
        (serde_json::json!({"name": "x", "scopes": []}), "scopes"),
        (
            serde_json::json!({"name": "bad name", "scopes": "read"}),
            "name",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "read", "expires_in": "soon"}),
            "expires_in",
        ),
        (
            serde_json::json!({"name": "x", "scopes": "read", "extra": 1}),
            "extra",
        ),
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/keys"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.expect("json");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{v}"
        );
    }
    // Used once, so it has a last-used time; the listing never holds a secret.
    let used = client_with_key(&key);
    assert_eq!(status(&used, app.url("/api/v1/messages")).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, list) = app.get_json("/api/v1/keys").await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(!text.contains(&key[11..]), "the listing shows a secret");
    assert!(!text.contains("hash"), "the listing shows a hash");
    let mine = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(mine["prefix"], &key[..11]);
    assert_eq!(mine["scopes"], serde_json::json!(["read", "write"]));
    assert_eq!(mine["status"], "active");
    assert!(mine["expires_at"].is_string());
    assert!(mine["last_used_at"].is_string(), "{mine}");
    // Rotate by name; revoke by prefix.
    let r = app
        .client
        .post(app.url("/api/v1/keys/ci-bot/rotate"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().await.expect("json");
    assert_eq!(rotated["name"], "ci-bot");
    assert_eq!(rotated["scopes"], serde_json::json!(["read", "write"]));
    assert!(
        rotated["expires_at"].is_string(),
        "the successor keeps the lifetime"
    );
    let new_prefix = rotated["prefix"].as_str().expect("prefix").to_string();
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/keys/{new_prefix}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let missing = app
        .client
        .delete(app.url("/api/v1/keys/nothing-like-this"))
        .send()
        .await
        .expect("revoke");
    assert_eq!(missing.status(), 404);
    let actions: Vec<String> = app
        .audit("action=key.*")
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for expected in ["key.create", "key.rotate", "key.revoke"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} not in {actions:?}"
        );
    }
    app.stop().await;
});

backend_test!(ops_endpoints_close_when_configured, |db| async move {
    let app = TestApp::spawn_with(&db, &[("auth.open_ops_endpoints", "false")]).await;
    for path in ["/metrics", "/health/detailed"] {
        let r = app.anonymous.get(app.url(path)).send().await.expect("get");
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(status(&app.client, app.url(path)).await, 200);
    }
    assert_eq!(status(&app.anonymous, app.url("/health")).await, 200);
    app.stop().await;
});

backend_test!(
    insecure_mode_opens_everything_and_says_so,
    |db| async move {
        let app = TestApp::spawn_with(&db, &[("auth.insecure_no_auth", "true")]).await;
        let r = app
            .anonymous
            .get(app.url("/api/v1/messages"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        let (_, health) = app.get_json("/health/detailed").await;
        assert_eq!(health["components"]["auth"]["status"], "disabled");
        app.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_response_and_cors_closed_by_default() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    for (client, path, status) in [
        (&app.client, "/api/v1/messages", 200),
        (&app.anonymous, "/api/v1/messages", 401),
        (&app.client, "/api/v1/nothing", 404),
        (&app.anonymous, "/health", 200),
    ] {
        let r = client.get(app.url(path)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .contains("default-src 'none'"));
        if path.starts_with("/api/") {
            assert_eq!(h["cache-control"], "no-store", "{path}");
        }
    }
    let preflight = app
        .anonymous
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/messages"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    app.stop().await;

    let db = TestDb::sqlite();
    let app =
        TestApp::spawn_with(&db, &[("http.cors_allowed_origins", "https://app.example")]).await;
    let preflight = |origin: &'static str| {
        app.anonymous
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/messages"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_greedy_clients_cannot_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(
        &db,
        &[
            ("http.header_timeout_seconds", "1"),
            ("http.request_timeout_seconds", "2"),
            ("http.max_connections_per_ip", "4"),
        ],
    )
    .await;
    // Slowloris: headers trickle in and never end. The server hangs up.
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /api/v1/messages HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let _ = slow.write_all(b"X-Slow: 1\r\n").await;
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => break,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow headers held the connection"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A body that never finishes: 408 with a JSON body once the request
    // deadline passes.
    let key = app.admin_key.clone();
    let answer = raw_exchange(
        app.addr,
        format!("POST /process/trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"ids\":").as_bytes(),
        Duration::from_secs(4),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // Connections per address are capped: the fifth idle one is refused
    // with a 429, the others stay usable.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(app.addr)
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&app.anonymous, app.url("/health")).await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gives_its_connection_up() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::sqlite();
    let app = TestApp::spawn_with(
        &db,
        &[
            ("http.write_timeout_seconds", "1"),
            ("http.max_connections_per_ip", "1"),
            ("rate_limit.ip_burst", "1000000"),
            ("rate_limit.ip_per_second", "1000000"),
        ],
    )
    .await;
    // Thousands of pipelined requests whose responses are never read: the
    // socket buffers fill and the server's writes stall.
    let mut stalled = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40_000);
    let writer = tokio::spawn(async move {
        let _ = stalled.write_all(&requests).await;
        // Keep the connection open, unread.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stalled);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its one connection per address is taken.
    let answer = raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(1),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // Within the write timeout (and a margin) the server gives up on it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = raw_exchange(
            app.addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(1),
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled connection is still held: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.abort();
    app.stop().await;
}
