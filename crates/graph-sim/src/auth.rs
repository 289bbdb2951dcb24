//! The AAD v2 token endpoint (`POST /{tenant}/oauth2/v2.0/token`) and
//! bearer-token checks for the Graph routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use serde_json::{json, Value};

use crate::graph::{record, Caller, GraphError};
use crate::state::{random_token, Inner, State as SimState, TokenInfo};
use crate::RecordedRequest;

const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An AAD error reply: `{"error","error_description","error_codes",...}`.
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    fn into_response(self, request_id: &str) -> Response {
        let now = Utc::now();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {request_id}\r\nCorrelation ID: {request_id}\r\nTimestamp: {}",
                self.code,
                self.description,
                now.format("%Y-%m-%d %H:%M:%SZ")
            ),
            "error_codes": [self.code],
            "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": request_id,
            "correlation_id": request_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, Json(body)).into_response()
    }
}

/// Why a `client_assertion` JWT was refused.
#[derive(Debug, thiserror::Error)]
enum AssertionError {
    #[error("JWT token is invalid or malformed.")]
    Malformed,
    #[error("Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .")]
    WrongIssuer,
    #[error("The audience claim in the client assertion does not match the token endpoint of tenant '{0}'.")]
    WrongAudience(String),
    #[error("Client assertion is not within its valid time range.")]
    Expired,
}

impl AssertionError {
    fn aad_code(&self) -> u32 {
        match self {
            AssertionError::Malformed => 50027,
            AssertionError::WrongIssuer => 700021,
            AssertionError::WrongAudience(_) => 700212,
            AssertionError::Expired => 700024,
        }
    }
}

/// Checks a client assertion's shape and claims. The signature is NOT
/// verified: the simulator has no registered certificate, and what a client
/// test needs is that it builds and sends a well-formed assertion with the
/// right claims.
fn check_assertion(jwt: &str, client_id: &str, tenant: &str) -> Result<String, AssertionError> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header_b64, payload_b64, sig] = parts.as_slice() else {
        return Err(AssertionError::Malformed);
    };
    if sig.is_empty() {
        return Err(AssertionError::Malformed);
    }
    let decode = |s: &str| -> Result<Value, AssertionError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| AssertionError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)
    };
    let header = decode(header_b64)?;
    if header.get("alg").and_then(Value::as_str).is_none() {
        return Err(AssertionError::Malformed);
    }
    let claims = decode(payload_b64)?;
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    match (iss, sub) {
        (Some(i), Some(s)) if i == s && (client_id.is_empty() || i == client_id) => {}
        _ => return Err(AssertionError::WrongIssuer),
    }
    let aud = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !aud.ends_with("/oauth2/v2.0/token") {
        return Err(AssertionError::WrongAudience(tenant.to_string()));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(AssertionError::Expired)?;
    let now = Utc::now().timestamp();
    if exp <= now {
        return Err(AssertionError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
        // AAD allows a few minutes of clock skew.
        if nbf > now + 300 {
            return Err(AssertionError::Expired);
        }
    }
    Ok(iss.unwrap_or_default().to_string())
}

struct Grant {
    user: Option<String>,
    scope: Option<String>,
}

fn check_request(
    inner: &Inner,
    tenant: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Grant, AadError> {
    let cfg = &inner.config;
    if !tenant.eq_ignore_ascii_case(&cfg.tenant_id) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        // AAD reads only form bodies; anything else looks like an empty form.
        return Err(AadError::missing("grant_type"));
    }
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| AadError::missing("grant_type"))?;
    let unknown_client = |id: &str| {
        AadError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
        )
    };
    let bad_secret = || {
        AadError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", cfg.client_id),
        )
    };
    match grant_type.as_str() {
        "client_credentials" => {
            let scope = form
                .get("scope")
                .ok_or_else(|| AadError::missing("scope"))?;
            if scope.trim() != GRAPH_DEFAULT_SCOPE {
                return Err(if scope.trim().ends_with("/.default") {
                    AadError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_resource",
                        500011,
                        format!("The resource principal named {} was not found in the tenant named {tenant}.", scope.trim_end_matches("/.default")),
                    )
                } else {
                    AadError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        1002012,
                        format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                    )
                });
            }
            let client_id = form.get("client_id").map(String::as_str);
            if let Some(secret) = form.get("client_secret") {
                let id = client_id.ok_or_else(|| AadError::missing("client_id"))?;
                if id != cfg.client_id {
                    return Err(unknown_client(id));
                }
                if *secret != cfg.client_secret {
                    return Err(bad_secret());
                }
            } else if let Some(assertion) = form.get("client_assertion") {
                if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                    return Err(AadError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        70002,
                        format!("The client_assertion_type must be '{JWT_BEARER}'."),
                    ));
                }
                let issuer = check_assertion(assertion, client_id.unwrap_or_default(), tenant)
                    .map_err(|e| {
                        AadError::new(
                            StatusCode::UNAUTHORIZED,
                            "invalid_client",
                            e.aad_code(),
                            e.to_string(),
                        )
                    })?;
                if issuer != cfg.client_id {
                    return Err(unknown_client(&issuer));
                }
            } else {
                return Err(AadError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ));
            }
            Ok(Grant {
                user: None,
                scope: None,
            })
        }
        "password" => {
            let id = form
                .get("client_id")
                .ok_or_else(|| AadError::missing("client_id"))?;
            if *id != cfg.client_id {
                return Err(unknown_client(id));
            }
            if let Some(secret) = form.get("client_secret") {
                if *secret != cfg.client_secret {
                    return Err(bad_secret());
                }
            }
            let scope = form
                .get("scope")
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| AadError::missing("scope"))?;
            let username = form
                .get("username")
                .ok_or_else(|| AadError::missing("username"))?;
            let password = form
                .get("password")
                .ok_or_else(|| AadError::missing("password"))?;
            match &cfg.service_account {
                Some((u, p)) if u.eq_ignore_ascii_case(username) && p == password => Ok(Grant {
                    user: Some(u.clone()),
                    scope: Some(scope.clone()),
                }),
                _ => Err(AadError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    50126,
                    "Error validating credentials due to invalid username or password.",
                )),
            }
        }
        other => Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
    }
}

