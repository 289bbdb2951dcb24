use serde_json::Value;

use crate::{backend_test, support::*};

backend_test!(ingest_fetch_raw_and_delete, |db| async move {
    let app = TestApp::spawn(&db).await;
    let raw = "From: Ann Example <Ann@Example.com>\r\nTo: bob@example.org\r\nCc: carol@example.net\r\nReply-To: replies@example.com\r\n\
Subject: Invoice 42\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <inv-42@example.com>\r\nIn-Reply-To: <prev@example.com>\r\n\
References: <root@example.com> <prev@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>Please pay at <a href=\"https://pay.example.com/42\">our portal</a></p>\r\n\
--b\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\n\r\n%PDF-1.4\r\n--b--\r\n";
    let response = app.post_message(raw).await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().get("location").is_some());
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().expect("id").to_string();

    let m = app.wait_for_status(&id, "processed").await;
    let parsed = &m["parsed"];
    assert_eq!(parsed["from"]["address"], "Ann@Example.com");
    assert_eq!(parsed["from"]["name"], "Ann Example");
    assert_eq!(parsed["to"][0]["address"], "bob@example.org");
    assert_eq!(parsed["cc"][0]["address"], "carol@example.net");
    assert_eq!(parsed["reply_to"][0]["address"], "replies@example.com");
    assert_eq!(parsed["subject"], "Invoice 42");
    assert_eq!(parsed["date"], "2026-11-23T10:00:00Z");
    assert_eq!(parsed["message_id"], "inv-42@example.com");
    assert_eq!(parsed["in_reply_to"][0], "prev@example.com");
    assert_eq!(parsed["references"].as_array().map(Vec::len), Some(2));
    assert_eq!(parsed["text_from_html"], true);
    assert!(parsed["text_body"]
        .as_str()
        .unwrap_or_default()
        .contains("Please pay"));
    assert_eq!(parsed["attachments"][0]["name"], "invoice.pdf");
    assert_eq!(parsed["attachments"][0]["content_type"], "application/pdf");
    assert_eq!(parsed["links"][0], "https://pay.example.com/42");
    assert_eq!(
        m["from"], "ann@example.com",
        "listing column is lower-cased"
    );
    let history = m["history"].as_array().expect("history");
    let stages: Vec<&str> = history.iter().filter_map(|h| h["stage"].as_str()).collect();
    assert_eq!(stages, ["parse", "score"]);
    assert!(history.iter().all(|h| h["outcome"] == "ok"), "{m}");
    assert!(
        parsed["score"]["action"].is_string(),
        "the report is stored: {m}"
    );
    assert!(m["job"].is_null(), "finished jobs are removed: {m}");

    let raw_back = app
        .client
        .get(app.url(&format!("/api/v1/messages/{id}/raw")))
        .send()
        .await
        .expect("raw");
    assert_eq!(raw_back.headers()["content-type"], "message/rfc822");
    assert_eq!(
        raw_back.bytes().await.expect("bytes").as_ref(),
        raw.as_bytes()
    );

    assert_eq!(app.delete(&id).await, 204);
    let (status, body) = app.get_json(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.get_json(&format!("/api/v1/messages/{id}/raw")).await;
    assert_eq!(status, 404);
    assert_eq!(app.delete(&id).await, 404);
    // Deleting erased the content too: the same bytes are new again.
    assert_eq!(app.post_message(raw).await.status(), 202);
    app.stop().await;
});

backend_test!(
    duplicates_answer_200_with_the_existing_id,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let raw = email(1, "a@example.com", "hello", "same bytes");
        let id = app.ingest(raw.clone()).await;
        for content_type in ["message/rfc822", "application/octet-stream", "text/plain"] {
            let response = app
                .client
                .post(app.url("/api/v1/messages"))
                .header("content-type", content_type)
                .body(raw.clone())
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["duplicate"], true);
            assert_eq!(body["id"], id.as_str());
        }
        let (_, list) = app.get_json("/api/v1/messages").await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
        app.stop().await;
    }
);

backend_test!(listing_filters_and_cursor_pagination, |db| async move {
    let app = TestApp::spawn(&db).await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let (from, subject, body) = if n % 2 == 0 {
            (
                "billing@acme.test",
                format!("Invoice {n}"),
                "Your payment is due",
            )
        } else {
            (
                "friend@example.org",
                format!("Lunch {n}"),
                "Tacos on Friday? 100% yes_please",
            )
        };
        ids.push(app.ingest(email(n, from, &subject, body)).await);
    }
    for id in &ids {
        app.wait_for_status(id, "processed").await;
    }

    // Pages of 3 walk every message once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/messages?limit=3&cursor={c}"),
            None => "/api/v1/messages?limit=3".to_string(),
        };
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let count = |v: &Value| v["items"].as_array().map(Vec::len).unwrap_or(0);
    let (_, by_from) = app.get_json("/api/v1/messages?from=ACME.test").await;
    assert_eq!(count(&by_from), 4);
    let (_, by_q) = app.get_json("/api/v1/messages?q=tacos").await;
    assert_eq!(count(&by_q), 3);
    let (_, by_subject) = app.get_json("/api/v1/messages?q=invoice%204").await;
    assert_eq!(count(&by_subject), 1);
    let (_, wildcard) = app.get_json("/api/v1/messages?q=100%25%20yes_p").await;
    assert_eq!(count(&wildcard), 3, "LIKE wildcards in q are literal");
    let (_, none) = app.get_json("/api/v1/messages?q=%25_").await;
    assert_eq!(count(&none), 0);
    let (_, processed) = app.get_json("/api/v1/messages?status=processed").await;
    assert_eq!(count(&processed), 7);
    let (_, queued) = app.get_json("/api/v1/messages?status=queued").await;
    assert_eq!(count(&queued), 0);
    let (_, future) = app.get_json("/api/v1/messages?since=2999-01-01").await;
    assert_eq!(count(&future), 0);
    let (_, past) = app
        .get_json("/api/v1/messages?until=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(count(&past), 0);
    let (_, window) = app
        .get_json("/api/v1/messages?since=2000-01-01&until=2999-01-01")
        .await;
    assert_eq!(count(&window), 7);

    let long_q = format!("q={}", "x".repeat(5_000));
    for bad in [
        "status=bogus",
        "limit=0",
        "limit=abc",
        "since=yesterday",
        "cursor=../../etc",
        "q=%00",
        "from=a%00b",
        "q=%1b[31m",
        long_q.as_str(),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/messages?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{bad}");
    }
    app.stop().await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_erases_the_content_from_the_sqlite_files() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let marker = format!("ERASE-ME-{}", uuid::Uuid::now_v7().simple());
    let keep = app
        .ingest(email(1, "keep@example.com", "keep", "an unrelated message"))
        .await;
    let id = app
        .ingest(email(
            2,
            "gone@example.com",
            &marker,
            &format!("secret {marker} body"),
        ))
        .await;
    app.wait_for_status(&keep, "processed").await;
    app.wait_for_status(&id, "processed").await;
    assert_eq!(app.delete(&id).await, 204);
    app.stop().await;

    let folder = db.dir().join("db");
    for entry in std::fs::read_dir(&folder).expect("db folder") {
        let path = entry.expect("entry").path();
        // SQLite may still be removing its -wal/-shm files as the last
        // connection closes; a file that is gone holds nothing.
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            read => read.expect("read"),
        };
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!found, "deleted content still in {}", path.display());
    }
}
