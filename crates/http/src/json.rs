//! Small helpers shared by the handlers' JSON shapes and query parameters.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ApiError;

/// `limit`: absent → `default`, else a whole number from 1 to `max`.
pub fn limit_param(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "limit: `{raw}` is not a number from 1 to {max}"
                ))
            }),
    }
}

/// A text filter: blank means absent; control characters and more than
/// `max_chars` characters are refused with a 400 rather than reaching the
/// database.
pub fn text_param(
    name: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    if value.chars().any(char::is_control) {
        return Err(ApiError::InvalidParameter(format!(
            "{name}: control characters are not allowed"
        )));
    }
    if value.chars().count() > max_chars {
        return Err(ApiError::InvalidParameter(format!(
            "{name}: at most {max_chars} characters"
        )));
    }
    Ok(Some(value))
}

/// A time filter parameter named `name` (see [`parse_time_ms`]).
pub fn time_param(name: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| {
        parse_time_ms(raw).ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "{name}: `{raw}` is not an RFC 3339 time, a YYYY-MM-DD date or Unix seconds"
            ))
        })
    })
    .transpose()
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Parses a time filter: RFC 3339 (`2026-11-23T10:00:00Z`), a date
/// (`2026-11-23`, midnight UTC) or Unix seconds.
pub fn parse_time_ms(raw: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis());
    }
    raw.parse::<i64>().ok().and_then(|s| s.checked_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time_ms("5"), Some(5000));
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(rfc3339(1500).as_deref(), Some("1970-01-01T00:00:01.500Z"));
    }
}
