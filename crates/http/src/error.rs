use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use mailroom_app::{IngestError, KeyError};
use mailroom_security::Scope;
use mailroom_store::StoreError;
use serde_json::json;

/// Every error the API returns. The code strings are part of the API:
/// clients and runbooks match on them; never rename one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    EmptyBody(String),
    #[error("{0}")]
    NotAnEmail(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 401: no usable credentials. `challenge` is the `WWW-Authenticate`
    /// header value.
    #[error("{message}")]
    Unauthorized { message: String, challenge: String },
    /// 403: authenticated, but the key lacks the scope the route needs.
    #[error("this route needs the `{required}` scope; the key has {held}")]
    Forbidden { required: Scope, held: String },
    /// 429: a rate limit is exhausted.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The one table of codes and statuses.
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::EmptyBody(_) => (StatusCode::BAD_REQUEST, "empty_body"),
            ApiError::NotAnEmail(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_an_email"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Pool exhaustion or a lost connection is the database being
            // unavailable, not a bug: say so with 503 so clients retry.
            unavailable if unavailable.is_unavailable() => {
                ApiError::Unavailable(unavailable.to_string())
            }
            // Mail sealed under a data key this server was not given: the
            // operator must configure the key; the record is intact.
            StoreError::Sealing(
                e @ (mailroom_security::SecurityError::UnknownDataKey(_)
                | mailroom_security::SecurityError::NoDataKey),
            ) => ApiError::Unavailable(format!(
                "this message is encrypted and its data key is not configured on this server ({e})"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<mailroom_mail::IngestRejection> for ApiError {
    fn from(r: mailroom_mail::IngestRejection) -> Self {
        match r {
            mailroom_mail::IngestRejection::Empty => ApiError::EmptyBody(r.to_string()),
            mailroom_mail::IngestRejection::NotAnEmail(_) => ApiError::NotAnEmail(r.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            IngestError::Rejected(r) => r.into(),
            IngestError::Busy => ApiError::Unavailable(e.to_string()),
            IngestError::Store(s) => s.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::InvalidName(_) | KeyError::Invalid(_) => {
                ApiError::InvalidParameter(e.to_string())
            }
            KeyError::NameTaken(_) => ApiError::Conflict(e.to_string()),
            KeyError::NotFound(_) => ApiError::NotFound(e.to_string()),
            KeyError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Internal(detail) => {
                // Internals are logged, never shown.
                tracing::error!(error = %detail, "internal error");
                "an internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Forbidden { required, .. } => {
                let challenge = format!(
                    "Bearer realm=\"mailroom\", error=\"insufficient_scope\", scope=\"{required}\""
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}
