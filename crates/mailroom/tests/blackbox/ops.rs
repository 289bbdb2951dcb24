use crate::{backend_test, support::*};

backend_test!(health_status_and_metrics, |db| async move {
    let app = TestApp::spawn(&db).await;
    let (status, health) = app.get_json("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = app.get_json("/health/ready").await;
    assert_eq!(status, 200, "{ready}");

    let id = app
        .ingest(email(1, "ops@example.com", "status", "hello"))
        .await;
    app.wait_for_status(&id, "processed").await;

    let (status, detailed) = app.get_json("/health/detailed").await;
    assert_eq!(status, 200, "{detailed}");
    assert_eq!(detailed["status"], "healthy");
    for component in ["database", "queue", "workers"] {
        let c = &detailed["components"][component];
        assert_eq!(c["status"], "healthy", "{component}: {c}");
        assert!(c["latency_ms"].is_number(), "{component}");
    }
    assert!(detailed["components"]["queue"]["depth"].is_number());
    assert!(detailed["components"]["queue"]["oldest_age_seconds"].is_number());
    let backend = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(detailed["components"]["database"]["backend"], backend);

    let (status, ps) = app.get_json("/process/status").await;
    assert_eq!(status, 200);
    assert_eq!(ps["emails_processed_today"], 1);
    assert_eq!(ps["current_queue_size"], 0);
    assert_eq!(ps["processing_stats"]["success_rate"], 1.0);
    assert!(ps["processing_stats"]["average_processing_time"]
        .as_f64()
        .is_some_and(|t| t > 0.0 && t < 5.0));

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = metrics.text().await.expect("text");
    for name in [
        "http_requests_total{method=\"POST\",route=\"/api/v1/messages\",status_code=\"202\"}",
        "http_request_duration_seconds_bucket",
        "emails_processed_total",
        "queue_depth",
        "database_connections_active",
        "process_resident_memory_bytes",
        "email_processing_errors_total{stage=\"parse\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        text.contains("route=\"/api/v1/messages/{id}\""),
        "routes are labelled by template"
    );
    app.stop().await;
});
