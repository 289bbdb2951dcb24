/// Errors of the Graph source.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The token endpoint refused the credentials (the error code and
    /// description Entra ID gave; never the secret).
    #[error("token request refused ({status}): {code}: {description}")]
    TokenRefused {
        status: u16,
        code: String,
        description: String,
    },
    /// Graph answered with an error that retrying will not fix.
    #[error("Graph {op} failed with {status} {code}: {message}")]
    Status {
        op: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// Retries exhausted on throttling, server errors or the network.
    #[error("Graph {op} gave up after {attempts} attempts: {last}")]
    Exhausted {
        op: &'static str,
        attempts: u32,
        last: String,
    },
    /// An answer that is not what the protocol says.
    #[error("Graph {op} answered something unexpected: {reason}")]
    Protocol { op: &'static str, reason: String },
    /// A message larger than the ingest limit.
    #[error("the message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] mailroom_store::StoreError),
}

impl GraphError {
    /// The HTTP status Graph answered, when it did.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Status { status, .. } | GraphError::TokenRefused { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// Worth trying again later (throttled, unreachable, a server fault).
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Exhausted { .. } => true,
            GraphError::Store(e) => e.is_unavailable(),
            GraphError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
