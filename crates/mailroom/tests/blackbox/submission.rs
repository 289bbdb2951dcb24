//! Downstream submission through the real server: each processed message
//! is POSTed, HMAC-signed, to every endpoint; failures are retried with the
//! same delivery id; a refusal or the attempt limit dead-letters it, and an
//! operator can queue the dead again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use serde_json::Value;

use crate::backend_test;
use crate::support::*;

const SECRET: &str = "downstream-test-secret";

/// One request as received: (delivery id, signature, body).
type Seen = (String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    /// Per path: every request.
    seen: Arc<Mutex<HashMap<String, Vec<Seen>>>>,
    /// Per path: how many first requests to fail with 503.
    fail_first: Arc<Mutex<HashMap<String, usize>>>,
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let count = {
        let mut seen = r.seen.lock().expect("seen");
        let list = seen.entry(path.clone()).or_default();
        list.push((
            header("x-mailroom-delivery"),
            header("x-mailroom-signature"),
            body.to_vec(),
        ));
        list.len()
    };
    match path.as_str() {
        "refuses" => StatusCode::BAD_REQUEST,
        "down" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => {
            let fail = r
                .fail_first
                .lock()
                .expect("fail")
                .get(&path)
                .copied()
                .unwrap_or(0);
            if count <= fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::NO_CONTENT
            }
        }
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    receiver
        .fail_first
        .lock()
        .expect("fail")
        .insert("flaky".into(), 2);
    let app = Router::new()
        .route("/hook/{path}", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, base)
}

/// Checks `t=…,v1=…` against the body with the shared secret.
fn verify(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(t) = t.parse::<i64>() else {
        return false;
    };
    mailroom_submit::signature(SECRET.as_bytes(), t, body) == signature && v1.len() == 64
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_test!(
    results_are_signed_retried_and_dead_lettered,
    |db| async move {
        let (receiver, base) = start_receiver().await;
        let endpoints = format!("{base}/flaky,{base}/refuses,{base}/down");
        let app = TestApp::spawn_with(
            &db,
            &[
                ("submission.endpoints", endpoints.as_str()),
                ("submission.secret", SECRET),
                ("submission.max_attempts", "3"),
                ("submission.backoff_base_ms", "20"),
                ("submission.backoff_max_ms", "50"),
            ],
        )
        .await;
        let id = app
            .ingest(email(1, "a@partner.test", "Order 7", "Ship it."))
            .await;
        app.wait_for_status(&id, "processed").await;

        let seen = |path: &str| {
            receiver
                .seen
                .lock()
                .expect("seen")
                .get(path)
                .cloned()
                .unwrap_or_default()
        };
        // Flaky: two 503s, then delivered; the delivery id never changes.
        wait_until("the flaky endpoint's third try", || {
            seen("flaky").len() >= 3
        })
        .await;
        let flaky = seen("flaky");
        assert!(
            flaky
                .iter()
                .all(|(d, _, _)| *d == flaky[0].0 && d.starts_with(&id)),
            "{:?}",
            flaky.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for (_, signature, body) in &flaky {
            assert!(verify(signature, body), "bad signature {signature}");
        }
        let payload: Value = serde_json::from_slice(&flaky[2].2).expect("json");
        assert_eq!(payload["event"], "message.processed");
        assert_eq!(payload["message"]["id"], id.as_str());
        assert_eq!(payload["message"]["subject"], "Order 7");
        assert!(payload["score"]["action"].is_string(), "{payload}");
        // A tampered body fails the check.
        assert!(!verify(&flaky[2].1, b"{\"event\":\"forged\"}"));

        // Refused (400): dead at once. Down (500): dead after 3 attempts.
        wait_until("both dead", || {
            seen("refuses").len() == 1 && seen("down").len() == 3
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let listing = loop {
            let (status, listing) = app.get_json("/api/v1/submissions?state=dead").await;
            assert_eq!(status, 200, "{listing}");
            if listing["counts"]["dead"] == 2 && listing["counts"]["delivered"] == 1 {
                break listing;
            }
            assert!(Instant::now() < deadline, "{listing}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let errors: Vec<&str> = listing["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["last_error"].as_str())
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("refused the submission with 400")),
            "{errors:?}"
        );
        let (_, health) = app.get_json("/health/detailed").await;
        assert_eq!(
            health["components"]["downstream_submissions"]["status"], "degraded",
            "{health}"
        );
        assert_eq!(health["status"], "degraded");
        let metrics = app.metrics_text().await;
        assert!(metric(&metrics, "api_submissions_total{outcome=\"dead\"}") >= 2.0);
        assert!(metric(&metrics, "api_submissions_total{outcome=\"delivered\"}") >= 1.0);

        // The operator queues the dead again: each endpoint is tried again.
        let response = app
            .client
            .post(app.url("/api/v1/submissions/retry"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["requeued"], 2);
        wait_until("the retries", || {
            seen("refuses").len() == 2 && seen("down").len() == 6
        })
        .await;
        assert_eq!(
            seen("flaky").len(),
            3,
            "a delivered result is not sent again"
        );
        let bad = app
            .client
            .get(app.url("/api/v1/submissions?state=lost"))
            .send()
            .await
            .expect("send");
        assert_eq!(bad.status(), 400);
        app.stop().await;
    }
);
