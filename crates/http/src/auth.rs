//! The guard in front of every route: who is calling (API key), may they
//! (scope), and how often (rate limits). See `policy.rs` for the table.
//!
//! Order of checks, cheapest first: the route's policy; the credentials'
//! shape (a malformed key never reaches the database); whether the
//! address's failure bucket is empty (then 429 before any lookup); the key
//! itself; its scopes; its bucket. A refused authentication costs the
//! address's failure bucket (a refused scope: the key's bucket)
//! `auth_failure_cost` tokens, so guessing is throttled; it is counted in
//! `auth_failures_total{reason}` and, while the bucket admits it, logged
//! and written to the audit log with the key's public prefix and the
//! client address, never the key.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use mailroom_app::{actions, Actor, AuditLog, AuthFailure, ChargeRefused, Principal, RateCharge};
use mailroom_ratelimit::{ip_bucket, BucketScope, Decision};
use mailroom_security::{ApiKeySecret, Scope, Scopes, PUBLIC_PREFIX_LEN};
use mailroom_telemetry::names;
use serde_json::json;

use crate::{
    client_ip::client_ip,
    policy::{self, Access},
    ApiError, AppState,
};

/// Longest credential accepted; a real key has 52 characters.
const MAX_CREDENTIAL_LEN: usize = 512;

/// The caller of a request, as the guard established it: handlers read it
/// from the request extensions to attribute audited actions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Option<Arc<Principal>>,
    pub ip: IpAddr,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor {
            name: self
                .principal
                .as_ref()
                .map(|p| p.prefix.clone())
                .unwrap_or_else(|| "anonymous".into()),
            ip: Some(self.ip.to_string()),
        }
    }
}

/// The middleware. Needs `ConnectInfo<SocketAddr>` on the request (the
/// server inserts it; tests without a socket count as 127.0.0.1).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A refused MCP client is told where the protected-resource metadata
    // is (RFC 9728 §5.1), so it can discover how to authenticate.
    let metadata = (request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        == Some(crate::routes::MCP_PATH))
    .then(|| crate::routes::resource_metadata_url(&state, request.headers()));
    let mut response = check(state, request, next).await;
    if let Some(url) = metadata {
        if response.status() == axum::http::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(axum::http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("Bearer realm=\"mailroom\"")
                .replacen(
                    "Bearer realm=\"mailroom\"",
                    &format!(
                        "Bearer realm=\"mailroom\", resource_metadata=\"{url}\", scope=\"read\""
                    ),
                    1,
                );
            if let Ok(value) = axum::http::HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, value);
            }
        }
    }
    response
}

