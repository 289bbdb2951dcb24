//! Reading messages, the same for every surface: the listing filters as
//! callers spell them (REST query parameters, MCP tool arguments), checked
//! once here, and the JSON shapes of a message summary and of its detail,
//! so the REST API and the MCP tools answer with the same documents.

use chrono::{DateTime, SecondsFormat, Utc};
use mailroom_domain::{MessageId, MessageStatus};
use mailroom_store::{ListFilter, MessageRecord, MessageSummary};
use serde_json::{json, Value};

/// A filter or parameter a caller got wrong; the text names it and says
/// what is expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuery(pub String);

/// Longest `q` or `from` accepted: far beyond any real search, far below
/// what makes a LIKE pattern expensive.
pub const MAX_SEARCH_CHARS: usize = 1000;
/// Page size of a listing when the caller names none, and the most allowed.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// The message listing's filters as a caller wrote them.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub status: Option<String>,
    pub from: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl ListQuery {
    /// The checked filter, or what is wrong with the first bad parameter.
    pub fn filter(self) -> Result<ListFilter, InvalidQuery> {
        let status = self
            .status
            .as_deref()
            .map(|s| s.parse::<MessageStatus>())
            .transpose()
            .map_err(|e| {
                InvalidQuery(format!(
                    "status: {e}; expected one of queued, processing, processed, failed, dead"
                ))
            })?;
        let before = self
            .cursor
            .as_deref()
            .map(MessageId::parse)
            .transpose()
            .map_err(|e| InvalidQuery(format!("cursor: {e}")))?;
        Ok(ListFilter {
            status,
            from: text_param("from", self.from, MAX_SEARCH_CHARS)?,
            since_ms: time_param("since", self.since.as_deref())?,
            until_ms: time_param("until", self.until.as_deref())?,
            q: text_param("q", self.q, MAX_SEARCH_CHARS)?,
            before,
            limit: limit_param(self.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?,
        })
    }
}

/// A message id as a caller wrote it.
pub fn message_id(raw: &str) -> Result<MessageId, InvalidQuery> {
    MessageId::parse(raw).map_err(|e| InvalidQuery(e.to_string()))
}

/// `limit`: absent → `default`, else a whole number from 1 to `max`.
pub fn limit_param(raw: Option<&str>, default: u32, max: u32) -> Result<u32, InvalidQuery> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| InvalidQuery(format!("limit: `{raw}` is not a number from 1 to {max}"))),
    }
}

/// A text filter: blank means absent; control characters and more than
/// `max_chars` characters are refused rather than reaching the database.
pub fn text_param(
    name: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, InvalidQuery> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    if value.chars().any(char::is_control) {
        return Err(InvalidQuery(format!(
            "{name}: control characters are not allowed"
        )));
    }
    if value.chars().count() > max_chars {
        return Err(InvalidQuery(format!(
            "{name}: at most {max_chars} characters"
        )));
    }
    Ok(Some(value))
}

/// A time filter parameter named `name` (see [`parse_time_ms`]).
pub fn time_param(name: &str, raw: Option<&str>) -> Result<Option<i64>, InvalidQuery> {
    raw.map(|raw| {
        parse_time_ms(raw).ok_or_else(|| {
            InvalidQuery(format!(
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

/// One message in a listing.
pub fn summary_json(m: &MessageSummary) -> Value {
    json!({
        "id": m.id,
        "status": m.status,
        "source": m.source,
        "size_bytes": m.size_bytes,
        "received_at": rfc3339(m.received_at_ms),
        "processed_at": m.processed_at_ms.and_then(rfc3339),
        "from": m.from_addr,
        "subject": m.subject,
        "message_id": m.header_message_id,
    })
}

/// One message whole: its summary, parsed view, job and processing history.
pub fn detail_json(record: &MessageRecord) -> Value {
    let mut body = summary_json(&record.summary);
    let history: Vec<Value> = record
        .history
        .iter()
        .map(|s| {
            json!({
                "stage": s.stage, "attempt": s.attempt, "outcome": s.outcome,
                "started_at": rfc3339(s.started_at_ms), "duration_ms": s.duration_ms, "error": s.error,
            })
        })
        .collect();
    if let Value::Object(map) = &mut body {
        map.insert("content_hash".into(), json!(record.content_hash));
        map.insert("processing_time_ms".into(), json!(record.processing_ms));
        map.insert("parsed".into(), json!(record.view));
        map.insert(
            "job".into(),
            match &record.job {
                Some(job) => json!({
                    "id": job.id, "state": job.state, "attempts": job.attempts,
                    "run_at": rfc3339(job.run_at_ms), "last_error": job.last_error,
                }),
                None => Value::Null,
            },
        );
        map.insert("history".into(), Value::Array(history));
    }
    body
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

    #[test]
    fn bad_filters_name_the_parameter() {
        let bad = |q: ListQuery| q.filter().map(|_| ()).expect_err("refused").0;
        assert!(bad(ListQuery {
            status: Some("lost".into()),
            ..Default::default()
        })
        .starts_with("status:"));
        assert!(bad(ListQuery {
            limit: Some("0".into()),
            ..Default::default()
        })
        .starts_with("limit:"));
        assert!(bad(ListQuery {
            since: Some("soon".into()),
            ..Default::default()
        })
        .starts_with("since:"));
        assert!(bad(ListQuery {
            q: Some("a\u{0}b".into()),
            ..Default::default()
        })
        .starts_with("q:"));
        assert!(bad(ListQuery {
            cursor: Some("x".into()),
            ..Default::default()
        })
        .starts_with("cursor:"));
        assert_eq!(
            ListQuery::default().filter().map(|f| f.limit).ok(),
            Some(DEFAULT_PAGE)
        );
    }
}
