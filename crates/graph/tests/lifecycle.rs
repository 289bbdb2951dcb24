//! The Graph source's own behaviour against the simulator, without the
//! binary: token caching and refresh, refused credentials, renewal through
//! `$batch` well before expiry, and one owner among two contenders.

use std::{sync::Arc, time::Duration};

use mailroom_graph::{Credential, GraphClient, GraphSettings, GraphSource, OWNER_LEASE};
use mailroom_graph_sim::{GraphSim, SimConfig};
use mailroom_security::Secret;
use mailroom_store::{Store, StoreOptions};

const MAILBOX: &str = "carol@example.test";

async fn sim(token_lifetime_secs: u64) -> GraphSim {
    GraphSim::start(SimConfig {
        mailboxes: vec![MAILBOX.into()],
        token_lifetime_secs,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

fn settings(sim: &GraphSim, secret: &str, webhook: &str) -> GraphSettings {
    let mut s = GraphSettings::new(
        sim.config().tenant_id.clone(),
        sim.config().client_id.clone(),
        Credential::Secret(Secret::new(secret.to_string())),
        vec![MAILBOX.into()],
        webhook,
    );
    s.base_url = sim.base_url();
    s.login_url = sim.login_url();
    s.max_attempts = 3;
    s
}

async fn store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}/graph.db", dir.path().display());
    let store = Store::connect(&StoreOptions::new(url))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// What `GraphSource::start` needs: the ingest path and a fast retry.
fn pipeline_inputs(store: &Store) -> (mailroom_app::IngestService, mailroom_domain::RetryPolicy) {
    let ingest = mailroom_app::IngestService::new(
        store.clone(),
        1 << 20,
        8 << 20,
        Arc::new(tokio::sync::Notify::new()),
    );
    let retry = mailroom_domain::RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    (ingest, retry)
}

/// Serves the source's routes (the webhook answers the handshake).
async fn serve(source: Arc<GraphSource>, listener: tokio::net::TcpListener) {
    let app: axum::Router = mailroom_graph::router(source);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test]
async fn tokens_are_cached_and_refreshed_before_expiry() {
    let sim = sim(3).await;
    let client = GraphClient::new(settings(
        &sim,
        &sim.config().client_secret.clone(),
        "http://127.0.0.1:9/webhook",
    ))
    .expect("client");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut calls = 0;
    while tokio::time::Instant::now() < until {
        client.list_subscriptions().await.expect("list");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = sim.stats();
    // Refreshed about every 2.7 s (a tenth of the lifetime early), not
    // once per call, and no call ever carried an expired token.
    assert!(
        (2..=4).contains(&stats.tokens_issued),
        "{stats:?} after {calls} calls"
    );
    assert!(sim.requests().iter().all(|r| r.status != 401));
    let auth = client.auth_status();
    assert!(auth.last_error.is_none() && auth.tokens_fetched == stats.tokens_issued);
}

#[tokio::test]
async fn refused_credentials_are_reported_without_the_secret() {
    let sim = sim(3599).await;
    let client = GraphClient::new(settings(
        &sim,
        "wrong-secret-value",
        "http://127.0.0.1:9/webhook",
    ))
    .expect("client");
    let err = client.list_subscriptions().await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    let auth = client.auth_status();
    assert!(auth
        .last_error
        .is_some_and(|e| !e.contains("wrong-secret-value")));
}

#[tokio::test]
async fn subscriptions_are_renewed_in_a_batch_by_one_owner() {
    let sim = sim(3599).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let webhook = format!("http://{}/webhook", listener.local_addr().expect("addr"));
    let mut s = settings(&sim, &sim.config().client_secret.clone(), &webhook);
    // Due for renewal two seconds after creation.
    s.subscription_lifetime = Duration::from_secs(600);
    s.renew_before = Duration::from_secs(598);
    s.lease_ttl = Duration::from_secs(1);
    let first =
        Arc::new(GraphSource::new(s.clone(), store.clone(), "first".into()).expect("source"));
    let second = Arc::new(GraphSource::new(s, store.clone(), "second".into()).expect("source"));
    serve(Arc::clone(&first), listener).await;
    let (ingest, retry) = pipeline_inputs(&store);
    let tasks = [
        first.start(ingest.clone(), retry),
        second.start(ingest, retry),
    ];

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let created = loop {
        let subs = sim.subscriptions();
        if let [one] = subs.as_slice() {
            break one.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no subscription: {subs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = store.graph_subscriptions().await.expect("stored");
        if stored.first().is_some_and(|r| r.renewed_at_ms.is_some()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subs = sim.subscriptions();
    assert_eq!(
        subs.len(),
        1,
        "one subscription for two contenders: {subs:?}"
    );
    assert_eq!(subs[0].id, created.id);
    assert!(
        subs[0].expiration > created.expiration,
        "PATCH moved the expiry"
    );
    let batched = sim
        .requests()
        .iter()
        .filter(|r| r.in_batch && r.method == "PATCH")
        .count();
    assert!(batched >= 1, "renewals go through $batch");
    let (holder, _) = store
        .lease_holder(OWNER_LEASE)
        .await
        .expect("lease")
        .expect("held");
    assert!(holder == "first" || holder == "second");
    for t in tasks {
        t.shutdown().await;
    }
    // Released on shutdown: the next replica need not wait.
    assert!(store
        .lease_holder(OWNER_LEASE)
        .await
        .expect("lease")
        .is_none());
}

#[tokio::test]
async fn a_mailbox_graph_refuses_does_not_hold_back_the_others() {
    let sim = sim(3599).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let webhook = format!("http://{}/webhook", listener.local_addr().expect("addr"));
    let mut s = settings(&sim, &sim.config().client_secret.clone(), &webhook);
    // Listed first: its creation fails (the simulator knows no such user).
    s.mailboxes = vec!["ghost@example.test".into(), MAILBOX.into()];
    let source = Arc::new(GraphSource::new(s, store.clone(), "only".into()).expect("source"));
    serve(Arc::clone(&source), listener).await;
    let (ingest, retry) = pipeline_inputs(&store);
    let tasks = source.start(ingest, retry);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.subscriptions().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the valid mailbox was never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subs = sim.subscriptions();
    assert_eq!(subs.len(), 1);
    assert!(subs[0].resource.contains(MAILBOX), "{}", subs[0].resource);
    let view = source.subscriptions_view().await.expect("view");
    assert_eq!(view["subscriptions"][0]["status"], "missing", "{view}");
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_certificate_credential_gets_a_token() {
    let sim = sim(3599).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sh = format!(
        "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj /CN=mailroom 2>/dev/null",
        dir.path().display()
    );
    assert!(std::process::Command::new("sh")
        .arg("-c")
        .arg(sh)
        .status()
        .expect("openssl")
        .success());
    let read = |f: &str| std::fs::read(dir.path().join(f)).expect("read");
    let credential =
        mailroom_graph::CertificateCredential::from_pem(&read("cert.pem"), &read("key.pem"))
            .expect("loads");
    let mut s = settings(&sim, "unused", "http://127.0.0.1:9/webhook");
    s.credential = Credential::Certificate(credential);
    let client = GraphClient::new(s).expect("client");
    client
        .list_subscriptions()
        .await
        .expect("a token from the assertion");
    assert_eq!(sim.stats().tokens_issued, 1);
}
