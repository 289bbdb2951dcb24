//! The handlers' JSON helpers. Query parameters are checked by
//! `mailroom_app::query` (the MCP tools use the same checks); a refusal
//! becomes an `invalid_parameter` [`ApiError`] here.

pub use mailroom_app::query::rfc3339;
use mailroom_app::query::InvalidQuery;

use crate::ApiError;

impl From<InvalidQuery> for ApiError {
    fn from(e: InvalidQuery) -> Self {
        ApiError::InvalidParameter(e.0)
    }
}
