//! HTTP adapter: the axum router of the REST API and the operations surface
//! (`/health*`, `/process/*`, `/metrics`).
//!
//! Invariants: handlers translate between HTTP and the use cases of
//! `mailroom-app`; they hold no business rules. Every error leaves through
//! [`ApiError`] as `{"error": {"code", "message"}}` with a 4xx/5xx status
//! taken from one table.

mod error;
mod extract;
mod json;
mod metrics_layer;
mod routes;
mod state;

pub use error::ApiError;
pub use routes::router;
pub use state::AppState;
