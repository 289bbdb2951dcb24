//! What the guard (authentication + rate limiting) adds to a cheap
//! authenticated GET, in process: the whole router answers
//! `GET /api/v1/jobs?state=dead&limit=1` on a SQLite store, once with the
//! guard open (`--insecure-no-auth`, no limiter) and once with a database
//! API key (cache warm) and the in-memory limiter. No sockets, no client:
//! the difference is the guard's own cost per request. A third benchmark
//! times the guard's two steps (key check with a warm cache, bucket check)
//! alone.
//!
//! `cargo bench -p mailroom-http --bench guard`

use std::{sync::Arc, time::Instant};

use axum::{body::Body, http::Request};
use criterion::{criterion_group, criterion_main, Criterion};
use mailroom_app::{Actor, AuditLog, IngestService, KeyService, WorkerState};
use mailroom_http::{AppState, SecuritySettings};
use mailroom_ratelimit::{LimiterConfig, Quota, RateLimiter, RedisFailurePolicy};
use mailroom_security::Scopes;
use mailroom_store::{Store, StoreOptions};
use tower::ServiceExt;

struct Setup {
    open: axum::Router,
    guarded: axum::Router,
    keys: KeyService,
    limiter: RateLimiter,
    key: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&StoreOptions::new(format!(
        "sqlite://{}/bench.db",
        dir.path().display()
    )))
    .await
    .expect("store");
    store.migrate().await.expect("migrate");
    let audit = AuditLog::start(store.clone());
    let keys = KeyService::new(store.clone(), audit.clone(), Vec::new());
    let key = keys
        .create(
            "bench",
            "read".parse::<Scopes>().expect("scopes"),
            None,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret
        .expose()
        .to_string();
    let wake = Arc::new(tokio::sync::Notify::new());
    let scoring = Arc::new(
        mailroom_app::ScoreService::new(mailroom_score::ScoreConfig::default(), None)
            .expect("scorer"),
    );
    let state = |auth_required: bool, limiter: Option<RateLimiter>| AppState {
        ingest: IngestService::new(store.clone(), 1 << 20, 1 << 24, Arc::clone(&wake)),
        store: store.clone(),
        workers: Arc::new(WorkerState::default()),
        wake: Arc::clone(&wake),
        metrics: mailroom_telemetry::metrics_handle().expect("metrics"),
        started: Instant::now(),
        pipeline_stages: vec!["parse"],
        keys: keys.clone(),
        audit: audit.clone(),
        limiter,
        security: Arc::new(SecuritySettings {
            auth_required,
            ..SecuritySettings::default()
        }),
        scoring: Arc::clone(&scoring),
        health_extras: None,
    };
    let limiter = RateLimiter::new(LimiterConfig {
        key: Quota {
            per_second: 1_000_000_000,
            burst: 1_000_000_000,
        },
        ip: Quota {
            per_second: 1_000_000,
            burst: 1_000_000,
        },
        redis_url: None,
        redis_prefix: "bench".into(),
        on_redis_failure: RedisFailurePolicy::FailOpen,
        redis_timeout: std::time::Duration::from_millis(100),
    })
    .expect("limiter");
    Setup {
        open: mailroom_http::router(state(false, None)),
        guarded: mailroom_http::router(state(true, Some(limiter.clone()))),
        keys,
        limiter,
        key,
        _dir: dir,
    }
}

fn request(key: Option<&str>) -> Request<Body> {
    let mut r = Request::get("/api/v1/jobs?state=dead&limit=1");
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.body(Body::empty()).expect("request")
}

fn guard(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = runtime.block_on(setup());
    let mut group = c.benchmark_group("GET /api/v1/jobs");
    group.bench_function("no_auth_no_limits", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = s
                .open
                .clone()
                .oneshot(request(None))
                .await
                .expect("response");
            assert_eq!(response.status(), 200);
        })
    });
    group.bench_function("api_key_and_memory_limits", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = s
                .guarded
                .clone()
                .oneshot(request(Some(&s.key)))
                .await
                .expect("response");
            assert_eq!(response.status(), 200);
        })
    });
    group.finish();
    // The guard's two steps alone: the key (cache warm) and its bucket.
    c.bench_function("authenticate + rate-limit check", |b| {
        b.to_async(&runtime).iter(|| async {
            let principal = s.keys.authenticate(&s.key).await.expect("valid key");
            let decision = s
                .limiter
                .check(mailroom_ratelimit::BucketScope::Key, &principal.key_id, 1)
                .await;
            assert!(decision.allowed);
        })
    });
}

criterion_group!(benches, guard);
criterion_main!(benches);
