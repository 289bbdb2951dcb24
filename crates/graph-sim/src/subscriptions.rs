//! `/v1.0/subscriptions`: create (with the validation handshake), list,
//! get, renew (PATCH), delete and reauthorize.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Map, Value};

use crate::graph::{Caller, GraphError, GraphRequest, GraphResponse, GraphResult};
use crate::state::{
    graph_time_precise, parse_time, stable_guid, Inner, Scope, State, Subscription,
};
use crate::{notify, SubscriptionView};

const TLS_VERSIONS: [&str; 4] = ["v1_0", "v1_1", "v1_2", "v1_3"];
const CLIENT_STATE_MAX: usize = 128;

pub(crate) fn view(s: &Subscription) -> SubscriptionView {
    SubscriptionView {
        id: s.id.clone(),
        resource: s.resource.clone(),
        change_type: s.change_type.clone(),
        notification_url: s.notification_url.clone(),
        lifecycle_notification_url: s.lifecycle_url.clone(),
        client_state: s.client_state.clone(),
        expiration: s.expiration,
        reauthorization_required: s.reauthorization_required,
    }
}

fn to_json(inner: &Inner, s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "resource": s.resource,
        "applicationId": inner.config.client_id,
        "changeType": s.change_type,
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": null,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": graph_time_precise(s.expiration),
        "creatorId": s.creator_id,
        "includeResourceData": null,
        "latestSupportedTlsVersion": s.tls_version,
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    })
}

fn entity(inner: &Inner, s: &Subscription) -> Value {
    let mut v = to_json(inner, s);
    v["@odata.context"] = json!(format!(
        "{}/$metadata#subscriptions/$entity",
        inner.base_url()
    ));
    v
}

/// Graph wraps subscription validation failures from the Exchange
/// extension in this shape.
fn extension_error(op: &str, reason: impl std::fmt::Display) -> GraphError {
    GraphError::bad_request(
        "ExtensionError",
        format!("Operation: {op}; Exception: [Status Code: BadRequest; Reason: {reason}]"),
    )
}

fn not_found(id: &str) -> GraphError {
    GraphError::not_found(
        "ResourceNotFound",
        format!("The object was not found. Subscription '{id}' does not exist or has expired."),
    )
}

fn check_expiration(
    inner: &Inner,
    value: Option<&Value>,
    op: &str,
) -> Result<DateTime<Utc>, GraphError> {
    let raw = value.and_then(Value::as_str).ok_or_else(|| {
        GraphError::bad_request(
            "InvalidRequest",
            "expirationDateTime is a required property.",
        )
    })?;
    let t = parse_time(raw).ok_or_else(|| {
        GraphError::bad_request(
            "InvalidRequest",
            format!(
                "Cannot convert the literal '{raw}' to the expected type 'Edm.DateTimeOffset'."
            ),
        )
    })?;
    let now = Utc::now();
    let max = inner.config.max_subscription_minutes;
    if t <= now {
        return Err(extension_error(
            op,
            "Subscription expiration must be in the future.",
        ));
    }
    if t > now + ChronoDuration::minutes(max) {
        return Err(extension_error(
            op,
            format!("Subscription expiration can only be {max} minutes in the future."),
        ));
    }
    Ok(t)
}