async fn check(state: AppState, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let rule = policy::of(request.method(), route.as_deref());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let ip = client_ip(peer, request.headers(), &state.security.trusted_proxies);
    let required = match rule.access {
        _ if !state.security.auth_required => None,
        Access::Open | Access::Notification => None,
        Access::Ops if state.security.ops_open => None,
        Access::Ops => Some(Scope::Read),
        Access::Scope(scope) => Some(scope),
    };

    let Some(required) = required else {
        if rule.access == Access::Notification {
            request.extensions_mut().insert(Caller {
                principal: None,
                ip,
            });
            return next.run(request).await;
        }
        // Probes must not depend on Redis: they are limited in this
        // process only. Open API routes (insecure mode) use the shared
        // buckets like any other request.
        let probe = matches!(rule.access, Access::Open | Access::Ops);
        let decision = match (&state.limiter, probe) {
            (Some(l), true) => Some(l.check_local(BucketScope::Ip, &ip_bucket(ip), rule.cost)),
            _ => limit(&state, BucketScope::Ip, &ip_bucket(ip), rule.cost).await,
        };
        if let Some(refusal) = refusal(&decision, "this address") {
            return with_limit_headers(refusal.into_response(), decision.as_ref());
        }
        let caller = Caller {
            principal: None,
            ip,
        };
        // Only /mcp is both open and MCP in insecure mode: every scope,
        // the address's bucket.
        if route.as_deref() == Some(crate::routes::MCP_PATH) && !state.security.auth_required {
            let charge = rate_charge(&state, BucketScope::Ip, ip_bucket(ip));
            for_mcp(&mut request, &caller, Scopes::admin(), charge);
        }
        request.extensions_mut().insert(caller);
        return with_limit_headers(next.run(request).await, decision.as_ref());
    };

    let target = format!(
        "{} {}",
        request.method(),
        route.as_deref().unwrap_or("unmatched")
    );
    let failures = Bucket::failures(ip);
    let presented = match credentials(request.headers()) {
        Ok(Some(key)) => key.to_string(),
        Ok(None) => {
            let answer = unauthorized(AuthFailure::Missing, required, None);
            let refused = Refused::new(ip, None, AuthFailure::Missing, &target);
            return refuse(&state, refused, failures, answer).await;
        }
        Err(why) => {
            let answer = unauthorized(AuthFailure::Malformed, required, Some(why));
            let refused = Refused::new(ip, None, AuthFailure::Malformed, &target);
            return refuse(&state, refused, failures, answer).await;
        }
    };
    // An address that has failed too often is refused before its guess
    // costs a lookup.
    if let Some(exhausted) = state
        .limiter
        .as_ref()
        .and_then(|l| l.still_exhausted(failures.scope, &failures.id))
    {
        let decision = Some(exhausted);
        let refusal = refusal(&decision, "this address").unwrap_or_else(|| {
            ApiError::Unavailable("the rate limiter refused the request".into())
        });
        return with_limit_headers(refusal.into_response(), decision.as_ref());
    }
    let principal = match state.keys.authenticate(&presented).await {
        Ok(p) => p,
        Err(AuthFailure::Unavailable) => {
            return ApiError::Unavailable(
                "the API key cannot be checked right now: the database did not answer".into(),
            )
            .into_response()
        }
        Err(failure) => {
            let answer = unauthorized(failure, required, None);
            let refused = Refused::new(ip, shown_prefix(&presented), failure, &target);
            return refuse(&state, refused, failures, answer).await;
        }
    };
    if !principal.scopes.allows(required) {
        // Charged to the key: a key probing routes it may not use is
        // throttled like a guesser.
        let answer = ApiError::Forbidden {
            required,
            held: principal.scopes.to_string(),
        };
        let refused = Refused::new(
            ip,
            Some(principal.prefix.clone()),
            AuthFailure::InsufficientScope,
            &target,
        );
        let bucket = Bucket {
            scope: BucketScope::Key,
            id: principal.key_id.clone(),
        };
        return refuse(&state, refused, bucket, answer).await;
    }
    let decision = limit(&state, BucketScope::Key, &principal.key_id, rule.cost).await;
    if let Some(refusal) = refusal(&decision, "this API key") {
        return with_limit_headers(refusal.into_response(), decision.as_ref());
    }
    let scopes = principal.scopes;
    let key_id = principal.key_id.clone();
    let caller = Caller {
        principal: Some(principal),
        ip,
    };
    if route.as_deref() == Some(crate::routes::MCP_PATH) {
        let charge = rate_charge(&state, BucketScope::Key, key_id);
        for_mcp(&mut request, &caller, scopes, charge);
    }
    request.extensions_mut().insert(caller);
    with_limit_headers(next.run(request).await, decision.as_ref())
}

/// A rate-limit bucket.
struct Bucket {
    scope: BucketScope,
    id: String,
}

impl Bucket {
    /// Refused authentications of one address: a bucket of its own, so an
    /// address's open-route traffic and its failures do not drain each other.
    fn failures(ip: IpAddr) -> Self {
        Self {
            scope: BucketScope::Ip,
            id: format!("auth-failures:{}", ip_bucket(ip)),
        }
    }
}

/// A refused authentication, as counted, logged and audited.
struct Refused<'a> {
    ip: IpAddr,
    /// The public prefix of the presented key, if it may be shown.
    prefix: Option<String>,
    failure: AuthFailure,
    target: &'a str,
}

impl<'a> Refused<'a> {
    fn new(ip: IpAddr, prefix: Option<String>, failure: AuthFailure, target: &'a str) -> Self {
        Self {
            ip,
            prefix,
            failure,
            target,
        }
    }
}

