//! No message is lost and none is processed twice, across SIGKILL; SIGTERM
//! drains in-flight work and exits 0.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{backend_test, support::*};

fn slow_email(n: usize, delay_ms: u64) -> String {
    email(n, "load@example.com", &format!("slow {n}"), "body").replacen(
        "\r\n",
        &format!("\r\nX-Mailroom-Fault: delay-ms={delay_ms}\r\n"),
        1,
    )
}

async fn json_at(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

const CRASHY: &[(&str, &str)] = &[
    ("fault_injection", "true"),
    ("queue.lease_seconds", "2"),
    ("workers", "2"),
    ("queue.batch_size", "4"),
];

backend_test!(
    sigkill_mid_processing_loses_nothing_and_processes_once,
    |db| async move {
        let client = process_client();
        let server = ServerProcess::start(&db, CRASHY);
        let total = 40;
        let mut ids = Vec::new();
        for n in 0..total {
            ids.push(server.ingest(&client, slow_email(n, 40)).await);
        }
        // Kill it while work is half done.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = json_at(&client, server.url("/process/status")).await;
            let done = status["emails_processed_today"].as_i64().unwrap_or(0);
            if done >= 4 {
                assert!(
                    done < total as i64,
                    "the server finished before it could be killed"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no progress: {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut server = server;
        server.signal("KILL");
        assert_eq!(server.wait(), None, "killed by a signal");

        let restarted = ServerProcess::start(&db, CRASHY);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = json_at(&client, restarted.url("/process/status")).await;
            if status["emails_processed_today"].as_i64() == Some(total as i64)
                && status["current_queue_size"] == 0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not all messages were processed after restart: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in &ids {
            let m = json_at(&client, restarted.url(&format!("/api/v1/messages/{id}"))).await;
            assert_eq!(m["status"], "processed", "{m}");
            let completions = m["history"]
                .as_array()
                .expect("history")
                .iter()
                .filter(|s| s["stage"] == "parse" && s["outcome"] == "ok")
                .count();
            assert_eq!(
                completions, 1,
                "message {id} completed {completions} times: {m}"
            );
        }
        let list = json_at(&client, restarted.url("/api/v1/messages?limit=500")).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(total));
    }
);

backend_test!(
    sigterm_drains_in_flight_work_and_exits_zero,
    |db| async move {
        let client = process_client();
        let mut server = ServerProcess::start(
            &db,
            &[
                ("fault_injection", "true"),
                ("workers", "1"),
                ("queue.batch_size", "2"),
            ],
        );
        let mut ids = Vec::new();
        for n in 0..2 {
            ids.push(server.ingest(&client, slow_email(n, 400)).await);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while json_at(&client, server.url("/health/detailed")).await["components"]["workers"]
            ["busy"]
            != 1
        {
            assert!(
                Instant::now() < deadline,
                "worker never picked the batch up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.signal("TERM");
        assert_eq!(server.wait(), Some(0), "logs: {:?}", server.log_lines());
        assert!(server
            .log_lines()
            .iter()
            .any(|l| l.contains("workers drained")));

        // The batch in hand when SIGTERM arrived was finished before exit.
        let finished_before_exit = server
            .log_lines()
            .iter()
            .filter(|l| l.contains("\"message processed\""))
            .count();
        assert!(finished_before_exit >= 1, "logs: {:?}", server.log_lines());

        // Whatever was not started is still queued and runs on the next start,
        // and nothing runs twice.
        let app = TestApp::spawn(&db).await;
        for id in &ids {
            let m = app.wait_for_status(id, "processed").await;
            assert_eq!(
                m["history"]
                    .as_array()
                    .map(|h| h.iter().filter(|s| s["stage"] == "parse").count()),
                Some(1),
                "{m}"
            );
        }
        app.stop().await;
    }
);

backend_test!(
    sigkill_during_ingest_loses_no_acknowledged_message,
    |db| async move {
        let client = process_client();
        let mut server = ServerProcess::start(&db, &[("queue.lease_seconds", "2")]);
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut senders = Vec::new();
        for sender in 0..8 {
            let (client, url, acked) = (
                client.clone(),
                server.url("/api/v1/messages"),
                std::sync::Arc::clone(&acked),
            );
            senders.push(tokio::spawn(async move {
                for n in 0..10_000 {
                    let body = email(sender * 100_000 + n, "burst@example.com", "burst", "body");
                    let Ok(response) = client
                        .post(&url)
                        .header("content-type", "message/rfc822")
                        .body(body)
                        .send()
                        .await
                    else {
                        return; // the server is gone
                    };
                    if response.status() != 202 {
                        return;
                    }
                    if let Ok(v) = response.json::<Value>().await {
                        acked
                            .lock()
                            .expect("lock")
                            .push(v["id"].as_str().expect("id").to_string());
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().expect("lock").len() < 300 {
            assert!(Instant::now() < deadline, "ingest made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.signal("KILL");
        assert_eq!(server.wait(), None);
        for s in senders {
            let _ = s.await;
        }
        let acked = acked.lock().expect("lock").clone();

        let restarted = ServerProcess::start(&db, &[("queue.lease_seconds", "2")]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = json_at(&client, restarted.url("/process/status")).await;
            if status["current_queue_size"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "queue did not drain: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in &acked {
            let m = json_at(&client, restarted.url(&format!("/api/v1/messages/{id}"))).await;
            assert_eq!(
                m["status"], "processed",
                "acknowledged message {id} after the crash: {m}"
            );
            let completions = m["history"].as_array().map(|h| {
                h.iter()
                    .filter(|s| s["outcome"] == "ok" && s["stage"] == "parse")
                    .count()
            });
            assert_eq!(completions, Some(1), "{m}");
        }
    }
);
