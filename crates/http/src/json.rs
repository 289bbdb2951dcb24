//! Query-parameter helpers of the handlers: the checks live in
//! `mailroom_app::query` (the MCP tools use the same ones); here they
//! answer with an [`ApiError`].

pub use mailroom_app::query::rfc3339;
use mailroom_app::query::{self, InvalidQuery};

use crate::ApiError;

impl From<InvalidQuery> for ApiError {
    fn from(e: InvalidQuery) -> Self {
        ApiError::InvalidParameter(e.0)
    }
}

/// `limit`: absent → `default`, else a whole number from 1 to `max`.
pub fn limit_param(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    Ok(query::limit_param(raw, default, max)?)
}

/// A text filter: blank means absent; control characters and more than
/// `max_chars` characters are refused with a 400.
pub fn text_param(
    name: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, ApiError> {
    Ok(query::text_param(name, value, max_chars)?)
}

/// A time filter parameter named `name`.
pub fn time_param(name: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    Ok(query::time_param(name, raw)?)
}
