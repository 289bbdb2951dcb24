//! Protocol tests: a plain reqwest client plays the Graph client, and a tiny
//! axum webhook receiver plays our notification endpoint.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{Duration, Utc};
use mailroom_graph_sim::{DeliverOptions, GraphSim, LifecycleEvent, SimConfig};
use serde_json::{json, Value};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const SCOPE: &str = "https://graph.microsoft.com/.default";

// ---------------------------------------------------------------- receiver

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Correct handshake: 200, text/plain, decoded token.
    Good,
    /// Echoes the still-URL-encoded token.
    EchoEncoded,
    /// Right token, but as application/json.
    Json,
}

struct RecvState {
    mode: Mutex<Mode>,
    /// Status for notification POSTs.
    status: AtomicU16,
    validations: Mutex<Vec<String>>,
    /// (path with query, JSON body)
    posts: Mutex<Vec<(String, Value)>>,
}

struct Receiver {
    base: String,
    state: Arc<RecvState>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(RecvState {
            mode: Mutex::new(Mode::Good),
            status: AtomicU16::new(202),
            validations: Mutex::new(Vec::new()),
            posts: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Receiver {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set_mode(&self, m: Mode) {
        *self.state.mode.lock().expect("lock") = m;
    }

    fn posts(&self) -> Vec<(String, Value)> {
        self.state.posts.lock().expect("lock").clone()
    }

    fn posts_to(&self, path: &str) -> Vec<Value> {
        self.posts()
            .into_iter()
            .filter(|(p, _)| p.split('?').next() == Some(path))
            .map(|(_, v)| v)
            .collect()
    }

    fn validations(&self) -> Vec<String> {
        self.state.validations.lock().expect("lock").clone()
    }
}

async fn receive(State(st): State<Arc<RecvState>>, uri: Uri, body: Bytes) -> Response {
    let query = uri.query().unwrap_or_default().to_string();
    let token = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned());
    if let Some(token) = token {
        st.validations.lock().expect("lock").push(query.clone());
        let mode = *st.mode.lock().expect("lock");
        return match mode {
            Mode::Good => ([(header::CONTENT_TYPE, "text/plain")], token).into_response(),
            Mode::EchoEncoded => {
                let raw = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("validationToken="))
                    .unwrap_or_default()
                    .to_string();
                ([(header::CONTENT_TYPE, "text/plain")], raw).into_response()
            }
            Mode::Json => axum::Json(json!(token)).into_response(),
        };
    }
    let path = match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.posts.lock().expect("lock").push((path, v));
    StatusCode::from_u16(st.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::ACCEPTED)
        .into_response()
}

// ---------------------------------------------------------------- helpers

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn sim_with(f: impl FnOnce(&mut SimConfig)) -> GraphSim {
    let mut cfg = SimConfig {
        mailboxes: vec![ALICE.into(), BOB.into()],
        ..SimConfig::default()
    };
    f(&mut cfg);
    GraphSim::start(cfg).await.expect("start sim")
}

async fn sim() -> GraphSim {
    sim_with(|_| {}).await
}

fn token_url(sim: &GraphSim) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        sim.login_url(),
        sim.config().tenant_id
    )
}

async fn token_request(sim: &GraphSim, form: &[(&str, &str)]) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    client()
        .post(token_url(sim))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request")
}

