use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{backend_test, support::*};

const FAST_RETRIES: &[(&str, &str)] = &[
    ("fault_injection", "true"),
    ("queue.max_attempts", "3"),
    ("queue.backoff_base_ms", "20"),
    ("queue.backoff_max_ms", "50"),
];

fn failing_email(n: usize) -> String {
    email(n, "flaky@example.com", "will fail", "body").replacen(
        "\r\n",
        "\r\nX-Mailroom-Fault: fail\r\n",
        1,
    )
}

backend_test!(
    failures_retry_with_backoff_then_die_and_can_be_requeued,
    |db| async move {
        let app = TestApp::spawn_with(&db, FAST_RETRIES).await;
        let bad = app.ingest(failing_email(1)).await;
        let good = app.ingest(email(2, "fine@example.com", "ok", "body")).await;
        app.wait_for_status(&good, "processed").await;
        let dead = app.wait_for_status(&bad, "dead").await;

        let history = dead["history"].as_array().expect("history");
        let failures: Vec<&Value> = history.iter().filter(|s| s["outcome"] == "error").collect();
        assert_eq!(
            failures.len(),
            3,
            "one failed step per attempt: {history:?}"
        );
        assert_eq!(
            failures
                .iter()
                .map(|s| s["attempt"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(failures[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("injected failure"));
        assert_eq!(dead["job"]["state"], "dead");
        assert!(dead["job"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("fault_injection"));

        let (_, jobs) = app.get_json("/api/v1/jobs?state=dead").await;
        let dead_ids: Vec<&str> = jobs["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|j| j["message_id"].as_str())
            .collect();
        assert_eq!(dead_ids, vec![bad.as_str()]);

        let (_, status) = app.get_json("/process/status").await;
        assert_eq!(status["emails_processed_today"], 1);
        let rate = status["processing_stats"]["success_rate"]
            .as_f64()
            .expect("rate");
        assert!(
            (rate - 0.25).abs() < 1e-9,
            "1 success, 3 failed attempts: {status}"
        );
        let (_, detailed) = app.get_json("/health/detailed").await;
        assert_eq!(detailed["components"]["queue"]["dead"], 1);
        assert_eq!(detailed["status"], "degraded");

        // Re-queue only what is asked for: an unrelated id re-queues nothing.
        let (_, none) = app.trigger(json!({"ids": [good]})).await;
        assert_eq!(none["requeued"], 0);
        let (status, body) = app.trigger(json!({"status": ["dead"]})).await;
        assert_eq!(status, 200);
        assert_eq!(body["requeued"], 1);
        assert_eq!(body["ids"][0], bad.as_str());
        // It runs again from attempt 1, fails three more times, and dies again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = app.message(&bad).await;
            let errors = m["history"]
                .as_array()
                .map(|h| h.iter().filter(|s| s["outcome"] == "error").count())
                .unwrap_or(0);
            if m["status"] == "dead" && errors == 6 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "requeued job did not run again: {m}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (status, _) = app.trigger(json!({"status": ["processed"]})).await;
        assert_eq!(status, 400);
        app.stop().await;
    }
);

backend_test!(deleting_a_queued_message_drops_its_job, |db| async move {
    let app = TestApp::spawn_with(
        &db,
        &[
            ("fault_injection", "true"),
            ("queue.backoff_base_ms", "60000"),
        ],
    )
    .await;
    let id = app.ingest(failing_email(3)).await;
    app.wait_for_status(&id, "failed").await;
    assert_eq!(app.delete(&id).await, 204);
    let (_, ps) = app.get_json("/process/status").await;
    assert_eq!(ps["current_queue_size"], 0);
    app.stop().await;
});

backend_test!(
    a_panicking_stage_fails_its_message_and_spares_the_worker,
    |db| async move {
        let app = TestApp::spawn_with(&db, FAST_RETRIES).await;
        let panicking = email(10, "boom@example.com", "boom", "body").replacen(
            "\r\n",
            "\r\nX-Mailroom-Fault: panic\r\n",
            1,
        );
        let bad = app.ingest(panicking).await;
        let good: Vec<String> = {
            let mut ids = Vec::new();
            for n in 0..5 {
                ids.push(
                    app.ingest(email(20 + n, "fine@example.com", "fine", "body"))
                        .await,
                );
            }
            ids
        };
        let dead = app.wait_for_status(&bad, "dead").await;
        let errors: Vec<&Value> = dead["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter(|s| s["outcome"] == "error")
            .collect();
        assert_eq!(errors.len(), 3, "{dead}");
        assert!(
            errors[0]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("panicked"),
            "{dead}"
        );
        for id in &good {
            app.wait_for_status(id, "processed").await;
        }
        let (_, detailed) = app.get_json("/health/detailed").await;
        assert_eq!(
            detailed["components"]["workers"]["running"], 2,
            "every worker survived: {detailed}"
        );
        // And they keep working.
        let after = app
            .ingest(email(30, "after@example.com", "after", "body"))
            .await;
        app.wait_for_status(&after, "processed").await;
        app.stop().await;
    }
);
