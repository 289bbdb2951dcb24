/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A sealed record could not be opened (key missing, data altered).
    #[error("cannot open an encrypted record: {0}")]
    Sealing(#[from] mailroom_security::SecurityError),
    #[error("cannot load the data keys: {0}")]
    Keyring(String),
    /// A group-committed batch failed; every member gets this copy.
    #[error("database error: {message}")]
    BatchFailed { message: String, unavailable: bool },
}

impl StoreError {
    /// The database cannot be reached right now (pool exhausted, connection
    /// lost): a condition to report as unavailable and retry, not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            ) | StoreError::BatchFailed {
                unavailable: true,
                ..
            }
        )
    }
}
