//! Rate limits: per key and per address, in memory and shared through the
//! real Redis, and what happens when Redis goes away.

use std::time::Duration;

use serde_json::Value;

use crate::{backend_test, support::*};

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client.get(url).send().await.expect("get")
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers().get(name)?.to_str().ok()?.parse().ok()
}

backend_test!(
    a_key_that_sends_too_much_is_told_when_to_come_back,
    |db| async move {
        let app = TestApp::spawn_with(
            &db,
            &[
                ("rate_limit.key_per_second", "1"),
                ("rate_limit.key_burst", "5"),
            ],
        )
        .await;
        let url = app.url("/api/v1/messages");
        let (other, _) = app.create_key("other", "read", None).await;
        // Creating the key cost 5 tokens: start from a full bucket.
        tokio::time::sleep(Duration::from_millis(5100)).await;
        let mut remaining = Vec::new();
        for _ in 0..5 {
            let r = get(&app.client, &url).await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "ratelimit-limit"), Some(5));
            remaining.push(header(&r, "ratelimit-remaining").expect("remaining"));
        }
        assert_eq!(
            remaining,
            vec![4, 3, 2, 1, 0],
            "the bucket drains one token per cheap read"
        );
        let refused = get(&app.client, &url).await;
        assert_eq!(refused.status(), 429);
        let retry = header(&refused, "retry-after").expect("Retry-After");
        assert!((1..=2).contains(&retry), "{retry}");
        assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
        assert!(header(&refused, "ratelimit-reset").is_some());
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"]["code"], "rate_limited");
        // Another key has its own bucket.
        assert_eq!(get(&client_with_key(&other), &url).await.status(), 200);
        // The bucket refills.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(get(&app.client, &url).await.status(), 200);
        let metrics = app.metrics_text().await;
        assert!(
            metric(&metrics, "rate_limit_hits_total{scope=\"key\"}") >= 1.0,
            "{metrics}"
        );
        app.stop().await;
    }
);

backend_test!(
    failed_guesses_are_throttled_per_address_and_x_forwarded_for_is_not_believed,
    |db| async move {
        let app = TestApp::spawn_with(
            &db,
            &[
                ("rate_limit.ip_per_second", "1"),
                ("rate_limit.ip_burst", "20"),
            ],
        )
        .await;
        let url = app.url("/api/v1/messages");
        let guess = || {
            mailroom_security::ApiKeySecret::generate()
                .expose()
                .to_string()
        };
        // Each refused authentication costs 10 of the address's 20 tokens.
        for _ in 0..2 {
            let r = get(&client_with_key(&guess()), &url).await;
            assert_eq!(r.status(), 401);
        }
        let r = get(&client_with_key(&guess()), &url).await;
        assert_eq!(r.status(), 429, "the third guess is throttled");
        assert!(header(&r, "retry-after").is_some());
        // Claiming another address does not help: the peer is not a trusted proxy.
        let r = client_with_key(&guess())
            .get(&url)
            .header("x-forwarded-for", "198.51.100.23")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 429);
        // While the address is throttled, no key it sends is checked, not
        // even a valid one (a correct guess must not get through either).
        let r = get(&app.client, &url).await;
        assert_eq!(r.status(), 429);
        assert!(header(&r, "retry-after").is_some());
        // Open routes use another bucket: probes still answer.
        assert_eq!(get(&app.anonymous, &app.url("/health")).await.status(), 200);
        app.stop().await;

        // Behind a trusted proxy, each forwarded client has its own bucket
        // (4 refusals were audited above, 6 follow).
        let app = TestApp::spawn_with(
            &db,
            &[
                ("rate_limit.ip_per_second", "1"),
                ("rate_limit.ip_burst", "20"),
                ("http.trusted_proxies", "127.0.0.1/32"),
            ],
        )
        .await;
        let url = app.url("/api/v1/messages");
        for client_ip in ["198.51.100.1", "198.51.100.2"] {
            for expected in [401, 401, 429] {
                let r = client_with_key(&guess())
                    .get(&url)
                    .header("x-forwarded-for", client_ip)
                    .send()
                    .await
                    .expect("get");
                assert_eq!(r.status().as_u16(), expected, "{client_ip}");
            }
        }
        let failures = app
            .audit_at_least("action=auth.failure&limit=500", 10)
            .await;
        assert!(
            failures.iter().any(|f| f["ip"] == "198.51.100.2"),
            "the forwarded address is audited"
        );
        app.stop().await;
    }
);

