//! Output schemas of the tools: the JSON documents the tools answer with
//! (the REST API's shapes), written out so `tools/list` tells a model what
//! comes back. Clients validate `structuredContent` against them (the
//! Python SDK does), and the snapshot test makes any change visible.

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::{json, Value};

fn object(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
    });
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}

fn summary_properties() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "id": { "type": "string", "description": "message id" },
        "status": { "type": "string", "enum": ["queued", "processing", "processed", "failed", "dead"] },
        "source": { "type": "string" },
        "size_bytes": { "type": "integer" },
        "received_at": nullable("string"),
        "processed_at": nullable("string"),
        "from": nullable("string"),
        "subject": nullable("string"),
        "message_id": nullable("string"),
    }) else {
        return serde_json::Map::new();
    };
    map
}

const SUMMARY_REQUIRED: [&str; 4] = ["id", "status", "source", "size_bytes"];

pub fn message_page() -> Arc<JsonObject> {
    object(
        json!({
            "items": {
                "type": "array",
                "items": { "type": "object", "properties": summary_properties(), "required": SUMMARY_REQUIRED },
            },
            "next_cursor": { "type": ["string", "null"], "description": "pass as cursor for the next page; null on the last" },
        }),
        &["items", "next_cursor"],
    )
}

pub fn message_detail() -> Arc<JsonObject> {
    let mut properties = summary_properties();
    for (key, value) in [
        ("content_hash", json!({ "type": "string" })),
        ("processing_time_ms", nullable("number")),
        (
            "parsed",
            json!({ "type": ["object", "null"], "description": "addresses, subject, date, text, attachments, links; null until parsed" }),
        ),
        ("job", nullable("object")),
        (
            "history",
            json!({ "type": "array", "items": { "type": "object" }, "description": "one entry per stage per attempt" }),
        ),
    ] {
        properties.insert(key.into(), value);
    }
    object(
        Value::Object(properties),
        &["id", "status", "content_hash", "history"],
    )
}

pub fn processing_status() -> Arc<JsonObject> {
    object(
        json!({
            "emails_processed_today": { "type": "integer" },
            "current_queue_size": { "type": "integer" },
            "processing_stats": { "type": "object" },
            "queue": { "type": "object" },
            "workers": { "type": "object" },
        }),
        &[
            "emails_processed_today",
            "current_queue_size",
            "queue",
            "workers",
        ],
    )
}

pub fn ingest_receipt() -> Arc<JsonObject> {
    object(
        json!({
            "id": { "type": "string" },
            "status": { "type": "string", "enum": ["queued", "duplicate"] },
            "duplicate": { "type": "boolean" },
        }),
        &["id", "status", "duplicate"],
    )
}

pub fn reprocess_result() -> Arc<JsonObject> {
    object(
        json!({
            "requeued": { "type": "integer", "description": "messages queued again" },
            "ids": { "type": "array", "items": { "type": "string" }, "description": "the messages queued again (at most 1000 shown)" },
            "processed": { "type": "integer" },
            "failed": { "type": "integer" },
            "pending": { "type": "integer", "description": "not finished when the call returned" },
            "timed_out": { "type": "boolean" },
        }),
        &[
            "requeued",
            "ids",
            "processed",
            "failed",
            "pending",
            "timed_out",
        ],
    )
}

pub fn deleted() -> Arc<JsonObject> {
    object(
        json!({ "id": { "type": "string" }, "deleted": { "type": "boolean" } }),
        &["id", "deleted"],
    )
}

pub fn score_report() -> Arc<JsonObject> {
    object(
        json!({
            "score": { "type": "number" },
            "required_score": { "type": "number" },
            "action": { "type": "string", "enum": ["no action", "greylist", "add header", "rewrite subject", "reject"] },
            "is_spam": { "type": "boolean" },
            "profile": { "type": "string" },
            "symbols": {
                "type": "array",
                "description": "every rule that fired; their scores add up to score",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "score": { "type": "number" },
                        "description": { "type": "string" },
                        "options": { "type": "array", "items": { "type": "string" }, "description": "evidence: the URL, header or word" },
                    },
                    "required": ["name", "score"],
                },
            },
            "model": { "type": "object", "description": "the statistical model's probability of spam and version" },
            "subject": { "type": "string" },
            "scan_time_us": { "type": "integer" },
        }),
        &["score", "required_score", "action", "is_spam", "symbols"],
    )
}

pub fn learned() -> Arc<JsonObject> {
    object(
        json!({
            "learned": { "type": "string", "enum": ["ham", "spam"] },
            "model": { "type": "object" },
        }),
        &["learned", "model"],
    )
}