pub(crate) async fn token_endpoint(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let form: HashMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut resp = match check_request(&inner, &tenant, &headers, &form) {
        Ok(grant) => {
            let lifetime = inner.config.token_lifetime_secs;
            let token = format!("simtok.{}", random_token(32));
            let mut st = inner.lock();
            let now = Instant::now();
            st.tokens.retain(|_, t| t.expires > now);
            st.tokens.insert(
                token.clone(),
                TokenInfo {
                    expires: now + Duration::from_secs(lifetime),
                    user: grant.user,
                },
            );
            st.stats.tokens_issued += 1;
            drop(st);
            let mut body = json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            });
            if let Some(scope) = grant.scope {
                body["scope"] = json!(scope);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => e.into_response(&request_id),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v.clone());
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    record(
        &mut inner.lock(),
        RecordedRequest {
            method: "POST".into(),
            path,
            op: "token".into(),
            status: resp.status().as_u16(),
            prefer: crate::graph::prefer_header(&headers),
            has_authorization: headers.contains_key(header::AUTHORIZATION),
            in_batch: false,
        },
    );
    resp
}

/// Checks `Authorization: Bearer <token>` against the issued tokens.
pub(crate) fn authenticate(st: &mut SimState, headers: &HeaderMap) -> Result<Caller, GraphError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(GraphError::unauthorized("Access token is empty."));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(GraphError::unauthorized(
            "Access token validation failure. The Authorization header must use the Bearer scheme.",
        )),
    };
    if token.is_empty() {
        return Err(GraphError::unauthorized("Access token is empty."));
    }
    match st.tokens.get(token) {
        None => Err(GraphError::unauthorized(
            "Access token validation failure. The token was not issued by this tenant.",
        )),
        Some(t) if t.expires <= Instant::now() => Err(GraphError::unauthorized(
            "Lifetime validation failed, the token is expired.",
        )),
        Some(t) => Ok(Caller {
            user: t.user.clone(),
        }),
    }
}