/// Accepts `/users/{x}/mailFolders('Inbox')/messages` (leading slash and
/// folder-name case optional, `mailFolders/inbox` too) and
/// `/users/{x}/messages` (all folders).
fn parse_resource(st: &State, resource: &str) -> Result<(usize, Scope), GraphError> {
    let unsupported = || {
        GraphError::bad_request(
            "InvalidRequest",
            format!("Resource '{resource}' is not supported. Use /users/{{id}}/mailFolders('Inbox')/messages or /users/{{id}}/messages."),
        )
    };
    let r = resource.trim().trim_start_matches('/');
    if r.contains('?') {
        // A $select here asks for rich notifications, which the simulator does not encrypt.
        return Err(unsupported());
    }
    let segs: Vec<&str> = r.split('/').collect();
    let (user, rest) = match segs.as_slice() {
        [u, user, rest @ ..] if u.eq_ignore_ascii_case("users") => (user.to_string(), rest),
        [first, rest @ ..] if first.to_ascii_lowercase().starts_with("users(") => {
            let inner = first[6..]
                .trim_end_matches(')')
                .trim_matches(|c| c == '\'' || c == '"');
            (inner.to_string(), rest)
        }
        _ => return Err(unsupported()),
    };
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let scope = match l.as_slice() {
        ["messages"] => Scope::AllMessages,
        ["mailfolders('inbox')", "messages"] | ["mailfolders(\"inbox\")", "messages"] => {
            Scope::Inbox
        }
        ["mailfolders", "inbox", "messages"] => Scope::Inbox,
        _ => return Err(unsupported()),
    };
    let user = percent_encoding::percent_decode_str(&user)
        .decode_utf8_lossy()
        .into_owned();
    let idx = st.mailbox_index(&user).ok_or_else(|| {
        extension_error("Create", format!("The requested user '{user}' is invalid."))
    })?;
    Ok((idx, scope))
}

fn check_change_type(ct: &str) -> Result<String, GraphError> {
    let kinds: Vec<String> = ct.split(',').map(|c| c.trim().to_string()).collect();
    let ok = !kinds.is_empty()
        && kinds.iter().all(|k| {
            ["created", "updated", "deleted"]
                .iter()
                .any(|v| v.eq_ignore_ascii_case(k))
        });
    if !ok {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            format!("'{ct}' is not a valid changeType. Use a comma-separated list of created, updated, deleted."),
        ));
    }
    Ok(kinds.join(","))
}

fn check_url(value: Option<&Value>, field: &str) -> Result<Option<String>, GraphError> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let s = v.as_str().unwrap_or_default();
    // Graph requires https; the simulator also takes http because test
    // receivers listen on loopback without TLS.
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(s.to_string())),
        _ => Err(GraphError::bad_request(
            "InvalidRequest",
            format!("{field} '{s}' is not a valid absolute http(s) URL."),
        )),
    }
}

fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