async fn app_token(sim: &GraphSim) -> String {
    let r = token_request(
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn get(sim: &GraphSim, token: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
}

async fn send_json(
    sim: &GraphSim,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> reqwest::Response {
    client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn body_json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

fn expiry_in(minutes: i64) -> String {
    (Utc::now() + Duration::minutes(minutes)).to_rfc3339()
}

async fn subscribe(sim: &GraphSim, token: &str, rx: &Receiver, extra: Value) -> reqwest::Response {
    let mut body = json!({
        "changeType": "created",
        "notificationUrl": rx.url("/hook?tenant=t1"),
        "resource": format!("/users/{ALICE}/mailFolders('Inbox')/messages"),
        "expirationDateTime": expiry_in(60),
        "clientState": "s3cret",
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    send_json(sim, token, reqwest::Method::POST, "/subscriptions", body).await
}

async fn subscribe_ok(sim: &GraphSim, token: &str, rx: &Receiver, extra: Value) -> Value {
    let r = subscribe(sim, token, rx, extra).await;
    assert_eq!(r.status(), 201);
    body_json(r).await
}

fn mime(subject: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello {subject}\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------- token

#[tokio::test]
async fn token_secret_ok_and_errors_like_aad() {
    let sim = sim().await;
    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("request-id"));
    let v = body_json(r).await;
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["ext_expires_in"], 3599);
    assert!(v["access_token"].as_str().is_some_and(|t| t.len() > 20));

    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "wrong"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    let v = body_json(r).await;
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS7000215: Invalid client secret provided.")));
    assert_eq!(v["error_codes"][0], 7000215);

    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "other-app"),
            ("client_secret", "sim-secret"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(r).await["error"], "unauthorized_client");

    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("scope", "Mail.Read"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(r).await["error"], "invalid_scope");

    // Wrong tenant.
    let r = client()
        .post(format!(
            "{}/other-tenant/oauth2/v2.0/token",
            sim.login_url()
        ))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=sim-client&client_secret=sim-secret")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(body_json(r).await["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS90002")));

    // JSON instead of a form: AAD sees no grant_type.
    let r = client()
        .post(token_url(&sim))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(r).await["error"], "invalid_request");

    let stats = sim.stats();
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.requests_by_op.get("token"), Some(&6));
    assert_eq!(stats.throttled, 0);
}

fn assertion(sim: &GraphSim, iss: &str, exp_offset: i64) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "x5t": "abc"}).to_string());
    let now = Utc::now().timestamp();
    let payload = URL_SAFE_NO_PAD.encode(
        json!({
            "aud": token_url(sim),
            "iss": iss,
            "sub": iss,
            "jti": "1",
            "nbf": now - 10,
            "exp": now + exp_offset,
        })
        .to_string(),
    );
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn token_with_client_assertion() {
    let sim = sim().await;
    let jwt_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let good = assertion(&sim, "sim-client", 600);
    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("scope", SCOPE),
            ("client_assertion_type", jwt_type),
            ("client_assertion", &good),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);

    let expired = assertion(&sim, "sim-client", -60);
    let r = token_request(
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("scope", SCOPE),
            ("client_assertion_type", jwt_type),
            ("client_assertion", &expired),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(body_json(r).await["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS700024")));

    for bad in ["not-a-jwt", &assertion(&sim, "someone-else", 600)] {
        let r = token_request(
            &sim,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "sim-client"),
                ("scope", SCOPE),
                ("client_assertion_type", jwt_type),
                ("client_assertion", bad),
            ],
        )
        .await;
        assert_eq!(r.status(), 401, "assertion {bad}");
        assert_eq!(body_json(r).await["error"], "invalid_client");
    }
}

#[tokio::test]
async fn expired_token_and_missing_token_are_401() {
    let sim = sim_with(|c| c.token_lifetime_secs = 0).await;
    let token = app_token(&sim).await;
    let r = get(&sim, &token, "/subscriptions").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("request-id"));
    let v = body_json(r).await;
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
    assert!(v["error"]["innerError"]["request-id"].is_string());
    assert!(v["error"]["innerError"]["date"].is_string());

    let r = client()
        .get(format!("{}/subscriptions", sim.base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("request-id"));
    assert_eq!(
        body_json(r).await["error"]["code"],
        "InvalidAuthenticationToken"
    );

    let r = get(&sim, "made-up", "/subscriptions").await;
    assert_eq!(r.status(), 401);

    let reqs = sim.requests();
    let listed: Vec<_> = reqs
        .iter()
        .filter(|r| r.op == "listSubscriptions")
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed[0].has_authorization);
    assert!(!listed[1].has_authorization);
    assert!(listed.iter().all(|r| r.status == 401));
}

