//! Protection through the real binary: keys from the CLI, secure defaults at
//! start-up, and logs that never hold a secret or a message body.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{backend_test, support::*};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn status_with(key: &str, url: String) -> u16 {
    client_with_key(key)
        .get(url)
        .send()
        .await
        .expect("get")
        .status()
        .as_u16()
}

/// Polls until `key` stops working (the server caches keys for 5 s).
async fn until_refused(key: &str, url: String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while status_with(key, url.clone()).await != 401 {
        assert!(Instant::now() < deadline, "key still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

backend_test!(cli_keys_drive_a_running_server, |db| async move {
    let created = run_cli(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "ops",
            "--scopes",
            "read",
            "--expires",
            "30d",
        ],
        &[],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = stdout(&created);
    assert!(key.starts_with("mr_") && key.len() == 52, "{key}");
    assert!(String::from_utf8_lossy(&created.stderr).contains("shown only this once"));
    let bad = run_cli(
        &db,
        &["keys", "create", "--name", "x", "--scopes", "root"],
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));

    let listed = stdout(&run_cli(&db, &["keys", "list"], &[]));
    assert!(
        listed.contains("ops") && listed.contains(&key[..11]),
        "{listed}"
    );
    assert!(!listed.contains(&key[11..]), "the listing shows the secret");
    let json: Value =
        serde_json::from_str(&stdout(&run_cli(&db, &["keys", "list", "--json"], &[])))
            .expect("json");
    assert_eq!(json[0]["name"], "ops");

    let server = ServerProcess::start(&db, &[]);
    let messages = server.url("/api/v1/messages");
    assert_eq!(status_with(&key, messages.clone()).await, 200);
    let write = client_with_key(&key)
        .post(messages.clone())
        .header("content-type", "message/rfc822")
        .body(email(1, "a@example.com", "hi", "body"))
        .send()
        .await
        .expect("post");
    assert_eq!(write.status(), 403);

    // Rotation from the CLI: both keys work during the overlap; the old
    // one stops after it.
    let rotated = run_cli(&db, &["keys", "rotate", "ops", "--overlap", "2s"], &[]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new = stdout(&rotated);
    assert_eq!(status_with(&new, messages.clone()).await, 200);
    assert_eq!(status_with(&key, messages.clone()).await, 200);
    until_refused(&key, messages.clone()).await;
    assert_eq!(status_with(&new, messages.clone()).await, 200);

    // Revocation from the CLI reaches the running server.
    let revoked = run_cli(&db, &["keys", "revoke", &new[..11]], &[]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    until_refused(&new, messages.clone()).await;
    let unknown = run_cli(&db, &["keys", "revoke", "no-such-key"], &[]);
    assert!(!unknown.status.success());
});

backend_test!(
    a_reachable_server_without_keys_refuses_to_start,
    |db| async move {
        let failed = ServerProcess::launch(&db, &["--bind", "0.0.0.0:0"], &[]);
        let logs = match failed {
            Ok(_) => panic!("a server on 0.0.0.0 without keys started"),
            Err(logs) => logs.join("\n"),
        };
        assert!(logs.contains("refusing to listen"), "{logs}");
        // Explicitly insecure: it starts, and says so.
        let open = ServerProcess::launch(&db, &["--bind", "0.0.0.0:0", "--insecure-no-auth"], &[])
            .expect("starts");
        assert!(open
            .log_lines()
            .iter()
            .any(|l| l.contains("AUTHENTICATION IS DISABLED")));
        let port = open.addr.port();
        let r = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/messages"))
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        drop(open);
        // A configured key is enough.
        let keyed = ServerProcess::launch(
            &db,
            &["--bind", "0.0.0.0:0"],
            &[("MAILROOM_API_KEYS".into(), PROCESS_ADMIN_KEY.into())],
        )
        .expect("starts");
        let url = format!("http://127.0.0.1:{}/api/v1/messages", keyed.addr.port());
        assert_eq!(status_with(PROCESS_ADMIN_KEY, url.clone()).await, 200);
        assert_eq!(reqwest::get(url).await.expect("get").status(), 401);
    }
);

backend_test!(
    first_loopback_start_prints_an_admin_key_once,
    |db| async move {
        let first = ServerProcess::launch(&db, &["--bind", "127.0.0.1:0"], &[]).expect("starts");
        let deadline = Instant::now() + Duration::from_secs(5);
        let key = loop {
            if let Some(k) = first
                .stdout_lines()
                .iter()
                .map(|l| l.trim().to_string())
                .find(|l| l.starts_with("mr_"))
            {
                break k;
            }
            assert!(
                Instant::now() < deadline,
                "no key printed: {:?}",
                first.stdout_lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status_with(&key, first.url("/api/v1/keys")).await, 200);
        // The key is printed, never logged.
        assert!(!first.log_lines().iter().any(|l| l.contains(&key[11..])));
        drop(first);
        let second = ServerProcess::launch(&db, &["--bind", "127.0.0.1:0"], &[]).expect("starts");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.stdout_lines().iter().any(|l| l.contains("mr_")),
            "a second key was printed"
        );
        assert_eq!(status_with(&key, second.url("/api/v1/keys")).await, 200);
    }
);

backend_test!(logs_never_hold_secrets_or_message_bodies, |db| async move {
    let data_key = stdout(&run_cli(&db, &["keys", "generate-data-key"], &[]));
    let cli_key = stdout(&run_cli(
        &db,
        &["keys", "create", "--name", "cli", "--scopes", "admin"],
        &[],
    ));
    let configured = format!("configured-{}", "s3cr3t".repeat(8));
    let mut env: Vec<(String, String)> = vec![
        (
            "MAILROOM_API_KEYS".into(),
            format!("{PROCESS_ADMIN_KEY},read:{configured}"),
        ),
        ("MAILROOM_DATA_KEY".into(), data_key.clone()),
        ("LOG_LEVEL".into(), "debug".into()),
    ];
    env.push(("MAILROOM_FAULT_INJECTION".into(), "false".into()));
    let server = ServerProcess::launch(&db, &["--bind", "127.0.0.1:0"], &env).expect("starts");
    let admin = client_with_key(&cli_key);
    let marker = format!("BODY-MARKER-{}", uuid::Uuid::now_v7().simple());
    let id = server
        .ingest(
            &admin,
            email(
                1,
                "a@example.com",
                "quarterly numbers",
                &format!("the figures are {marker}"),
            ),
        )
        .await;
    let m = server
        .wait_processed(&admin, &id, Instant::now() + Duration::from_secs(10))
        .await;
    assert!(m["parsed"]["text_body"]
        .as_str()
        .unwrap_or_default()
        .contains(&marker));
    // A key issued over the API, then rotated; a wrong key; a configured key.
    let created = server
        .post_json(
            &admin,
            "/api/v1/keys",
            Some(serde_json::json!({"name": "api", "scopes": "read"})),
        )
        .await;
    let api_key = created["key"].as_str().expect("key").to_string();
    let rotated = server
        .post_json(&admin, "/api/v1/keys/api/rotate", None)
        .await;
    let rotated_key = rotated["key"].as_str().expect("key").to_string();
    let guess = mailroom_security::ApiKeySecret::generate();
    for key in [
        api_key.as_str(),
        guess.expose(),
        configured.as_str(),
        "not-even-a-key-but-long-enough-to-count",
    ] {
        let _ = status_with(key, server.url("/api/v1/messages")).await;
    }
    assert_eq!(
        status_with(&configured, server.url("/api/v1/messages")).await,
        200
    );
    let _ = admin
        .get(server.url(&format!("/api/v1/messages/{id}/raw")))
        .send()
        .await;
    let _ = admin
        .get(server.url(&format!("/api/v1/messages?q={marker}")))
        .send()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.log_lines().join("\n");
    assert!(
        logs.contains("authentication refused"),
        "the refusals are logged"
    );
    for (what, secret) in [
        ("message body", marker.as_str()),
        ("data key", data_key.as_str()),
        ("CLI key", &cli_key[11..]),
        ("API key", &api_key[11..]),
        ("rotated key", &rotated_key[11..]),
        ("guessed key", &guess.expose()[11..]),
        ("configured key", &configured[10..]),
        ("provisioned admin key", &PROCESS_ADMIN_KEY[10..]),
    ] {
        assert!(!logs.contains(secret), "the logs contain the {what}");
    }
});
