//! HTTP adapter: the axum router of the REST API and the operations surface
//! (`/health*`, `/process/*`, `/metrics`).
//!
//! Invariants: handlers translate between HTTP and the use cases of
//! `mailroom-app`; they hold no business rules. Every error leaves through
//! [`ApiError`] as `{"error": {"code", "message"}}` with a 4xx/5xx status
//! taken from one table. Every route passes the guard (`auth.rs`): its
//! scope and rate-limit cost come from one table (`policy.rs`), and a route
//! missing there needs `admin`.

mod auth;
mod client_ip;
mod error;
mod extract;
mod hardening;
mod json;
mod metrics_layer;
mod policy;
mod routes;
mod serve;
mod state;

pub use auth::Caller;
pub use error::ApiError;
pub use routes::{router, router_with, MCP_PATH};
pub use serve::{serve, ServeLimits};
pub use state::{AppState, HealthExtras, SecuritySettings};
