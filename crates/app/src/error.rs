use mailroom_mail::IngestRejection;
use mailroom_store::StoreError;

/// Why ingest refused a message.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("message is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Rejected(#[from] IngestRejection),
    #[error("the server is receiving too much mail at once; retry shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}