backend_test!(
    two_servers_sharing_redis_enforce_one_limit,
    |db| async move {
        let Some(redis) = test_redis_url() else {
            return;
        };
        let prefix = format!("mailroom-test:{}", uuid::Uuid::now_v7().simple());
        let settings = [
            ("rate_limit.key_per_second", "1"),
            ("rate_limit.key_burst", "10"),
            ("redis_url", redis.as_str()),
            ("rate_limit.redis_key_prefix", prefix.as_str()),
        ];
        // Two processes, one configured key (same bucket id in both).
        let a = ServerProcess::start(&db, &settings);
        let b = ServerProcess::start(&db, &settings);
        let client = process_client();
        let (mut allowed, mut refused_a, mut refused_b) = (0, 0, 0);
        for i in 0..20 {
            let server = if i % 2 == 0 { &a } else { &b };
            let status = get(&client, &server.url("/api/v1/messages"))
                .await
                .status()
                .as_u16();
            match (status, i % 2) {
                (200, _) => allowed += 1,
                (429, 0) => refused_a += 1,
                (429, _) => refused_b += 1,
                (other, _) => panic!("unexpected {other}"),
            }
        }
        // Apart, each server would allow 10 of its 10; shared, the 10 tokens
        // (plus at most a couple refilled during the run) cover both.
        assert!((10..=12).contains(&allowed), "allowed {allowed} of 20");
        assert!(
            refused_a > 0 && refused_b > 0,
            "both servers refuse: {refused_a} {refused_b}"
        );
        let (status, health) = {
            let r = get(&client, &a.url("/health/detailed")).await;
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.expect("json"))
        };
        assert_eq!(status, 200);
        assert_eq!(health["components"]["rate_limiter"]["backend"], "redis");
        assert_eq!(health["components"]["rate_limiter"]["status"], "healthy");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_the_server_follows_its_policy() {
    if test_redis_url().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let db = TestDb::sqlite();
    let open = TestApp::spawn_with(
        &db,
        &[
            ("redis_url", &redis.url()),
            ("rate_limit.redis_timeout_ms", "200"),
            ("rate_limit.key_burst", "100"),
        ],
    )
    .await;
    let db2 = TestDb::sqlite();
    let closed = TestApp::spawn_with(
        &db2,
        &[
            ("redis_url", &redis.url()),
            ("rate_limit.redis_failure", "fail_closed"),
            ("rate_limit.redis_timeout_ms", "200"),
        ],
    )
    .await;
    for app in [&open, &closed] {
        assert_eq!(app.get_json("/api/v1/messages").await.0, 200);
    }
    redis.stop();
    // fail_open: keeps serving under its local limits, reports degraded.
    for _ in 0..5 {
        assert_eq!(open.get_json("/api/v1/messages").await.0, 200);
    }
    let (status, health) = open.get_json("/health/detailed").await;
    assert_eq!(status, 200, "degraded is not unhealthy");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["components"]["rate_limiter"]["status"], "degraded");
    assert!(health["components"]["rate_limiter"]["error"].is_string());
    // fail_closed: refuses with 503 and a Retry-After, never hangs.
    let started = std::time::Instant::now();
    let r = closed
        .client
        .get(closed.url("/api/v1/messages"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(2));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    // Redis returns: both recover.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = open.get_json("/health/detailed").await;
        let (status, _) = closed.get_json("/api/v1/messages").await;
        if health["components"]["rate_limiter"]["status"] == "healthy" && status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not recover: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    open.stop().await;
    closed.stop().await;
}
