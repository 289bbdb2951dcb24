//! Encryption at rest: what is on disk cannot be read with grep, and the
//! data key can be rotated under load without losing a message.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mailroom_security::DataKey;
use serde_json::Value;
use sqlx::Connection;

use crate::{backend_test, support::*};

/// Every stored byte where a body could hide, as one searchable blob: the
/// SQLite files (database, WAL, shared memory), or PostgreSQL's rows in
/// their text form (bytea as hex, so the hex of the marker is searched too).
async fn stored_bytes(db: &TestDb) -> Vec<u8> {
    if !db.is_postgres() {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(db.dir().join("db")).expect("db folder") {
            all.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
        }
        return all;
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("connect");
    let mut all = Vec::new();
    for table in [
        "messages",
        "message_raw",
        "processing_steps",
        "jobs",
        "audit_log",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(&mut conn)
            .await
            .expect("rows as text");
        for row in rows {
            all.extend(row.into_bytes());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let hex = hex_of(needle);
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
        || haystack.windows(hex.len()).any(|w| w == hex.as_bytes())
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The message reads back whole: its body in the parsed view, its bytes.
async fn assert_intact(app: &TestApp, id: &str, raw: &str, marker: &str) {
    let m = app.message(id).await;
    assert!(m["parsed"]["text_body"]
        .as_str()
        .unwrap_or_default()
        .contains(marker));
    assert_eq!(app.raw(id).await, raw.as_bytes());
}

async fn marked_message(app: &TestApp, marker: &str) -> (String, String) {
    let raw = email(
        7,
        "cfo@example.com",
        "quarterly numbers",
        &format!("Confidential: the figures are {marker}.\r\nRegards"),
    );
    let id = app.ingest(raw.clone()).await;
    app.wait_for_status(&id, "processed").await;
    (id, raw)
}

backend_test!(stored_bodies_cannot_be_found_with_grep, |db| async move {
    let (_, material) = DataKey::generate();
    let marker = format!("SEALED-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::spawn_with(&db, &[("encryption.data_key", &material)]).await;
    let (id, raw) = marked_message(&app, &marker).await;

    // Readable through the API, byte for byte, and searchable.
    assert_intact(&app, &id, &raw, &marker).await;
    let (_, found) = app
        .get_json(&format!("/api/v1/messages?q={}", marker.to_lowercase()))
        .await;
    assert_eq!(found["items"][0]["id"], id.as_str(), "{found}");
    let (_, none) = app.get_json("/api/v1/messages?q=no-such-words-here").await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let (_, health) = app.get_json("/health/detailed").await;
    assert_eq!(health["encryption"], "healthy");
    assert_eq!(
        health["components"]["encryption"]["algorithm"],
        "AES-256-GCM"
    );

    // Not on disk, while the server runs (WAL included) and after it stopped.
    assert!(
        !contains(&stored_bytes(&db).await, &marker),
        "the body is readable in the store"
    );
    app.stop().await;
    assert!(
        !contains(&stored_bytes(&db).await, &marker),
        "the body is readable in the store"
    );

    // The same search finds a body stored without a key: the check can fail.
    let plain_db = if db.is_postgres() {
        TestDb::postgres().await.expect("postgres")
    } else {
        TestDb::sqlite()
    };
    let plain = TestApp::spawn(&plain_db).await;
    marked_message(&plain, &marker).await;
    let (_, health) = plain.get_json("/health/detailed").await;
    assert_eq!(health["encryption"], "disabled");
    assert!(
        contains(&stored_bytes(&plain_db).await, &marker),
        "control: a clear body is found"
    );
    plain.stop().await;
    plain_db.drop_database().await;
});

/// Messages under each data key id, in raw bytes and in sealed views.
async fn keys_in_use(db: &TestDb) -> (HashMap<String, i64>, HashMap<String, i64>) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("connect");
    let count = |rows: Vec<(Option<String>, i64)>| {
        rows.into_iter()
            .map(|(k, n)| (k.unwrap_or_else(|| "clear".into()), n))
            .collect::<HashMap<_, _>>()
    };
    let raw = sqlx::query_as("SELECT key_id, COUNT(*) FROM message_raw GROUP BY key_id")
        .fetch_all(&mut conn)
        .await
        .expect("raw keys");
    let views = sqlx::query_as(
        "SELECT sealed_key_id, COUNT(*) FROM messages WHERE view_json IS NOT NULL OR sealed_view IS NOT NULL GROUP BY sealed_key_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("view keys");
    (count(raw), count(views))
}

backend_test!(
    data_key_rotation_under_load_loses_nothing,
    |db| async move {
        let key_file = db.dir().join("data-keys");
        let (old, material) = DataKey::generate();
        std::fs::write(&key_file, format!("{material}\n")).expect("key file");
        let file_env = ("encryption.key_file", key_file.to_str().expect("path"));
        let server = ServerProcess::start(&db, &[file_env]);
        let client = process_client();
        let mut sent: HashMap<String, String> = HashMap::new();
        for n in 0..60 {
            let raw = email(
                n,
                "before@example.com",
                "before rotation",
                &format!("message {n} before"),
            );
            sent.insert(server.ingest(&client, raw.clone()).await, raw);
        }
        // Load while the key rotates: four senders, 240 more messages.
        let url = server.url("/api/v1/messages");
        let mut senders = Vec::new();
        for sender in 0..4 {
            let (client, url) = (client.clone(), url.clone());
            senders.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..60 {
                    let raw = email(
                        1000 + sender * 100 + n,
                        "during@example.com",
                        "during rotation",
                        &format!("sender {sender} message {n}"),
                    );
                    let r = client
                        .post(&url)
                        .header("content-type", "message/rfc822")
                        .body(raw.clone())
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(r.status(), 202);
                    let v: Value = r.json().await.expect("json");
                    mine.push((v["id"].as_str().expect("id").to_string(), raw));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                mine
            }));
        }
        let cli_db = db.clone();
        let key_file_env = key_file.display().to_string();
        let rotation = tokio::task::spawn_blocking(move || {
            run_cli(
                &cli_db,
                &["keys", "rotate-data-key", "--new-key"],
                &[("MAILROOM_DATA_KEY_FILE", &key_file_env)],
            )
        });
        for s in senders {
            sent.extend(s.await.expect("sender"));
        }
        let out = rotation.await.expect("rotation");
        let report = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "rotate-data-key failed: {report}");
        let resealed: u64 = report
            .split("done: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            resealed >= 60,
            "the records stored before the rotation were re-encrypted: {report}"
        );
        let text = std::fs::read_to_string(&key_file).expect("key file");
        let new = DataKey::parse(
            text.lines()
                .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
                .expect("a key"),
        )
        .expect("new key");
        assert_ne!(new.id(), old.id());

        // Every acknowledged message is there, processed, byte for byte.
        let deadline = Instant::now() + Duration::from_secs(60);
        for (id, raw) in &sent {
            server.wait_processed(&client, id, deadline).await;
            assert_eq!(server.raw(&client, id).await, raw.as_bytes(), "{id}");
        }
        assert_eq!(sent.len(), 300);
        // Views written after the pass are sealed by the server under the new key.
        let settle = Instant::now() + Duration::from_secs(10);
        loop {
            let (raw, views) = keys_in_use(&db).await;
            let only_new = |m: &HashMap<String, i64>| m.keys().all(|k| k == new.id().as_str());
            if only_new(&raw) && only_new(&views) {
                assert_eq!(raw.values().sum::<i64>(), 300);
                break;
            }
            assert!(
                Instant::now() < settle,
                "records under other keys remain: {raw:?} {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(server);

        // The old key is no longer needed: with only the new one, all is readable.
        std::fs::write(
            &key_file,
            format!("{}\n", text.lines().last().expect("line")),
        )
        .expect("rewrite");
        let server = ServerProcess::start(&db, &[file_env]);
        for (id, raw) in sent.iter().take(40) {
            let m = server
                .get_json(&client, &format!("/api/v1/messages/{id}"))
                .await;
            assert!(m["parsed"]["subject"].is_string(), "{m}");
            assert_eq!(server.raw(&client, id).await, raw.as_bytes());
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_encryption_later_seals_the_mail_already_stored() {
    let db = TestDb::sqlite();
    let marker = format!("LATER-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::spawn(&db).await;
    let (id, raw) = marked_message(&app, &marker).await;
    app.stop().await;
    assert!(contains(&stored_bytes(&db).await, &marker));

    let (_, material) = DataKey::generate();
    let out = run_cli(
        &db,
        &["keys", "rotate-data-key"],
        &[("MAILROOM_DATA_KEY", &material)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 records re-encrypted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !contains(&stored_bytes(&db).await, &marker),
        "the clear copy survived sealing"
    );

    let app = TestApp::spawn_with(&db, &[("encryption.data_key", &material)]).await;
    assert_intact(&app, &id, &raw, &marker).await;
    app.stop().await;

    // Without the key, sealed mail cannot be read: a clear error, no crash.
    let app = TestApp::spawn(&db).await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/messages/{id}/raw")))
        .send()
        .await
        .expect("raw");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("data key"));
    app.stop().await;

    // A rotation with a keyring that cannot open them leaves them as they
    // are, and says so.
    let (_, other) = DataKey::generate();
    let out = run_cli(
        &db,
        &["keys", "rotate-data-key"],
        &[("MAILROOM_DATA_KEY", &other)],
    );
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("2 records cannot be opened"), "{report}");
    let app = TestApp::spawn_with(&db, &[("encryption.data_key", &material)]).await;
    assert_intact(&app, &id, &raw, &marker).await;
    app.stop().await;
}
