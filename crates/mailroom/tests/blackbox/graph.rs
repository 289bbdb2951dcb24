//! The Microsoft 365 source end to end, against the Graph simulator
//! (`mailroom-graph-sim`, which speaks Graph's HTTP protocol): start-up
//! creates subscriptions through the validation handshake, notifications
//! are queued and processed once, a wrong clientState processes nothing,
//! lifecycle events and downtime are caught up by delta, throttling slows
//! the client without failures, and three servers on one PostgreSQL share
//! the subscription work through the lease.

use std::time::{Duration, Instant};

use mailroom_graph_sim::{DeliverOptions, GraphSim, LifecycleEvent, SimConfig};
use serde_json::Value;

use crate::backend_test;
use crate::support::*;

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

async fn simulator() -> GraphSim {
    GraphSim::start(SimConfig {
        mailboxes: vec![ALICE.into(), BOB.into()],
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// A loopback port nobody listens on now (the webhook URL must be known
/// before the server binds).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn graph_settings(sim: &GraphSim, port: u16) -> Vec<(String, String)> {
    vec![
        ("bind".into(), format!("127.0.0.1:{port}")),
        ("graph.tenant_id".into(), sim.config().tenant_id.clone()),
        ("graph.client_id".into(), sim.config().client_id.clone()),
        (
            "graph.client_secret".into(),
            sim.config().client_secret.clone(),
        ),
        ("graph.mailboxes".into(), format!("{ALICE},{BOB}")),
        (
            "graph.notification_url".into(),
            format!("http://127.0.0.1:{port}/webhook"),
        ),
        (
            "graph.lifecycle_url".into(),
            format!("http://127.0.0.1:{port}/webhook/lifecycle"),
        ),
        ("graph.base_url".into(), sim.base_url()),
        ("graph.login_url".into(), sim.login_url()),
        ("graph.lease_seconds".into(), "2".into()),
    ]
}

async fn spawn(db: &TestDb, sim: &GraphSim, port: u16) -> TestApp {
    let settings = graph_settings(sim, port);
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::spawn_with(db, &pairs).await
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_subscribed(app: &TestApp, sim: &GraphSim) -> Value {
    wait_until("both subscriptions", Duration::from_secs(15), || async {
        sim.subscriptions().len() == 2
            && app.get_json("/api/v1/subscriptions").await.1["subscriptions"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["status"] == "active"))
    })
    .await;
    app.get_json("/api/v1/subscriptions").await.1
}

/// Alice's subscription in the simulator (its resource names her UPN or id).
fn alice_subscription(sim: &GraphSim) -> mailroom_graph_sim::SubscriptionView {
    let id = sim.user_id(ALICE).unwrap_or_default();
    sim.subscriptions()
        .into_iter()
        .find(|s| s.resource.contains(ALICE) || s.resource.contains(&id))
        .expect("alice's subscription")
}

/// Messages stored, all statuses.
async fn stored(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/api/v1/messages?limit=500").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_processed_count(app: &TestApp, n: usize) {
    wait_until(
        &format!("{n} processed messages"),
        Duration::from_secs(30),
        || async {
            let items = stored(app).await;
            items.len() >= n && items.iter().all(|m| m["status"] == "processed")
        },
    )
    .await;
    // Nothing more arrives afterwards (no double processing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored(app).await.len(), n, "exactly {n} messages");
}

fn mail(n: usize, subject: &str) -> Vec<u8> {
    email(n, "sender@partner.test", subject, "Hello from Graph.").into_bytes()
}

backend_test!(
    startup_subscribes_and_processes_each_message_once,
    |db| async move {
        let sim = simulator().await;
        let port = free_port();
        let app = spawn(&db, &sim, port).await;
        let view = wait_subscribed(&app, &sim).await;

        // The handshake was answered for both URLs of both subscriptions, and
        // creation asked for immutable ids.
        assert!(sim.stats().validations_sent >= 4, "{:?}", sim.stats());
        let creates: Vec<_> = sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/subscriptions"))
            .collect();
        assert_eq!(creates.len(), 2, "{creates:?}");
        assert!(creates.iter().all(|r| r
            .prefer
            .as_deref()
            .is_some_and(|p| p.contains("IdType=\"ImmutableId\""))));
        for s in sim.subscriptions() {
            assert_eq!(s.change_type, "created");
            assert!(
                s.resource.contains("mailFolders('Inbox')/messages"),
                "{}",
                s.resource
            );
            assert!(s.client_state.as_deref().is_some_and(|c| c.len() >= 32));
            assert!(s.expiration > chrono::Utc::now() + chrono::Duration::days(6));
        }
        assert!(view["owner"]["holder"].is_string(), "{view}");
        let (_, health) = app.get_json("/health/detailed").await;
        assert_eq!(
            health["components"]["m365_auth"]["status"], "healthy",
            "{health}"
        );
        assert_eq!(
            health["components"]["graph_subscriptions"]["status"], "healthy",
            "{health}"
        );
        assert_eq!(
            health["components"]["graph_subscriptions"]["active"], 2,
            "{health}"
        );

        // Delivered, notified twice: one message, processed once.
        let report = sim
            .deliver(
                ALICE,
                mail(1, "first"),
                DeliverOptions {
                    duplicate: true,
                    ..Default::default()
                },
            )
            .await;
        assert!(
            report.posts.iter().all(|p| p.status == Some(202)),
            "{report:?}"
        );
        wait_processed_count(&app, 1).await;
        let id = stored(&app).await[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let detail = app.message(&id).await;
        assert_eq!(detail["subject"], "first", "{detail}");

        // A wrong clientState: acknowledged (a forger learns nothing), never
        // processed.
        let forged = sim
            .deliver(
                BOB,
                mail(2, "forged"),
                DeliverOptions {
                    bad_client_state: true,
                    ..Default::default()
                },
            )
            .await;
        assert!(
            forged.posts.iter().all(|p| p.status == Some(202)),
            "{forged:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stored(&app).await.len(), 1);
        let metrics = app.metrics_text().await;
        assert!(
            metric(
                &metrics,
                "webhook_notifications_total{outcome=\"bad_client_state\"}"
            ) >= 1.0
        );
        assert!(
            metric(
                &metrics,
                "webhook_notifications_total{outcome=\"duplicate\"}"
            ) >= 1.0
        );
        let (_, subs) = app.get_json("/api/v1/subscriptions").await;
        assert_eq!(subs["notifications"]["done"], 1, "{subs}");
        app.stop().await;
    }
);

backend_test!(
    missed_notifications_and_downtime_are_caught_up,
    |db| async move {
        let sim = simulator().await;
        let port = free_port();
        let app = spawn(&db, &sim, port).await;
        wait_subscribed(&app, &sim).await;

        // Notifications lost (Graph dropped them), then a `missed` event.
        sim.set_notifications_paused(true);
        for n in 0..3 {
            sim.deliver(
                ALICE,
                mail(10 + n, "while paused"),
                DeliverOptions::default(),
            )
            .await;
        }
        sim.set_notifications_paused(false);
        let alice_sub = alice_subscription(&sim);
        assert_eq!(
            sim.lifecycle(&alice_sub.id, LifecycleEvent::Missed).await,
            Some(202)
        );
        wait_processed_count(&app, 3).await;

        // mailroom down: notifications fail, messages pile up in the mailbox.
        app.stop().await;
        for n in 0..5 {
            let report = sim
                .deliver(BOB, mail(20 + n, "while down"), DeliverOptions::default())
                .await;
            assert!(
                report.posts.iter().all(|p| p.status.is_none()),
                "{report:?}"
            );
        }
        // Back up: the new owner's start-up catch-up finds them all.
        let app = spawn(&db, &sim, port).await;
        wait_processed_count(&app, 8).await;
        assert_eq!(
            sim.subscriptions().len(),
            2,
            "subscriptions adopted, not duplicated"
        );

        // An expired delta link (410) resyncs the window; nothing twice.
        sim.expire_delta_tokens();
        sim.set_notifications_paused(true);
        sim.deliver(ALICE, mail(30, "after expiry"), DeliverOptions::default())
            .await;
        sim.set_notifications_paused(false);
        let alice_sub = alice_subscription(&sim);
        sim.lifecycle(&alice_sub.id, LifecycleEvent::Missed).await;
        wait_processed_count(&app, 9).await;
        app.stop().await;
    }
);

backend_test!(removed_subscriptions_are_recreated_once, |db| async move {
    let sim = simulator().await;
    let port = free_port();
    let app = spawn(&db, &sim, port).await;
    wait_subscribed(&app, &sim).await;
    let before: Vec<String> = sim.subscriptions().into_iter().map(|s| s.id).collect();
    let removed = before[0].clone();
    assert_eq!(
        sim.lifecycle(&removed, LifecycleEvent::SubscriptionRemoved)
            .await,
        Some(202)
    );
    wait_until("a replacement", Duration::from_secs(10), || async {
        let now: Vec<String> = sim.subscriptions().into_iter().map(|s| s.id).collect();
        now.len() == 2 && !now.contains(&removed)
    })
    .await;
    let after: Vec<String> = sim.subscriptions().into_iter().map(|s| s.id).collect();
    // Reauthorization is asked of the current subscription and answered.
    let current = after
        .iter()
        .find(|id| !before.contains(id))
        .expect("new id")
        .clone();
    sim.lifecycle(&current, LifecycleEvent::ReauthorizationRequired)
        .await;
    wait_until("reauthorization", Duration::from_secs(10), || async {
        sim.subscriptions()
            .iter()
            .all(|s| !s.reauthorization_required)
    })
    .await;
    // Mail still flows through the replacement.
    sim.deliver(ALICE, mail(40, "after"), DeliverOptions::default())
        .await;
    sim.deliver(BOB, mail(41, "after"), DeliverOptions::default())
        .await;
    wait_processed_count(&app, 2).await;
    assert_eq!(sim.subscriptions().len(), 2);
    app.stop().await;
});

backend_test!(
    a_throttling_storm_slows_fetches_without_failures,
    |db| async move {
        let sim = simulator().await;
        let port = free_port();
        let app = spawn(&db, &sim, port).await;
        wait_subscribed(&app, &sim).await;
        sim.throttle(25, 1);
        let messages: Vec<Vec<u8>> = (0..20).map(|n| mail(100 + n, "storm")).collect();
        let burst = sim
            .deliver_burst(ALICE, messages, 10, DeliverOptions::default())
            .await;
        assert!(
            burst.posts.iter().all(|p| p.status == Some(202)),
            "{burst:?}"
        );
        wait_processed_count(&app, 20).await;
        let stats = sim.stats();
        assert!(stats.throttled >= 25, "{stats:?}");
        assert!(
            stats
                .max_concurrency_by_mailbox
                .get(ALICE)
                .copied()
                .unwrap_or(0)
                <= 4,
            "at most 4 requests in flight per mailbox: {stats:?}"
        );
        let metrics = app.metrics_text().await;
        assert_eq!(
            metric(&metrics, "graph_fetches_total{outcome=\"dead\"}"),
            0.0
        );
        assert!(
            metric(
                &metrics,
                "graph_api_errors_total{op=\"get_message_mime\",reason=\"throttled\"}"
            ) >= 1.0
        );
        let (_, subs) = app.get_json("/api/v1/subscriptions").await;
        assert_eq!(subs["notifications"]["dead"], 0, "{subs}");
        app.stop().await;
    }
);

/// The load balancer in front of the replicas: Graph has one webhook URL,
/// whichever replica answers it. Forwards to the first live backend.
struct Front {
    port: u16,
    backends: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
}

impl Front {
    async fn start() -> Self {
        use axum::{body::Bytes, extract::State, http::Uri, response::IntoResponse};
        type Backends = std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>;
        async fn forward(
            State(backends): State<Backends>,
            uri: Uri,
            body: Bytes,
        ) -> axum::response::Response {
            let targets = backends.lock().expect("backends").clone();
            let path = uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            for addr in targets {
                let sent = reqwest::Client::new()
                    .post(format!("http://{addr}{path}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(resp) = sent {
                    let status =
                        axum::http::StatusCode::from_u16(resp.status().as_u16()).expect("status");
                    let kind = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("text/plain")
                        .to_string();
                    let bytes = resp.bytes().await.unwrap_or_default();
                    return (status, [("content-type", kind)], bytes).into_response();
                }
            }
            axum::http::StatusCode::BAD_GATEWAY.into_response()
        }
        let backends: Backends = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind front");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(backends.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, backends }
    }
}

fn logged(server: &ServerProcess, message: &str) -> usize {
    server
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .count()
}

/// Three `mailroom serve` on one PostgreSQL: one owner creates the
/// subscriptions; killed, another takes over within the lease; nothing is
/// duplicated, and the new owner does the owner's work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_subscription_work() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let sim = simulator().await;
    let front = Front::start().await;
    let mut settings = graph_settings(&sim, front.port);
    settings.retain(|(k, _)| k != "bind");
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut replicas: Vec<ServerProcess> =
        (0..3).map(|_| ServerProcess::start(&db, &pairs)).collect();
    *front.backends.lock().expect("backends") = replicas.iter().map(|r| r.addr).collect();

    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.subscriptions().len() != 2 {
        if Instant::now() > deadline {
            for r in &replicas {
                for l in r.log_lines().iter().filter(|l| {
                    l.contains("ubscription") || l.contains("Graph") || l.contains("ERROR")
                }) {
                    eprintln!("{l}");
                }
            }
            panic!(
                "timed out waiting for two subscriptions: {:?}",
                sim.subscriptions()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few lease rounds later: still two, all created by one replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<String> = sim.subscriptions().into_iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 2);
    let created: Vec<usize> = replicas
        .iter()
        .map(|r| logged(r, "subscription created"))
        .collect();
    assert_eq!(created.iter().sum::<usize>(), 2, "{created:?}");
    let owner = created
        .iter()
        .position(|&n| n == 2)
        .expect("one replica created both");

    // Kill the owner; the others take over within the lease (2 s).
    let killed_at = Instant::now();
    replicas[owner].signal("KILL");
    replicas[owner].wait();
    let dead = replicas.remove(owner);
    front
        .backends
        .lock()
        .expect("backends")
        .retain(|a| *a != dead.addr);
    wait_until("a takeover", Duration::from_secs(10), || async {
        replicas
            .iter()
            .any(|r| logged(r, "took the Graph subscription lease") > 0)
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(6),
        "takeover took {takeover:?}"
    );
    let new_owner = replicas
        .iter()
        .position(|r| logged(r, "took the Graph subscription lease") > 0)
        .expect("new owner");
    assert_eq!(
        replicas
            .iter()
            .filter(|r| logged(r, "took the Graph subscription lease") > 0)
            .count(),
        1,
        "exactly one replica took over"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<String> = sim.subscriptions().into_iter().map(|s| s.id).collect();
    assert_eq!(after, ids, "adopted, not duplicated");

    // The new owner acts on lifecycle events, whichever replica got them.
    sim.lifecycle(&ids[0], LifecycleEvent::SubscriptionRemoved)
        .await;
    wait_until(
        "recreated by the new owner",
        Duration::from_secs(10),
        || async { logged(&replicas[new_owner], "subscription created") == 1 },
    )
    .await;
    assert_eq!(sim.subscriptions().len(), 2);
    let report = sim
        .deliver(
            ALICE,
            mail(50, "after takeover"),
            DeliverOptions {
                duplicate: true,
                ..Default::default()
            },
        )
        .await;
    assert!(
        report.posts.iter().all(|p| p.status == Some(202)),
        "{report:?}"
    );
    let client = process_client();
    wait_until("processed once", Duration::from_secs(20), || async {
        let page = replicas[0]
            .get_json(&client, "/api/v1/messages?limit=10")
            .await;
        page["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["status"] == "processed")
    })
    .await;
    db.drop_database().await;
}
