//! MIME in, [`MessageView`] out: the pure parsing layer of mailroom.
//!
//! Invariant: no I/O, no storage, no HTTP. Functions here take bytes and
//! return values; they never panic on hostile input (truncated MIME, binary
//! garbage, invalid UTF-8, thousands of parts) and report what they could not
//! understand as warnings on the view instead of failing.

mod check;
mod links;
mod view;

pub use check::{check_ingestible, IngestRejection};
pub use links::extract_links;
pub use view::{content_type_of, parse_view};
