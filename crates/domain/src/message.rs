use serde::{Deserialize, Serialize};

/// A mailbox as written in a header: optional display name and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What we keep about an attachment: never its content, which stays in the raw
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
}

/// The parsed view of a message that every later stage reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MessageView {
    pub from: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub subject: Option<String>,
    /// The Date header in RFC 3339, when it parsed.
    pub date: Option<String>,
    /// The Date header as seconds since the Unix epoch, when it parsed.
    pub date_unix: Option<i64>,
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Plain text body; converted from HTML when the message has no text part.
    #[serde(default)]
    pub text_body: String,
    /// True when `text_body` was derived from an HTML part.
    pub text_from_html: bool,
    pub attachments: Vec<AttachmentMeta>,
    /// Distinct URLs found in the text and HTML bodies, in order of appearance.
    pub links: Vec<String>,
    /// Structural problems the parser recovered from (truncation, limits).
    pub warnings: Vec<String>,
    /// The scoring stage's report, when it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<crate::ScoreReport>,
}

/// Outcome of one pipeline stage on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Ok,
    Error,
}

/// One row of a message's processing history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingStep {
    pub stage: String,
    pub attempt: u32,
    pub outcome: StepOutcome,
    /// Milliseconds since the Unix epoch at which the stage started.
    pub started_at_ms: i64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
