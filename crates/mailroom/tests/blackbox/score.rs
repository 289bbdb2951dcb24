//! Scoring through its real surfaces: `POST /api/v1/score`, rspamd's
//! `POST /checkv2`, `POST /api/v1/learn/*`, the pipeline's score stage and
//! the `mailroom score|train|learn` commands.

use std::fs;

use serde_json::Value;

use crate::support::*;

/// A phishing-shaped message: a link to a bare IP behind anchor text that
/// shows a bank's domain, and an executable attachment.
fn phish(n: usize) -> String {
    format!(
        "From: Security Team <alerts@bank-example.com>\r\nTo: user@example.org\r\nSubject: Verify your account {n}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <phish-{n}@bank-example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Your account is locked. <a href=\"http://192.0.2.7/login\">https://www.mybank.com/login</a></p>\r\n--b\r\nContent-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--b--\r\n"
    )
}

fn names(report: &Value) -> Vec<String> {
    report["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

/// Every point of the score is a symbol's: the total is their sum.
fn assert_explained(report: &Value) {
    let sum: f64 = report["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["score"].as_f64().expect("score"))
        .sum();
    let score = report["score"].as_f64().expect("score");
    assert!((sum - score).abs() < 0.011, "{sum} vs {score}");
}

async fn post_raw(app: &TestApp, path: &str, raw: String) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

#[tokio::test]
async fn score_endpoint_explains_every_point_and_stores_nothing() {
    let db = TestDb::sqlite();
    let model = db.dir().join("model.mrmodel");
    let app =
        TestApp::spawn_with(&db, &[("score.model_path", model.to_str().expect("path"))]).await;

    let (status, report) = post_raw(&app, "/api/v1/score", phish(1)).await;
    assert_eq!(status, 200, "{report}");
    let fired = names(&report);
    for expected in [
        "URL_IP_HOST",
        "URL_ANCHOR_MISMATCH",
        "ATTACH_DOUBLE_EXT",
        "ATTACH_EXECUTABLE",
    ] {
        assert!(
            fired.contains(&expected.to_string()),
            "{expected} not in {fired:?}"
        );
    }
    assert_explained(&report);
    assert!(report["is_spam"].as_bool().expect("is_spam"));
    assert_eq!(report["required_score"], 15.0);
    let p = report["model"]["probability"]
        .as_f64()
        .expect("probability");
    assert!((0.0..=1.0).contains(&p));
    let anchor = report["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .find(|s| s["name"] == "URL_ANCHOR_MISMATCH")
        .expect("anchor symbol");
    let evidence = anchor["options"].to_string();
    assert!(
        evidence.contains("192.0.2.7"),
        "evidence names the link: {evidence}"
    );

    let (_, listed) = app.get_json("/api/v1/messages").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );

    // Bad input: clear 4xx with a JSON error naming the problem.
    let (status, body) = post_raw(&app, "/api/v1/score", String::new()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("empty_body"))
    );
    let (status, body) = post_raw(&app, "/api/v1/score?profile=nope", phish(2)).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("nope"));
    let (status, _) = post_raw(&app, "/api/v1/score", "\u{0}\u{1}binary".repeat(10)).await;
    assert_eq!(status, 422);
    let response = app
        .client
        .post(app.url("/api/v1/score"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 415);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metric(&metrics, "mail_score_processing_time_count") >= 1.0);
    app.stop().await;
}

/// A `/checkv2` request as rspamc sends it: envelope headers, no Content-Type.
async fn checkv2(app: &TestApp, headers: &[(&str, &str)], raw: String) -> (u16, Value) {
    let mut request = app.client.post(app.url("/checkv2")).body(raw);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

#[tokio::test]
async fn checkv2_speaks_rspamds_protocol() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    // rspamc and MTAs send the envelope as headers and no particular
    // Content-Type.
    let (status, reply) = checkv2(
        &app,
        &[
            ("IP", "192.0.2.1"),
            ("Helo", "mail.example.net"),
            ("From", "alerts@bank-example.com"),
            ("Rcpt", "user@example.org"),
            ("Settings-ID", "inbound"),
        ],
        phish(3),
    )
    .await;
    assert_eq!(status, 200);
    for field in [
        "is_skipped",
        "score",
        "required_score",
        "action",
        "symbols",
        "milter",
        "message-id",
        "time_real",
    ] {
        assert!(reply.get(field).is_some(), "{field} missing in {reply}");
    }
    assert_eq!(reply["message-id"], "phish-3@bank-example.com");
    let symbol = &reply["symbols"]["URL_IP_HOST"];
    assert_eq!(symbol["name"], "URL_IP_HOST");
    assert!(symbol["metric_score"].is_number());
    assert!(reply["milter"]["add_headers"]["X-Spam-Status"]["value"]
        .as_str()
        .expect("header value")
        .starts_with("Yes, score="));
    assert!(reply["milter"]["remove_headers"].get("X-Spam").is_some());
    let action = reply["action"].as_str().expect("action");
    assert!(
        ["add header", "rewrite subject", "reject"].contains(&action),
        "{action}"
    );

    let (status, error) = checkv2(&app, &[("IP", "not-an-ip")], phish(4)).await;
    assert_eq!(status, 400);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("IP"));
    app.stop().await;
}