/// Charges work a handler did beyond its route's cost (a search that
/// opened thousands of sealed bodies) to the caller's bucket. The request
/// is already answered; the caller's next ones pay for it.
pub(crate) async fn charge(state: &AppState, caller: &Caller, tokens: u32) {
    let Some(limiter) = state.limiter.as_ref().filter(|_| tokens > 0) else {
        return;
    };
    match &caller.principal {
        Some(p) => limiter.check(BucketScope::Key, &p.key_id, tokens).await,
        None => {
            limiter
                .check(BucketScope::Ip, &ip_bucket(caller.ip), tokens)
                .await
        }
    };
}

/// What the MCP server reads from a `/mcp` request without knowing this
/// crate's types: the scopes (which tools the caller sees), the principal
/// (who owns a session), the actor (audit), and the [`RateCharge`] that
/// makes each tool call cost what its REST twin costs.
fn for_mcp(request: &mut Request, caller: &Caller, scopes: Scopes, charge: RateCharge) {
    let extensions = request.extensions_mut();
    extensions.insert(scopes);
    if let Some(principal) = &caller.principal {
        extensions.insert(Arc::clone(principal));
    }
    extensions.insert(caller.actor());
    extensions.insert(charge);
}

/// Charges more tokens to one bucket (see [`RateCharge`]).
fn rate_charge(state: &AppState, scope: BucketScope, id: String) -> RateCharge {
    let limiter = state.limiter.clone();
    RateCharge::new(move |tokens| {
        let limiter = limiter.clone();
        let id = id.clone();
        Box::pin(async move {
            let Some(limiter) = limiter else {
                return Ok(());
            };
            let decision = limiter.check(scope, &id, tokens).await;
            if decision.allowed {
                Ok(())
            } else if decision.limiter_unavailable {
                Err(ChargeRefused::Unavailable)
            } else {
                Err(ChargeRefused::RateLimited {
                    retry_after_secs: decision.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        })
    })
}

/// The key a request carries: `Authorization: Bearer …` or `X-API-Key: …`.
/// Ambiguity is refused rather than resolved: two Authorization headers,
/// two X-API-Key headers, or both headers with different keys.
fn credentials(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let single = |name: header::HeaderName| -> Result<Option<&str>, &'static str> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err("the credential header appears more than once");
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| "the credential header holds characters outside visible ASCII")
            })
            .transpose()
    };
    let bearer = match single(header::AUTHORIZATION)? {
        None => None,
        Some(value) => {
            let (scheme, token) = value
                .split_once(' ')
                .ok_or("Authorization must be `Bearer <key>`")?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err("only the Bearer scheme is accepted");
            }
            Some(token.trim())
        }
    };
    let api_key = single(header::HeaderName::from_static("x-api-key"))?.map(str::trim);
    let key = match (bearer, api_key) {
        (Some(a), Some(b)) if a != b => {
            return Err("Authorization and X-API-Key carry different keys")
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => return Ok(None),
    };
    if key.is_empty() || key.len() > MAX_CREDENTIAL_LEN || key.contains(char::is_whitespace) {
        return Err("the key is empty, too long or contains spaces");
    }
    Ok(Some(key))
}

async fn limit(state: &AppState, scope: BucketScope, id: &str, cost: u32) -> Option<Decision> {
    match &state.limiter {
        Some(limiter) => Some(limiter.check(scope, id, cost).await),
        None => None,
    }
}

fn refusal(decision: &Option<Decision>, whose: &str) -> Option<ApiError> {
    let d = decision.as_ref().filter(|d| !d.allowed)?;
    if d.limiter_unavailable {
        return Some(ApiError::Unavailable(
            "the shared rate limiter is unreachable and the policy is fail_closed".into(),
        ));
    }
    let retry_after_secs = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Some(ApiError::RateLimited {
        message: format!("rate limit exceeded for {whose}; retry in {retry_after_secs} s"),
        retry_after_secs,
    })
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds).
fn with_limit_headers(mut response: Response, decision: Option<&Decision>) -> Response {
    if let Some(d) = decision {
        let headers = response.headers_mut();
        let secs = |d: Duration| d.as_secs_f64().ceil() as u64;
        headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(secs(d.reset)));
    }
    response
}