pub(crate) async fn create(inner: &Arc<Inner>, req: &GraphRequest, caller: &Caller) -> GraphResult {
    let body = req.json_body()?;
    let change_type = check_change_type(str_field(&body, "changeType").ok_or_else(|| {
        GraphError::bad_request("InvalidRequest", "changeType is a required property.")
    })?)?;
    let notification_url =
        check_url(body.get("notificationUrl"), "notificationUrl")?.ok_or_else(|| {
            GraphError::bad_request("InvalidRequest", "notificationUrl is a required property.")
        })?;
    let lifecycle_url = check_url(
        body.get("lifecycleNotificationUrl"),
        "lifecycleNotificationUrl",
    )?;
    let resource = str_field(&body, "resource")
        .ok_or_else(|| {
            GraphError::bad_request("InvalidRequest", "resource is a required property.")
        })?
        .to_string();
    let expiration = check_expiration(inner, body.get("expirationDateTime"), "Create")?;
    let client_state = match body.get("clientState") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= CLIENT_STATE_MAX => Some(s.clone()),
        Some(_) => {
            return Err(GraphError::bad_request(
                "InvalidRequest",
                format!("clientState must be a string of at most {CLIENT_STATE_MAX} characters."),
            ))
        }
    };
    let tls_version = match str_field(&body, "latestSupportedTlsVersion") {
        None => "v1_2".to_string(),
        Some(v) if TLS_VERSIONS.contains(&v) => v.to_string(),
        Some(v) => {
            return Err(GraphError::bad_request(
                "InvalidRequest",
                format!("'{v}' is not a valid latestSupportedTlsVersion. Use one of v1_0, v1_1, v1_2, v1_3."),
            ))
        }
    };
    if body.get("includeResourceData").and_then(Value::as_bool) == Some(true) {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            "includeResourceData is not supported by this simulator (it needs an encryption certificate); use basic notifications.",
        ));
    }
    let (mailbox, scope, creator_id) = {
        let st = inner.lock();
        let (mailbox, scope) = parse_resource(&st, &resource)?;
        let creator_id = match &caller.user {
            None => stable_guid(&format!("sp:{}", inner.config.client_id)),
            Some(u) => st
                .mailbox_index(u)
                .map(|i| st.mailboxes[i].id.clone())
                .unwrap_or_else(|| stable_guid(&format!("user:{}", u.to_ascii_lowercase()))),
        };
        (mailbox, scope, creator_id)
    };

    // Graph only creates the subscription once every endpoint has passed
    // the validation handshake.
    let validation_failed = || {
        GraphError::bad_request(
            "ValidationError",
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
        )
    };
    if let Err(e) = notify::validate_endpoint(inner, &notification_url).await {
        tracing::debug!(url = %notification_url, error = %e, "validation handshake failed");
        return Err(validation_failed());
    }
    if let Some(url) = &lifecycle_url {
        if let Err(e) = notify::validate_endpoint(inner, url).await {
            tracing::debug!(url = %url, error = %e, "lifecycle validation handshake failed");
            return Err(validation_failed());
        }
    }

    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        resource,
        mailbox,
        scope,
        change_type,
        notification_url,
        lifecycle_url,
        client_state,
        expiration,
        tls_version,
        creator_id,
        reauthorization_required: false,
    };
    let body = entity(inner, &sub);
    inner.lock().subscriptions.push(sub);
    Ok(GraphResponse::json(StatusCode::CREATED, body))
}

pub(crate) fn list(inner: &Arc<Inner>) -> GraphResult {
    let mut st = inner.lock();
    st.prune_subscriptions(Utc::now());
    let value: Vec<Value> = st.subscriptions.iter().map(|s| to_json(inner, s)).collect();
    Ok(GraphResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{}/$metadata#subscriptions", inner.base_url()),
            "value": value,
        }),
    ))
}

pub(crate) fn get(inner: &Arc<Inner>, id: &str) -> GraphResult {
    let mut st = inner.lock();
    let s = st.live_subscription(id).ok_or_else(|| not_found(id))?;
    Ok(GraphResponse::json(StatusCode::OK, entity(inner, s)))
}

pub(crate) fn update(inner: &Arc<Inner>, req: &GraphRequest, id: &str) -> GraphResult {
    let body = req.json_body()?;
    if inner.lock().live_subscription(id).is_none() {
        return Err(not_found(id));
    }
    let expiration = check_expiration(inner, body.get("expirationDateTime"), "Update")?;
    let mut st = inner.lock();
    let s = st.live_subscription(id).ok_or_else(|| not_found(id))?;
    s.expiration = expiration;
    // Renewing is one of the two documented answers to reauthorizationRequired.
    s.reauthorization_required = false;
    Ok(GraphResponse::json(StatusCode::OK, entity(inner, s)))
}

pub(crate) fn delete(inner: &Arc<Inner>, id: &str) -> GraphResult {
    let mut st = inner.lock();
    st.prune_subscriptions(Utc::now());
    let before = st.subscriptions.len();
    st.subscriptions.retain(|s| !s.id.eq_ignore_ascii_case(id));
    if st.subscriptions.len() == before {
        return Err(not_found(id));
    }
    Ok(GraphResponse::empty(StatusCode::NO_CONTENT))
}

pub(crate) fn reauthorize(inner: &Arc<Inner>, id: &str) -> GraphResult {
    let mut st = inner.lock();
    let s = st.live_subscription(id).ok_or_else(|| not_found(id))?;
    s.reauthorization_required = false;
    // Documented as "200 OK" with no response body.
    Ok(GraphResponse::empty(StatusCode::OK))
}