#[tokio::test]
async fn password_grant_gives_delegated_token() {
    let sim =
        sim_with(|c| c.service_account = Some(("svc@example.test".into(), "pw".into()))).await;
    let r = token_request(
        &sim,
        &[
            ("grant_type", "password"),
            ("client_id", "sim-client"),
            ("scope", "https://graph.microsoft.com/ChatMessage.Send"),
            ("username", "svc@example.test"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(r).await["error"], "invalid_grant");
    let r = token_request(
        &sim,
        &[
            ("grant_type", "password"),
            ("client_id", "sim-client"),
            ("scope", "https://graph.microsoft.com/ChatMessage.Send"),
            ("username", "svc@example.test"),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert!(v["access_token"].is_string());
}

// ---------------------------------------------------------------- subscriptions

#[tokio::test]
async fn subscription_create_runs_validation_handshake() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    let v = subscribe_ok(
        &sim,
        &token,
        &rx,
        json!({"lifecycleNotificationUrl": rx.url("/lifecycle")}),
    )
    .await;
    assert!(uuid::Uuid::parse_str(v["id"].as_str().expect("id")).is_ok());
    assert_eq!(v["applicationId"], "sim-client");
    assert_eq!(v["changeType"], "created");
    assert_eq!(v["clientState"], "s3cret");
    assert_eq!(v["latestSupportedTlsVersion"], "v1_2");
    assert!(v["notificationUrlAppId"].is_null());
    assert!(v["creatorId"].is_string());
    assert!(v["expirationDateTime"]
        .as_str()
        .is_some_and(|e| e.ends_with('Z')));

    let validations = rx.validations();
    assert_eq!(
        validations.len(),
        2,
        "notification and lifecycle URL both validated"
    );
    // The existing query is kept and the token is form-encoded with spaces and colons.
    assert!(validations[0].starts_with(
        "tenant=t1&validationToken=Validation%3A+Testing+client+application+reachability"
    ));
    assert_eq!(sim.stats().validations_sent, 2);
    assert_eq!(sim.subscriptions().len(), 1);

    // Same resource again: Graph makes a second subscription with a new id.
    let v2 = subscribe_ok(&sim, &token, &rx, json!({})).await;
    assert_ne!(v["id"], v2["id"]);
    assert_eq!(sim.subscriptions().len(), 2);

    // Resource spellings Graph accepts.
    for resource in [
        format!("users/{ALICE}/mailFolders('inbox')/messages"),
        format!("/users/{}/messages", sim.user_id(ALICE).expect("id")),
    ] {
        subscribe_ok(&sim, &token, &rx, json!({"resource": resource})).await;
    }
}

#[tokio::test]
async fn subscription_handshake_failures() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    for mode in [Mode::EchoEncoded, Mode::Json] {
        rx.set_mode(mode);
        let r = subscribe(&sim, &token, &rx, json!({})).await;
        assert_eq!(r.status(), 400);
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "ValidationError");
        assert_eq!(
            v["error"]["message"],
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
        );
    }
    // Nothing listening.
    rx.set_mode(Mode::Good);
    let r = subscribe(
        &sim,
        &token,
        &rx,
        json!({"notificationUrl": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(sim.subscriptions().is_empty());
}

#[tokio::test]
async fn subscription_input_validation() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;

    let r = subscribe(
        &sim,
        &token,
        &rx,
        json!({"expirationDateTime": expiry_in(10081)}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v = body_json(r).await;
    assert_eq!(v["error"]["code"], "ExtensionError");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("10080 minutes")));

    let r = subscribe(
        &sim,
        &token,
        &rx,
        json!({"expirationDateTime": expiry_in(-1)}),
    )
    .await;
    assert_eq!(r.status(), 400);

    let r = subscribe(&sim, &token, &rx, json!({"clientState": "x".repeat(129)})).await;
    assert_eq!(r.status(), 400);

    let r = subscribe(&sim, &token, &rx, json!({"changeType": "created,exploded"})).await;
    assert_eq!(r.status(), 400);

    let r = subscribe(
        &sim,
        &token,
        &rx,
        json!({"resource": "/users/nobody@example.test/messages"}),
    )
    .await;
    assert_eq!(r.status(), 400);

    let r = subscribe(&sim, &token, &rx, json!({"resource": "/me/events"})).await;
    assert_eq!(r.status(), 400);

    // The maximum itself is fine.
    subscribe_ok(
        &sim,
        &token,
        &rx,
        json!({"expirationDateTime": expiry_in(10080)}),
    )
    .await;
    assert!(
        rx.validations().len() == 1,
        "no handshake for rejected requests"
    );
}

#[tokio::test]
async fn subscription_get_patch_delete_list_reauthorize() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    let a = subscribe_ok(&sim, &token, &rx, json!({})).await;
    let b = subscribe_ok(&sim, &token, &rx, json!({})).await;
    let a_id = a["id"].as_str().expect("id").to_string();
    let b_id = b["id"].as_str().expect("id").to_string();

    let list = body_json(get(&sim, &token, "/subscriptions").await).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(2));

    let got = get(&sim, &token, &format!("/subscriptions/{a_id}")).await;
    assert_eq!(got.status(), 200);

    let new_exp = Utc::now() + Duration::minutes(600);
    let r = send_json(
        &sim,
        &token,
        reqwest::Method::PATCH,
        &format!("/subscriptions/{a_id}"),
        json!({"expirationDateTime": new_exp.to_rfc3339()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    let echoed =
        chrono::DateTime::parse_from_rfc3339(v["expirationDateTime"].as_str().expect("exp"))
            .expect("rfc3339");
    assert!((echoed.with_timezone(&Utc) - new_exp).num_seconds().abs() <= 1);

    let r = send_json(
        &sim,
        &token,
        reqwest::Method::PATCH,
        &format!("/subscriptions/{a_id}"),
        json!({"expirationDateTime": expiry_in(20000)}),
    )
    .await;
    assert_eq!(r.status(), 400);

    // Reauthorize clears the flag set by a lifecycle event.
    assert_eq!(
        sim.lifecycle(&a_id, LifecycleEvent::ReauthorizationRequired)
            .await,
        Some(202)
    );
    assert!(sim
        .subscriptions()
        .iter()
        .any(|s| s.id == a_id && s.reauthorization_required));
    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        &format!("/subscriptions/{a_id}/reauthorize"),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(sim
        .subscriptions()
        .iter()
        .all(|s| !s.reauthorization_required));

    let r = client()
        .delete(format!("{}/subscriptions/{b_id}", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = get(&sim, &token, &format!("/subscriptions/{b_id}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(body_json(r).await["error"]["code"], "ResourceNotFound");
    let r = client()
        .delete(format!("{}/subscriptions/{b_id}", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);

    let list = body_json(get(&sim, &token, "/subscriptions").await).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["value"][0]["id"], a_id.as_str());
}

// ---------------------------------------------------------------- notifications

#[tokio::test]
async fn notifications_have_graph_shape() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    let sub = subscribe_ok(&sim, &token, &rx, json!({})).await;

    let report = sim
        .deliver(ALICE, mime("one"), DeliverOptions::default())
        .await;
    assert_eq!(report.posts.len(), 1);
    assert_eq!(report.posts[0].status, Some(202));
    assert!(report.posts[0].error.is_none());
    let posts = rx.posts();
    assert_eq!(posts.len(), 1);
    // The notificationUrl's own query comes back on every POST.
    assert_eq!(posts[0].0, "/hook?tenant=t1");
    let item = &posts[0].1["value"][0];
    let guid = sim.user_id(ALICE).expect("guid");
    let resource = format!("Users/{guid}/Messages/{}", report.message_id);
    assert_eq!(item["subscriptionId"], sub["id"]);
    assert_eq!(item["changeType"], "created");
    assert_eq!(item["clientState"], "s3cret");
    assert_eq!(item["tenantId"], "sim-tenant");
    assert_eq!(item["resource"], resource.as_str());
    assert_eq!(
        item["resourceData"]["@odata.type"],
        "#Microsoft.Graph.Message"
    );
    assert_eq!(item["resourceData"]["@odata.id"], resource.as_str());
    assert_eq!(item["resourceData"]["id"], report.message_id.as_str());
    assert!(item["resourceData"]["@odata.etag"]
        .as_str()
        .is_some_and(|e| e.starts_with("W/\"CQAAAB")));
    assert!(item["subscriptionExpirationDateTime"].is_string());
    assert!(report.message_id.starts_with("AAMkAD"));

    // Deliveries to another mailbox don't reach this subscription.
    let r = sim
        .deliver(BOB, mime("bob"), DeliverOptions::default())
        .await;
    assert!(r.posts.is_empty());

    let stats = sim.stats();
    assert_eq!(stats.notifications_sent, 1);
    assert_eq!(stats.notification_items_sent, 1);
}

#[tokio::test]
async fn duplicate_bad_client_state_pause_and_failing_receiver() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    subscribe_ok(&sim, &token, &rx, json!({})).await;

    let r = sim
        .deliver(
            ALICE,
            mime("dup"),
            DeliverOptions {
                duplicate: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(r.posts.len(), 2);
    let posts = rx.posts_to("/hook");
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[0]["value"][0]["resourceData"]["id"],
        posts[1]["value"][0]["resourceData"]["id"]
    );

    sim.deliver(
        ALICE,
        mime("bad"),
        DeliverOptions {
            bad_client_state: true,
            ..Default::default()
        },
    )
    .await;
    let last = rx.posts_to("/hook").pop().expect("post");
    assert_ne!(last["value"][0]["clientState"], "s3cret");

    sim.set_notifications_paused(true);
    let r = sim
        .deliver(ALICE, mime("paused"), DeliverOptions::default())
        .await;
    assert!(r.posts.is_empty());
    assert_eq!(rx.posts_to("/hook").len(), 3);
    sim.set_notifications_paused(false);

    // A 500 from our server is recorded and not retried.
    rx.state.status.store(500, Ordering::SeqCst);
    let r = sim
        .deliver(ALICE, mime("fail"), DeliverOptions::default())
        .await;
    assert_eq!(r.posts.len(), 1);
    assert_eq!(r.posts[0].status, Some(500));
    assert_eq!(rx.posts_to("/hook").len(), 4);
    // The paused message is stored all the same.
    assert_eq!(sim.message_ids(ALICE).len(), 4);
}

#[tokio::test]
async fn burst_groups_items_and_limits_concurrency() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    subscribe_ok(&sim, &token, &rx, json!({})).await;
    let msgs: Vec<Vec<u8>> = (0..7).map(|i| mime(&format!("m{i}"))).collect();
    let report = sim
        .deliver_burst(
            ALICE,
            msgs,
            3,
            DeliverOptions {
                items_per_post: 3,
                out_of_order: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(report.message_ids.len(), 7);
    assert_eq!(report.posts.len(), 3, "7 items in posts of 3");
    assert!(report.posts.iter().all(|p| p.status == Some(202)));
    let mut seen: Vec<String> = rx
        .posts_to("/hook")
        .iter()
        .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            i["resourceData"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    seen.sort();
    let mut want = report.message_ids.clone();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(sim.stats().notification_items_sent, 7);
}

#[tokio::test]
async fn lifecycle_events() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    let sub = subscribe_ok(
        &sim,
        &token,
        &rx,
        json!({"lifecycleNotificationUrl": rx.url("/lifecycle")}),
    )
    .await;
    let id = sub["id"].as_str().expect("id").to_string();

    assert_eq!(sim.lifecycle(&id, LifecycleEvent::Missed).await, Some(202));
    let events = rx.posts_to("/lifecycle");
    assert_eq!(events.len(), 1);
    let e = &events[0]["value"][0];
    assert_eq!(e["lifecycleEvent"], "missed");
    assert_eq!(e["subscriptionId"], id.as_str());
    assert_eq!(e["clientState"], "s3cret");
    assert_eq!(e["tenantId"], "sim-tenant");

    assert_eq!(
        sim.lifecycle(&id, LifecycleEvent::ReauthorizationRequired)
            .await,
        Some(202)
    );
    assert!(sim.subscriptions()[0].reauthorization_required);

    assert_eq!(
        sim.lifecycle(&id, LifecycleEvent::SubscriptionRemoved)
            .await,
        Some(202)
    );
    assert_eq!(
        rx.posts_to("/lifecycle")[2]["value"][0]["lifecycleEvent"],
        "subscriptionRemoved"
    );
    assert!(sim.subscriptions().is_empty());
    assert_eq!(
        get(&sim, &token, &format!("/subscriptions/{id}"))
            .await
            .status(),
        404
    );
    // Removed: no more notifications, and no lifecycle for an unknown id.
    assert!(sim
        .deliver(ALICE, mime("x"), DeliverOptions::default())
        .await
        .posts
        .is_empty());
    assert_eq!(sim.lifecycle(&id, LifecycleEvent::Missed).await, None);
    assert!(rx.posts_to("/hook").is_empty());
}

#[tokio::test]
async fn expired_subscription_disappears() {
    let sim = sim().await;
    let rx = Receiver::start().await;
    let token = app_token(&sim).await;
    let exp = (Utc::now() + Duration::milliseconds(400)).to_rfc3339();
    let sub = subscribe_ok(&sim, &token, &rx, json!({"expirationDateTime": exp})).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(sim.subscriptions().is_empty());
    assert!(sim
        .deliver(ALICE, mime("late"), DeliverOptions::default())
        .await
        .posts
        .is_empty());
    let r = get(
        &sim,
        &token,
        &format!("/subscriptions/{}", sub["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------- messages

#[tokio::test]
async fn message_json_value_and_404() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let raw = mime("hello");
    let id = sim
        .deliver(ALICE, raw.clone(), DeliverOptions::default())
        .await
        .message_id;

    let r = get(&sim, &token, &format!("/users/{ALICE}/messages/{id}")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("request-id"));
    let v = body_json(r).await;
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["subject"], "hello");
    assert_eq!(v["internetMessageId"], "<hello@example.test>");
    assert_eq!(v["from"]["emailAddress"]["address"], "bob@example.test");
    assert_eq!(v["from"]["emailAddress"]["name"], "Bob");
    assert!(v["receivedDateTime"].is_string());
    assert!(v["parentFolderId"].is_string());

    // GUID, upper-case UPN and the Inbox folder path all work.
    let guid = sim.user_id(ALICE).expect("guid");
    for path in [
        format!("/users/{guid}/messages/{id}/$value"),
        format!("/users/ALICE@EXAMPLE.TEST/messages/{id}/$value"),
        format!("/users/{ALICE}/mailFolders('Inbox')/messages/{id}/$value"),
    ] {
        let r = get(&sim, &token, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.expect("bytes").as_ref(), raw.as_slice());
    }

    let r = get(
        &sim,
        &token,
        &format!("/users/{ALICE}/messages/{id}?$select=subject"),
    )
    .await;
    let v = body_json(r).await;
    assert_eq!(v["subject"], "hello");
    assert!(v.get("body").is_none());

    let r = get(&sim, &token, &format!("/users/{ALICE}/messages/AAMkADnope")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(body_json(r).await["error"]["code"], "ErrorItemNotFound");
    let r = get(&sim, &token, &format!("/users/{BOB}/messages/{id}/$value")).await;
    assert_eq!(r.status(), 404);
    let r = get(
        &sim,
        &token,
        &format!("/users/carol@example.test/messages/{id}"),
    )
    .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn patch_move_reply_are_recorded() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let id = sim
        .deliver(ALICE, mime("act"), DeliverOptions::default())
        .await
        .message_id;
    let base = format!("/users/{ALICE}/messages/{id}");

    let r = send_json(
        &sim,
        &token,
        reqwest::Method::PATCH,
        &base,
        json!({"categories": ["Urgent"], "flag": {"flagStatus": "flagged"}, "isRead": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert_eq!(v["categories"], json!(["Urgent"]));
    assert_eq!(v["flag"]["flagStatus"], "flagged");

    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        &format!("{base}/reply"),
        json!({"comment": "On it"}),
    )
    .await;
    assert_eq!(r.status(), 202);

    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        &format!("{base}/move"),
        json!({"destinationId": "archive"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body_json(r).await["id"], id.as_str());

    let state = sim.message_state(ALICE, &id).expect("state");
    assert_eq!(state.categories, vec!["Urgent".to_string()]);
    assert!(state.flagged);
    assert!(state.is_read);
    assert_eq!(state.folder, "archive");
    assert_eq!(state.replies, vec!["On it".to_string()]);

    // Moved out of the Inbox: gone from the Inbox path, still readable directly.
    let r = get(
        &sim,
        &token,
        &format!("/users/{ALICE}/mailFolders('Inbox')/messages/{id}"),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(get(&sim, &token, &base).await.status(), 200);

    let ops = sim.stats().requests_by_op;
    assert_eq!(ops.get("updateMessage"), Some(&1));
    assert_eq!(ops.get("moveMessage"), Some(&1));
    assert_eq!(ops.get("replyMessage"), Some(&1));
}

// ---------------------------------------------------------------- delta

async fn follow(sim: &GraphSim, token: &str, url: &str, prefer: Option<&str>) -> reqwest::Response {
    let mut rb = client().get(url).bearer_auth(token);
    if let Some(p) = prefer {
        rb = rb.header("Prefer", p);
    }
    let _ = sim;
    rb.send().await.expect("delta")
}

#[tokio::test]
async fn delta_pages_deltalink_removed_and_gone() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            sim.deliver(ALICE, mime(&format!("d{i}")), DeliverOptions::default())
                .await
                .message_id,
        );
    }
    let start = format!(
        "{}/users/{ALICE}/mailFolders('Inbox')/messages/delta?$select=subject,receivedDateTime",
        sim.base_url()
    );
    let mut url = start.clone();
    let mut seen = Vec::new();
    let mut pages = 0;
    let delta_link = loop {
        let r = follow(&sim, &token, &url, Some("odata.maxpagesize=2")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()
                .get("preference-applied")
                .and_then(|v| v.to_str().ok()),
            Some("odata.maxpagesize=2")
        );
        let v = body_json(r).await;
        pages += 1;
        for item in v["value"].as_array().expect("value") {
            assert!(item["subject"].is_string());
            assert!(item.get("body").is_none(), "$select honoured");
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        if let Some(next) = v["@odata.nextLink"].as_str() {
            assert!(next.starts_with(&sim.base_url()));
            assert!(next.contains("$skiptoken="));
            assert!(v.get("@odata.deltaLink").is_none());
            url = next.to_string();
        } else {
            let dl = v["@odata.deltaLink"]
                .as_str()
                .expect("deltaLink")
                .to_string();
            assert!(dl.contains("$deltatoken="));
            break dl;
        }
    };
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    // Nothing changed: empty round, new deltaLink.
    let v = body_json(follow(&sim, &token, &delta_link, None).await).await;
    assert_eq!(v["value"].as_array().map(Vec::len), Some(0));

    let new_id = sim
        .deliver(ALICE, mime("later"), DeliverOptions::default())
        .await
        .message_id;
    assert!(sim.delete_message(ALICE, &ids[0]));
    let v = body_json(follow(&sim, &token, &delta_link, None).await).await;
    let items = v["value"].as_array().expect("value");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], new_id.as_str());
    assert_eq!(items[0]["subject"], "later");
    assert_eq!(items[1]["id"], ids[0].as_str());
    assert_eq!(items[1]["@removed"]["reason"], "deleted");
    let next_delta = v["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink")
        .to_string();

    sim.expire_delta_tokens();
    for link in [&delta_link, &next_delta] {
        let r = follow(&sim, &token, link, None).await;
        assert_eq!(r.status(), 410);
        assert_eq!(body_json(r).await["error"]["code"], "SyncStateNotFound");
    }
    // A fresh initial round works again, with the default page size (10).
    let v = body_json(follow(&sim, &token, &start, None).await).await;
    assert_eq!(v["value"].as_array().map(Vec::len), Some(5));
    assert!(v["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn delta_filter_on_initial_round() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    sim.deliver(ALICE, mime("old"), DeliverOptions::default())
        .await;
    let future = (Utc::now() + Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let past = (Utc::now() - Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (t, n) in [(future, 0), (past, 1)] {
        let r = client()
            .get(format!(
                "{}/users/{ALICE}/mailFolders/inbox/messages/delta",
                sim.base_url()
            ))
            .query(&[("$filter", format!("receivedDateTime ge {t}"))])
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(
            body_json(r).await["value"].as_array().map(Vec::len),
            Some(n)
        );
    }
    let r = client()
        .get(format!(
            "{}/users/{ALICE}/mailFolders/inbox/messages/delta",
            sim.base_url()
        ))
        .query(&[("$filter", "subject eq 'x'")])
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
}

// ---------------------------------------------------------------- $batch

async fn batch(sim: &GraphSim, token: &str, requests: Vec<Value>) -> reqwest::Response {
    send_json(
        sim,
        token,
        reqwest::Method::POST,
        "/$batch",
        json!({ "requests": requests }),
    )
    .await
}

#[tokio::test]
async fn batch_limit_items_and_base64() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let raw = mime("batched");
    let id = sim
        .deliver(ALICE, raw.clone(), DeliverOptions::default())
        .await
        .message_id;

    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{ALICE}/messages/{id}")}))
        .collect();
    let r = batch(&sim, &token, too_many).await;
    assert_eq!(r.status(), 400);
    assert_eq!(body_json(r).await["error"]["code"], "BadRequest");

    let r = batch(
        &sim,
        &token,
        vec![
            json!({"id": "1", "method": "GET", "url": format!("/users/{ALICE}/messages/{id}?$select=subject")}),
            json!({"id": "2", "method": "GET", "url": format!("users/{ALICE}/messages/{id}/$value")}),
            json!({"id": "3", "method": "GET", "url": format!("/users/{ALICE}/messages/AAMkADmissing")}),
            json!({"id": "4", "method": "PATCH", "url": format!("/users/{ALICE}/messages/{id}"),
                   "headers": {"Content-Type": "application/json"}, "body": {"categories": ["B"]},
                   "dependsOn": ["1"]}),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    let responses = v["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 4);
    let by_id = |i: &str| {
        responses
            .iter()
            .find(|r| r["id"] == i)
            .expect("item")
            .clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("1")["body"]["subject"], "batched");
    assert_eq!(by_id("2")["status"], 200);
    let b64 = by_id("2")["body"]
        .as_str()
        .expect("base64 body")
        .to_string();
    assert_eq!(STANDARD.decode(b64).expect("decode"), raw);
    assert_eq!(by_id("3")["status"], 404);
    assert_eq!(by_id("3")["body"]["error"]["code"], "ErrorItemNotFound");
    assert_eq!(by_id("4")["status"], 200);
    assert_eq!(
        sim.message_state(ALICE, &id).expect("state").categories,
        vec!["B".to_string()]
    );

    // Each item is recorded as its own request, marked in_batch.
    let reqs = sim.requests();
    assert_eq!(reqs.iter().filter(|r| r.in_batch).count(), 4);
    assert_eq!(sim.stats().requests_by_op.get("batch"), Some(&2));

    // Body without Content-Type is refused like Graph does.
    let r = batch(
        &sim,
        &token,
        vec![json!({"id": "1", "method": "PATCH", "url": format!("/users/{ALICE}/messages/{id}"), "body": {"isRead": true}})],
    )
    .await;
    assert_eq!(r.status(), 400);

    // A failed dependency gives 424.
    let r = batch(
        &sim,
        &token,
        vec![
            json!({"id": "a", "method": "GET", "url": format!("/users/{ALICE}/messages/nope")}),
            json!({"id": "b", "method": "GET", "url": format!("/users/{ALICE}/messages/{id}"), "dependsOn": ["a"]}),
        ],
    )
    .await;
    let v = body_json(r).await;
    assert_eq!(v["responses"][1]["status"], 424);
}

#[tokio::test]
async fn batch_items_are_throttled_individually() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    let id = sim
        .deliver(ALICE, mime("t"), DeliverOptions::default())
        .await
        .message_id;
    sim.throttle(1, 7);
    let r = batch(
        &sim,
        &token,
        vec![
            json!({"id": "1", "method": "GET", "url": format!("/users/{ALICE}/messages/{id}")}),
            json!({"id": "2", "method": "GET", "url": format!("/users/{ALICE}/messages/{id}")}),
        ],
    )
    .await;
    assert_eq!(r.status(), 200, "the outer batch is not throttled");
    let v = body_json(r).await;
    assert_eq!(v["responses"][0]["status"], 429);
    assert_eq!(v["responses"][0]["headers"]["retry-after"], "7");
    assert_eq!(
        v["responses"][0]["body"]["error"]["code"],
        "TooManyRequests"
    );
    assert_eq!(v["responses"][1]["status"], 200);

    // Without a token the whole batch is 401.
    let r = client()
        .post(format!("{}/$batch", sim.base_url()))
        .json(&json!({"requests": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
}

// ---------------------------------------------------------------- throttling

#[tokio::test]
async fn throttle_answers_429_with_retry_after() {
    let sim = sim().await;
    let token = app_token(&sim).await;
    sim.throttle(2, 3);
    for _ in 0..2 {
        let r = get(&sim, &token, "/subscriptions").await;
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("3")
        );
        assert!(r.headers().contains_key("request-id"));
        assert_eq!(body_json(r).await["error"]["code"], "TooManyRequests");
    }
    // The token endpoint is never throttled, and the third request passes.
    sim.throttle(1, 3);
    let _ = app_token(&sim).await;
    assert_eq!(get(&sim, &token, "/subscriptions").await.status(), 429);
    assert_eq!(get(&sim, &token, "/subscriptions").await.status(), 200);
    assert_eq!(sim.stats().throttled, 3);
}

#[tokio::test]
async fn mailbox_concurrency_limit() {
    let sim = sim_with(|c| c.read_delay_ms = 150).await;
    let token = app_token(&sim).await;
    let id = sim
        .deliver(ALICE, mime("c"), DeliverOptions::default())
        .await
        .message_id;
    let bob_id = sim
        .deliver(BOB, mime("b"), DeliverOptions::default())
        .await
        .message_id;

    let fire = |n: usize, mb: &'static str, msg: String| {
        let url = format!("{}/users/{mb}/messages/{msg}/$value", sim.base_url());
        let token = token.clone();
        async move {
            let c = client();
            let futs = (0..n).map(|_| {
                let c = c.clone();
                let url = url.clone();
                let token = token.clone();
                async move { c.get(url).bearer_auth(token).send().await.expect("send") }
            });
            futures_join_all(futs.collect()).await
        }
    };

    // Four at once is within the limit.
    let rs = fire(4, ALICE, id.clone()).await;
    assert!(rs.iter().all(|r| r.status() == 200));

    sim.reset_stats();
    let (alice, bob) = tokio::join!(fire(8, ALICE, id.clone()), fire(2, BOB, bob_id.clone()));
    let throttled: Vec<_> = alice.iter().filter(|r| r.status() == 429).collect();
    assert!(!throttled.is_empty(), "8 concurrent requests exceed 4");
    assert_eq!(
        throttled[0]
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        bob.iter().all(|r| r.status() == 200),
        "limit is per mailbox"
    );
    let stats = sim.stats();
    assert!(stats.max_concurrency_by_mailbox[ALICE] >= 5);
    assert!(stats.max_concurrency_by_mailbox[BOB] <= 4);
    assert_eq!(stats.throttled, throttled.len() as u64);
    let mut body = None;
    for r in alice {
        if r.status() == 429 {
            body = Some(body_json(r).await);
            break;
        }
    }
    assert_eq!(
        body.expect("429 body")["error"]["code"],
        "ApplicationThrottled"
    );
}

/// Runs futures concurrently (no `futures` crate needed).
async fn futures_join_all<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

// ---------------------------------------------------------------- chats

#[tokio::test]
async fn chats_create_and_post_permissions() {
    let sim =
        sim_with(|c| c.service_account = Some(("svc@example.test".into(), "pw".into()))).await;
    let token = app_token(&sim).await;
    let alice = sim.user_id(ALICE).expect("alice");
    let bob = sim.user_id(BOB).expect("bob");
    let member = |id: &str, role: &str| {
        json!({
            "@odata.type": "#microsoft.graph.aadUserConversationMember",
            "roles": [role],
            "user@odata.bind": format!("https://graph.microsoft.com/v1.0/users('{id}')"),
        })
    };
    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        "/chats",
        json!({"chatType": "group", "topic": "Escalation", "members": [member(&alice, "owner")]}),
    )
    .await;
    assert_eq!(r.status(), 400, "group chat needs two members");

    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        "/chats",
        json!({"chatType": "group", "topic": "Escalation", "members": [member(&alice, "owner"), member(&bob, "owner")]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let chat = body_json(r).await;
    let chat_id = chat["id"].as_str().expect("id").to_string();
    assert!(chat_id.starts_with("19:") && chat_id.ends_with("@thread.v2"));
    assert_eq!(chat["topic"], "Escalation");
    assert_eq!(chat["chatType"], "group");
    assert!(chat["createdDateTime"].is_string());

    let msg = json!({"body": {"contentType": "html", "content": "<b>Look</b>"}});
    let r = send_json(
        &sim,
        &token,
        reqwest::Method::POST,
        &format!("/chats/{chat_id}/messages"),
        msg.clone(),
    )
    .await;
    assert_eq!(r.status(), 403);
    let v = body_json(r).await;
    assert_eq!(v["error"]["code"], "Forbidden");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(
            "Message POST is allowed in application-only context only for import purposes."
        )));

    let r = token_request(
        &sim,
        &[
            ("grant_type", "password"),
            ("client_id", "sim-client"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("username", "svc@example.test"),
            ("password", "pw"),
        ],
    )
    .await;
    let delegated = body_json(r).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = send_json(
        &sim,
        &delegated,
        reqwest::Method::POST,
        &format!("/chats/{chat_id}/messages"),
        msg,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(body_json(r).await["id"].is_string());

    let chats = sim.chats();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].topic.as_deref(), Some("Escalation"));
    assert_eq!(
        chats[0].members,
        vec![
            (alice, vec!["owner".to_string()]),
            (bob, vec!["owner".to_string()])
        ]
    );
    assert_eq!(chats[0].messages, vec!["<b>Look</b>".to_string()]);
}

// ---------------------------------------------------------------- control API

#[tokio::test]
async fn control_endpoints() {
    let sim = sim().await;
    let c = client();
    let r = c
        .post(format!(
            "{}/_sim/mailboxes/{ALICE}/messages?duplicate=1",
            sim.login_url()
        ))
        .body(mime("ctl"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert!(v["message_id"]
        .as_str()
        .is_some_and(|s| s.starts_with("AAMkAD")));
    assert_eq!(sim.message_ids(ALICE).len(), 1);

    let r = c
        .post(format!(
            "{}/_sim/throttle?requests=1&retry_after=5",
            sim.login_url()
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let token = app_token(&sim).await;
    assert_eq!(get(&sim, &token, "/subscriptions").await.status(), 429);

    let stats = body_json(
        c.get(format!("{}/_sim/stats", sim.login_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(stats["throttled"], 1);
    let reqs = body_json(
        c.get(format!("{}/_sim/requests", sim.login_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert!(reqs
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r["op"] == "listSubscriptions")));
    for path in ["/_sim/chats", "/_sim/subscriptions"] {
        let r = c
            .get(format!("{}{path}", sim.login_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    for path in ["/_sim/pause", "/_sim/resume", "/_sim/delta/expire"] {
        let r = c
            .post(format!("{}{path}", sim.login_url()))
            .send()
            .await
            .expect("send");
        assert!(r.status().is_success(), "{path}");
    }
    let r = c
        .post(format!(
            "{}/_sim/subscriptions/nope/lifecycle?event=missed",
            sim.login_url()
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
}