#[tokio::test]
async fn learning_moves_the_live_model_persists_it_and_needs_write() {
    let db = TestDb::sqlite();
    let model = db.dir().join("live.mrmodel");
    let app =
        TestApp::spawn_with(&db, &[("score.model_path", model.to_str().expect("path"))]).await;
    let message = email(
        1,
        "newsletter@shop.example",
        "Weekly deals",
        "cheap widgets discount offer today only",
    );
    let probability = |report: &Value| report["model"]["probability"].as_f64().expect("p");
    let (_, before) = post_raw(&app, "/api/v1/score", message.clone()).await;
    let mut last = Value::Null;
    for _ in 0..5 {
        let (status, body) = post_raw(&app, "/api/v1/learn/spam", message.clone()).await;
        assert_eq!(status, 200, "{body}");
        last = body;
    }
    assert_eq!(last["learned"], "spam");
    assert_eq!(last["model"]["online_updates"], 5);
    assert!(
        model.is_file(),
        "the model file is written before the answer"
    );
    let (_, after) = post_raw(&app, "/api/v1/score", message.clone()).await;
    assert!(
        probability(&after) > probability(&before),
        "{} -> {}",
        probability(&before),
        probability(&after)
    );
    let (status, _) = post_raw(&app, "/api/v1/learn/maybe", message.clone()).await;
    assert_eq!(status, 404);

    // A read key may score (an MTA's) but not teach the model.
    let (read, _) = app.create_key("reader", "read", None).await;
    let reader = client_with_key(&read);
    let scored = reader
        .post(app.url("/api/v1/score"))
        .header("content-type", "message/rfc822")
        .body(message.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(scored.status(), 200);
    let refused = reader
        .post(app.url("/api/v1/learn/ham"))
        .header("content-type", "message/rfc822")
        .body(message)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn the_pipeline_stores_the_report_with_the_message() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let id = app.ingest(phish(5)).await;
    let message = app.wait_for_status(&id, "processed").await;
    let report = &message["parsed"]["score"];
    assert!(
        names(report).contains(&"ATTACH_EXECUTABLE".to_string()),
        "{report}"
    );
    assert_explained(report);
    let stages: Vec<&str> = message["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["stage"].as_str())
        .collect();
    assert!(stages.contains(&"score"), "{stages:?}");
    app.stop().await;
}

#[test]
fn score_train_and_learn_commands() {
    let db = TestDb::sqlite();
    let dir = db.dir();
    let ham = dir.join("ham");
    let spam = dir.join("spam");
    fs::create_dir_all(ham.join("nested")).expect("dirs");
    fs::create_dir_all(&spam).expect("dirs");
    for n in 0..12 {
        fs::write(
            ham.join(format!("nested/{n}.eml")),
            email(
                n,
                "colleague@example.org",
                &format!("Meeting notes {n}"),
                "Agenda for the project review, minutes attached.",
            ),
        )
        .expect("write");
        fs::write(spam.join(format!("{n}.eml")), phish(100 + n)).expect("write");
    }
    let model = dir.join("trained.mrmodel");
    let model_arg = model.to_str().expect("path");
    let out = run_cli(
        &db,
        &[
            "train",
            "--quiet",
            "--ham",
            ham.to_str().expect("p"),
            "--spam",
            spam.to_str().expect("p"),
            "--out",
            model_arg,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("12 ham, 12 spam"), "{said}");
    assert!(model.is_file());

    // One JSON line per message, in input order, directories recursive.
    let score = |paths: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["score", "--quiet", "--model", model_arg];
        args.extend(paths);
        run_cli(&db, &args, env)
    };
    let out = score(&[ham.to_str().expect("p"), spam.to_str().expect("p")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 24);
    for line in &lines {
        for field in ["path", "score", "required_score", "action", "is_spam"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        let path = line["path"].as_str().expect("path");
        assert_eq!(
            line["is_spam"].as_bool(),
            Some(path.contains("/spam/")),
            "{line}"
        );
    }
    assert!(lines[0]["path"]
        .as_str()
        .expect("path")
        .contains("nested/0.eml"));

    let out = run_cli(
        &db,
        &[
            "score",
            "--explain",
            "--model",
            model_arg,
            spam.join("0.eml").to_str().expect("p"),
        ],
        &[],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("URL_IP_HOST") && table.contains("Link to a bare IP address"),
        "{table}"
    );

    // A missing path is reported and fails the run; the rest is scored.
    let out = score(
        &["no-such-dir", spam.join("1.eml").to_str().expect("p")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"error\"") && text.contains("\"score\""),
        "{text}"
    );

    // A file over max_message_bytes is refused by name, not read whole.
    let big = dir.join("big.eml");
    fs::write(&big, phish(7).repeat(40)).expect("write");
    let out = score(
        &[big.to_str().expect("p")],
        &[("MAILROOM_MAX_MESSAGE_BYTES", "2048")],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("larger than max_message_bytes (2048)"),
        "{text}"
    );

    // learn writes the live model (score.model_path) from the trained one.
    let live = dir.join("live.mrmodel");
    fs::copy(&model, &live).expect("copy");
    let env = [("MAILROOM_SCORE_MODEL_PATH", live.to_str().expect("p"))];
    let out = run_cli(
        &db,
        &["learn", "--quiet", "--ham", ham.to_str().expect("p")],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("learned 12 message(s) as ham"));
    assert_ne!(
        fs::read(&live).expect("live"),
        fs::read(&model).expect("trained")
    );

    // Refusals: each must fail and name its cause.
    let empty = dir.join("empty");
    let ham_path = ham.to_str().expect("p");
    for (spam, flag, named) in [
        (empty.to_str().expect("p"), None, "both ham and spam"),
        // FTRL strengths that would make no model are refused before any work.
        (ham_path, Some("--alpha=0"), "--alpha"),
        (ham_path, Some("--l1=-1"), "--l1"),
    ] {
        let mut args = vec!["train", "--ham", ham_path, "--spam", spam];
        args.extend(flag);
        let out = run_cli(&db, &args, &[]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(named),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