/// What may be shown of a presented key: the public prefix of something
/// shaped like a generated key, nothing of anything else.
fn shown_prefix(presented: &str) -> Option<String> {
    let prefix = presented.get(..PUBLIC_PREFIX_LEN)?;
    (ApiKeySecret::looks_generated(presented)
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| prefix.to_string())
}

/// The 401 for a refused authentication. Revoked, expired, rotated and
/// unknown keys get the same answer: the reason is for the operator
/// (metrics, audit log), not for whoever holds the key.
fn unauthorized(failure: AuthFailure, required: Scope, malformed: Option<&str>) -> ApiError {
    let (message, challenge) = match (failure, malformed) {
        (_, Some(why)) => (
            format!("malformed credentials: {why}"),
            "Bearer realm=\"mailroom\", error=\"invalid_request\"",
        ),
        (AuthFailure::Missing, None) => (
            format!("this route needs an API key with the `{required}` scope: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"),
            "Bearer realm=\"mailroom\"",
        ),
        _ => (
            "the API key is invalid, expired or revoked".to_string(),
            "Bearer realm=\"mailroom\", error=\"invalid_token\"",
        ),
    };
    ApiError::Unauthorized {
        message,
        challenge: challenge.to_string(),
    }
}

/// A refused authentication: counted in `auth_failures_total`, charged
/// `auth_failure_cost` to `bucket`, then answered `answer` — or 429 when the
/// bucket is empty. Only refusals the bucket admitted are logged and
/// audited, so the audit log grows at most at the buckets' rate.
async fn refuse(
    state: &AppState,
    refused: Refused<'_>,
    bucket: Bucket,
    answer: ApiError,
) -> Response {
    let reason = refused.failure.as_str();
    metrics::counter!(names::AUTH_FAILURES_TOTAL, "reason" => reason).increment(1);
    let decision = limit(
        state,
        bucket.scope,
        &bucket.id,
        state.security.auth_failure_cost,
    )
    .await;
    let whose = match bucket.scope {
        BucketScope::Key => "this API key",
        BucketScope::Ip => "this address",
    };
    if let Some(refusal) = refusal(&decision, whose) {
        return with_limit_headers(refusal.into_response(), decision.as_ref());
    }
    tracing::info!(reason, key_prefix = refused.prefix.as_deref(), client_ip = %refused.ip, route = refused.target, "authentication refused");
    let actor = Actor {
        name: refused.prefix.unwrap_or_else(|| "anonymous".into()),
        ip: Some(refused.ip.to_string()),
    };
    state.audit.record_soon(AuditLog::event(
        &actor,
        actions::AUTH_FAILURE,
        "denied",
        Some(refused.target),
        Some(json!({"reason": reason})),
    ));
    with_limit_headers(answer.into_response(), decision.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn credential_shapes() {
        assert_eq!(credentials(&headers(&[])), Ok(None));
        assert_eq!(
            credentials(&headers(&[("authorization", "Bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            credentials(&headers(&[("x-api-key", "abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            credentials(&headers(&[
                ("authorization", "Bearer abc"),
                ("x-api-key", "abc")
            ])),
            Ok(Some("abc"))
        );
        for bad in [
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer a b")],
            vec![("authorization", "Bearer a"), ("authorization", "Bearer b")],
            vec![("x-api-key", "a"), ("x-api-key", "a")],
            vec![("authorization", "Bearer a"), ("x-api-key", "b")],
        ] {
            assert!(credentials(&headers(&bad)).is_err(), "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(600));
        assert!(credentials(&headers(&[("authorization", &long)])).is_err());
    }

    #[test]
    fn only_public_prefixes_are_shown() {
        let key = ApiKeySecret::generate();
        assert_eq!(
            shown_prefix(key.expose()).as_deref(),
            Some(key.public_prefix())
        );
        assert_eq!(
            shown_prefix("some-configured-secret-0123456789abcdef"),
            None
        );
        assert_eq!(shown_prefix("mr_"), None);
    }
}
