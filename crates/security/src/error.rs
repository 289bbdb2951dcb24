/// Errors of the security vocabulary. Messages never contain secret
/// material, only what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("unknown scope `{0}`; expected read, write or admin")]
    UnknownScope(String),
    #[error("no scopes given; expected a comma-separated list of read, write, admin")]
    NoScopes,
    #[error("malformed API key: {0}")]
    MalformedKey(&'static str),
    #[error(
        "invalid duration `{0}`: expected a number with a unit s, m, h, d or w (e.g. 90d, 24h)"
    )]
    InvalidDuration(String),
    #[error("invalid data key: {0}")]
    InvalidDataKey(String),
    #[error("no data key is configured")]
    NoDataKey,
    #[error("the data key `{0}` that sealed this record is not configured")]
    UnknownDataKey(String),
    #[error("a sealed record is malformed: {0}")]
    MalformedEnvelope(&'static str),
    #[error("a sealed record failed authentication (wrong key, or the data was altered)")]
    Tampered,
}
