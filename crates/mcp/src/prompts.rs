//! Prompts: `triage-inbox` (the recent messages, to sort and act on) and
//! `draft-reply` (one message, to answer), and completion of their
//! arguments (message ids, statuses) and of the resource templates' ids.

use mailroom_app::query::{self, ListQuery};
use mailroom_store::MessageSummary;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptResult, JsonObject, Prompt,
    PromptArgument, PromptMessage, Reference, Role,
};
use rmcp::ErrorData;

use crate::{database_error, McpContext};

const STATUSES: [&str; 5] = ["queued", "processing", "processed", "failed", "dead"];
const TRIAGE_DEFAULT: u32 = 20;
const TRIAGE_MAX: u32 = 100;
/// How many recent messages id completion looks through.
const COMPLETION_SCAN: u32 = 500;

pub fn list() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "triage-inbox",
            Some("Sort the most recent messages: what each is, how urgent, and what to do with it"),
            Some(vec![
                PromptArgument::new("status")
                    .with_description("only messages in this status (queued, processing, processed, failed, dead)")
                    .with_required(false),
                PromptArgument::new("limit")
                    .with_description("how many recent messages, 1 to 100 (default 20)")
                    .with_required(false),
            ]),
        ),
        Prompt::new(
            "draft-reply",
            Some("Draft a reply to one stored message"),
            Some(vec![
                PromptArgument::new("id")
                    .with_description("the message id")
                    .with_required(true),
                PromptArgument::new("tone")
                    .with_description("e.g. formal, friendly, brief (default: professional)")
                    .with_required(false),
            ]),
        ),
    ]
}

fn argument<'a>(arguments: Option<&'a JsonObject>, name: &str) -> Option<&'a str> {
    arguments
        .and_then(|a| a.get(name))
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn summary_line(m: &MessageSummary) -> String {
    format!(
        "- id {} | {} | from {} | subject {}",
        m.id,
        m.status,
        m.from_addr.as_deref().unwrap_or("(unknown)"),
        m.subject.as_deref().unwrap_or("(none)")
    )
}

/// A prompt; `scoring` says whether the score tools are offered (the
/// prompt names only tools the agent has).
pub async fn get(
    ctx: &McpContext,
    name: &str,
    arguments: Option<&JsonObject>,
    scoring: bool,
) -> Result<GetPromptResult, ErrorData> {
    match name {
        "triage-inbox" => {
            let limit = match argument(arguments, "limit") {
                None => TRIAGE_DEFAULT,
                Some(raw) => query::limit_param(Some(raw), TRIAGE_DEFAULT, TRIAGE_MAX)
                    .map_err(|e| ErrorData::invalid_params(e.0, None))?,
            };
            let filter = ListQuery {
                status: argument(arguments, "status").map(str::to_string),
                limit: Some(limit.to_string()),
                ..Default::default()
            }
            .filter()
            .map_err(|e| ErrorData::invalid_params(e.0, None))?;
            let page = ctx
                .store
                .list_messages(&filter)
                .await
                .map_err(database_error)?;
            let listing = if page.items.is_empty() {
                "(no messages match)".to_string()
            } else {
                page.items
                    .iter()
                    .map(summary_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let score = if scoring {
                "score it if it may be spam or phishing (message_score), then "
            } else {
                ""
            };
            let text = format!(
                "Triage these {} most recent messages from mailroom.\n\n{listing}\n\n\
                 For each message: read it (message_get, or the resource mailroom://messages/{{id}}), \
                 {score}say in one line what it is \
                 (support, billing, sales, complaint, security, newsletter, notification, personal, spam), \
                 how urgent it is (now, today, later, never), and the next action. \
                 Put anything that needs a person first. Do not delete anything without asking.",
                page.items.len()
            );
            Ok(
                GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                    .with_description("Triage of the most recent messages"),
            )
        }
        "draft-reply" => {
            let raw_id = argument(arguments, "id")
                .ok_or_else(|| ErrorData::invalid_params("argument `id` is required", None))?;
            let id = query::message_id(raw_id)
                .map_err(|e| ErrorData::invalid_params(format!("id: {e}"), None))?;
            let record = ctx
                .store
                .message(&id)
                .await
                .map_err(database_error)?
                .ok_or_else(|| {
                    ErrorData::invalid_params(format!("no message with id {id}"), None)
                })?;
            let tone = argument(arguments, "tone").unwrap_or("professional");
            let body = record
                .view
                .as_ref()
                .map(|v| v.text_body.chars().take(20_000).collect::<String>())
                .unwrap_or_default();
            let text = format!(
                "Draft a reply, in a {tone} tone, to this email. Answer what it asks; do not invent \
                 facts, prices or commitments — mark anything you would need to check as [CHECK]. \
                 Give only the reply's subject line and body.\n\n\
                 From: {}\nSubject: {}\n\n{body}",
                record.summary.from_addr.as_deref().unwrap_or("(unknown)"),
                record.summary.subject.as_deref().unwrap_or("(none)"),
            );
            Ok(
                GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                    .with_description(format!("Reply to message {id}")),
            )
        }
        other => Err(ErrorData::invalid_params(
            format!("unknown prompt `{other}`; prompts/list shows triage-inbox and draft-reply"),
            None,
        )),
    }
}

/// Completion of prompt arguments and of resource-template ids.
pub async fn complete(
    ctx: &McpContext,
    request: &CompleteRequestParams,
) -> Result<CompleteResult, ErrorData> {
    let argument = request.argument.name.as_str();
    let typed = request.argument.value.as_str();
    let wants_id = match &request.r#ref {
        Reference::Prompt(p) => p.name == "draft-reply" && argument == "id",
        Reference::Resource(r) => r.uri.starts_with("mailroom://messages/") && argument == "id",
        _ => false,
    };
    let wants_status = matches!(&request.r#ref, Reference::Prompt(p) if p.name == "triage-inbox")
        && argument == "status";
    let mut values: Vec<String> = if wants_status {
        STATUSES
            .iter()
            .filter(|s| s.starts_with(typed))
            .map(|s| s.to_string())
            .collect()
    } else if wants_id {
        let filter = ListQuery {
            limit: Some(COMPLETION_SCAN.to_string()),
            ..Default::default()
        }
        .filter()
        .map_err(|e| ErrorData::invalid_params(e.0, None))?;
        let page = ctx
            .store
            .list_messages(&filter)
            .await
            .map_err(database_error)?;
        page.items
            .iter()
            .map(|m| m.id.to_string())
            .filter(|id| id.starts_with(typed))
            .collect()
    } else {
        Vec::new()
    };
    let total = values.len();
    values.truncate(CompletionInfo::MAX_VALUES);
    let mut info = CompletionInfo::new(values).unwrap_or_default();
    info.total = Some(total as u32);
    info.has_more = Some(total > CompletionInfo::MAX_VALUES);
    Ok(CompleteResult::new(info))
}
