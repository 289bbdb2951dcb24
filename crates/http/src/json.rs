//! Small helpers shared by the handlers' JSON shapes.

use chrono::{DateTime, SecondsFormat, Utc};

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
