//! Domain vocabulary of mailroom: identifiers, statuses, the parsed view of a
//! message, processing history and the retry policy of the job queue.
//!
//! Invariant: this crate performs no I/O and knows nothing about HTTP, SQL or
//! MIME parsing libraries. Everything here is plain data and pure decisions.

mod ids;
mod message;
mod retry;
mod score;
mod status;

pub use ids::{InvalidId, MessageId};
pub use message::{Address, AttachmentMeta, MessageView, ProcessingStep, StepOutcome};
pub use retry::RetryPolicy;
pub use score::{round2, Action, ModelVerdict, ScoreReport, Symbol};
pub use status::{JobState, MessageStatus, UnknownStatus};
