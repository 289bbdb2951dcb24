//! The `email` toolset: ingest a raw message, list and search, get one,
//! reprocess (with progress and cancellation), delete, processing status.
//! Arguments are checked by `mailroom_app::query`, as the REST API's are,
//! and answers are the REST API's JSON documents.

use std::time::Duration;

use base64::Engine;
use mailroom_app::{actions, now_ms, query, AuditLog, ProcessStatus, Source};
use mailroom_domain::{MessageId, MessageStatus};
use mailroom_security::Scope;
use mailroom_store::RequeueFilter;
use rmcp::{
    handler::server::wrapper::Parameters,
    model::{CallToolResult, ProgressNotificationParam},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router, ErrorData, RoleServer,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    answer, caller_of, schemas, store_failed, tool_error, tool_ok,
    toolsets::{policy, ToolPolicy},
    MailroomMcp,
};

/// As their REST twins: `GET /api/v1/messages[/{id}]`, `GET
/// /process/status`, `POST /api/v1/messages`, `POST /process/trigger`,
/// `DELETE /api/v1/messages/{id}`.
pub(crate) const POLICIES: &[ToolPolicy] = &[
    policy("messages_list", Scope::Read, 1),
    policy("message_get", Scope::Read, 1),
    policy("processing_status", Scope::Read, 1),
    policy("message_ingest", Scope::Write, 1),
    policy("messages_reprocess", Scope::Admin, 10),
    policy("message_delete", Scope::Admin, 2),
];

/// Most ids one reprocess call takes.
const MAX_REPROCESS_IDS: usize = 1000;
/// How long a reprocess call waits for its messages by default, and at most.
const DEFAULT_WAIT_SECONDS: u32 = 60;
const MAX_WAIT_SECONDS: u32 = 600;
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only messages in this status: queued, processing, processed, failed or dead.
    pub status: Option<String>,
    /// Part of the sender address, any case (a domain works).
    pub from: Option<String>,
    /// Received at or after: RFC 3339 time, YYYY-MM-DD or Unix seconds.
    pub since: Option<String>,
    /// Received before: RFC 3339 time, YYYY-MM-DD or Unix seconds.
    pub until: Option<String>,
    /// Text to find in the subject, sender or body.
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// Message id (as listed by messages_list).
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestArgs {
    /// The whole RFC 5322 message: headers, blank line, body.
    pub raw: String,
    /// `text` (default) or `base64` when `raw` is the message base64-encoded.
    pub encoding: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReprocessArgs {
    /// Only these message ids (at most 1000; required with processed).
    pub ids: Option<Vec<String>>,
    /// Statuses to re-run: failed, dead, processed (default: failed and dead).
    pub status: Option<Vec<String>>,
    /// Wait until the messages are processed again, reporting progress (default true).
    pub wait: Option<bool>,
    /// Longest wait in seconds, 1 to 600 (default 60).
    pub timeout_seconds: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

fn parse_id(raw: &str) -> Result<MessageId, CallToolResult> {
    query::message_id(raw).map_err(|e| tool_error(format!("id: {e}")))
}

#[tool_router(router = email_tools, vis = "pub(crate)")]
impl MailroomMcp {
    #[tool(
        description = "List stored messages, newest first, with optional filters; returns summaries and next_cursor for the next page.",
        output_schema = schemas::message_page(),
        annotations(
            title = "List messages",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn messages_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let filter = query::ListQuery {
                    status: args.status,
                    from: args.from,
                    since: args.since,
                    until: args.until,
                    q: args.q,
                    cursor: args.cursor,
                    limit: args.limit.map(|n| n.to_string()),
                }
                .filter()
                .map_err(|e| tool_error(e.0))?;
                let page = self
                    .ctx
                    .store
                    .list_messages(&filter)
                    .await
                    .map_err(store_failed)?;
                Ok(tool_ok(json!({
                    "items": page.items.iter().map(query::summary_json).collect::<Vec<_>>(),
                    "next_cursor": page.next,
                })))
            }
            .await,
        )
    }

    #[tool(
        description = "Get one message: summary, parsed view (addresses, subject, text, attachments, links), job and processing history.",
        output_schema = schemas::message_detail(),
        annotations(
            title = "Get a message",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn message_get(
        &self,
        Parameters(args): Parameters<IdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let id = parse_id(&args.id)?;
                let record = self
                    .ctx
                    .store
                    .message(&id)
                    .await
                    .map_err(store_failed)?
                    .ok_or_else(|| tool_error(format!("no message with id {id}")))?;
                Ok(tool_ok(query::detail_json(&record)))
            }
            .await,
        )
    }

    #[tool(
        description = "Queue depth, workers and today's processing counts.",
        output_schema = schemas::processing_status(),
        annotations(
            title = "Processing status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn processing_status(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let now = now_ms();
                let store = &self.ctx.store;
                let today = store
                    .processing_stats(mailroom_app::start_of_utc_day_ms(now))
                    .await
                    .map_err(store_failed)?;
                let queue = store.queue_stats(now).await.map_err(store_failed)?;
                let status = ProcessStatus::from_stats(&today, queue, &self.ctx.workers);
                Ok(tool_ok(serde_json::to_value(status).unwrap_or_default()))
            }
            .await,
        )
    }

    #[tool(
        description = "Store a raw email and queue it for processing. The same bytes twice give the first id with duplicate=true.",
        output_schema = schemas::ingest_receipt(),
        annotations(
            title = "Ingest a message",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn message_ingest(
        &self,
        Parameters(args): Parameters<IngestArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let raw = match args.encoding.as_deref().unwrap_or("text") {
                    "text" => args.raw.into_bytes(),
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(args.raw.trim())
                        .map_err(|e| tool_error(format!("raw: not valid base64 ({e})")))?,
                    other => {
                        return Err(tool_error(format!(
                            "encoding: `{other}` is not text or base64"
                        )))
                    }
                };
                let ingest = &self.ctx.ingest;
                // Held until the message is stored, like an HTTP body;
                // over HTTP the request's body is already reserved.
                let _reservation = if crate::http::body_reserved(&context) {
                    None
                } else {
                    Some(
                        ingest
                            .reserve(raw.len())
                            .await
                            .map_err(|e| tool_error(e.to_string()))?,
                    )
                };
                let receipt = ingest
                    .ingest(raw, Source::Mcp)
                    .await
                    .map_err(|e| tool_error(e.to_string()))?;
                Ok(tool_ok(json!({
                    "id": receipt.id,
                    "status": if receipt.duplicate { "duplicate" } else { "queued" },
                    "duplicate": receipt.duplicate,
                })))
            }
            .await,
        )
    }

    #[tool(
        description = "Run messages through the pipeline again (by ids and/or status: failed, dead, processed) and wait for them, with progress notifications.",
        output_schema = schemas::reprocess_result(),
        annotations(
            title = "Reprocess messages",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn messages_reprocess(
        &self,
        Parameters(args): Parameters<ReprocessArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.reprocess(args, context).await)
    }

    #[tool(
        description = "Erase a message and everything derived from it (raw bytes, parsed view, history). Cannot be undone.",
        output_schema = schemas::deleted(),
        annotations(
            title = "Delete a message",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn message_delete(
        &self,
        Parameters(args): Parameters<IdArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            async {
                let id = parse_id(&args.id)?;
                let deleted = self
                    .ctx
                    .store
                    .delete_message(&id)
                    .await
                    .map_err(store_failed)?;
                if !deleted {
                    return Err(tool_error(format!("no message with id {id}")));
                }
                tracing::info!(message_id = %id, "message deleted over MCP");
                let actor = caller_of(&context).actor;
                self.ctx
                    .audit
                    .record(AuditLog::event(
                        &actor,
                        actions::MESSAGE_DELETE,
                        "success",
                        Some(id.as_str()),
                        Some(json!({"surface": "mcp"})),
                    ))
                    .await
                    .map_err(store_failed)?;
                Ok(tool_ok(json!({"id": id, "deleted": true})))
            }
            .await,
        )
    }
}

impl MailroomMcp {
    async fn reprocess(
        &self,
        args: ReprocessArgs,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, CallToolResult> {
        let ids = args.ids.unwrap_or_default();
        if ids.len() > MAX_REPROCESS_IDS {
            return Err(tool_error(format!(
                "ids: at most {MAX_REPROCESS_IDS} per call, got {}",
                ids.len()
            )));
        }
        let message_ids = ids
            .iter()
            .map(|id| parse_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let statuses = args
            .status
            .unwrap_or_default()
            .iter()
            .map(|s| match s.parse::<MessageStatus>() {
                Ok(
                    st @ (MessageStatus::Failed | MessageStatus::Dead | MessageStatus::Processed),
                ) => Ok(st),
                _ => Err(tool_error(format!(
                    "status: `{s}` cannot be reprocessed; use failed, dead or processed"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Re-running finished work is for named messages only: "every
        // processed message" is a migration, not a tool call.
        if statuses.contains(&MessageStatus::Processed) && message_ids.is_empty() {
            return Err(tool_error(
                "ids: name the messages (at most 1000) to re-run processed ones",
            ));
        }
        let timeout = args.timeout_seconds.unwrap_or(DEFAULT_WAIT_SECONDS);
        if !(1..=MAX_WAIT_SECONDS).contains(&timeout) {
            return Err(tool_error(format!(
                "timeout_seconds: {timeout} is not from 1 to {MAX_WAIT_SECONDS}"
            )));
        }
        let requeued = mailroom_app::requeue_and_wake(
            &self.ctx.store,
            &self.ctx.wake,
            &RequeueFilter {
                message_ids,
                statuses,
            },
        )
        .await
        .map_err(store_failed)?;
        let actor = caller_of(&context).actor;
        self.ctx
            .audit
            .record(AuditLog::event(
                &actor,
                actions::PROCESS_TRIGGER,
                "success",
                None,
                Some(json!({"requeued": requeued.len(), "surface": "mcp"})),
            ))
            .await
            .map_err(store_failed)?;
        let total = requeued.len();
        let progress_token = context.meta.get_progress_token();
        let mut wait = Duration::from_secs(timeout.into());
        if progress_token.is_none()
            && context
                .extensions
                .get::<axum::http::request::Parts>()
                .is_some()
        {
            // Over HTTP the answer's headers wait for the first message:
            // without progress notifications, the wait must end before the
            // server's request deadline.
            wait = wait.min(self.ctx.http_wait_limit);
        }
        let mut counts = Counts::default();
        let mut timed_out = false;
        // Many messages (failed or dead, by status) are re-queued but not
        // watched: polling them all would cost more than the work.
        if args.wait.unwrap_or(true) && total > 0 && total <= MAX_REPROCESS_IDS {
            let deadline = tokio::time::Instant::now() + wait;
            // Progress only ever rises (a failed message that is retried
            // goes back to processing).
            let mut reported: Option<usize> = None;
            loop {
                let statuses = self
                    .ctx
                    .store
                    .status_counts(&requeued)
                    .await
                    .map_err(store_failed)?;
                counts = Counts::of(&statuses, total);
                let finished = counts.finished();
                if let Some(token) = &progress_token {
                    if reported.is_none_or(|r| finished > r) {
                        reported = Some(finished);
                        let _ = context
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), finished as f64)
                                    .with_total(total as f64)
                                    .with_message(format!(
                                        "{} of {total} processed, {} failed",
                                        counts.processed,
                                        counts.failed + counts.dead
                                    )),
                            )
                            .await;
                    }
                }
                if finished >= total {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                tokio::select! {
                    // The client cancelled: stop waiting (the messages stay
                    // queued and are processed anyway).
                    () = context.ct.cancelled() => {
                        return Err(tool_error("cancelled; the messages stay queued"));
                    }
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        }
        Ok(tool_ok(json!({
            "requeued": total,
            "ids": requeued.iter().take(MAX_REPROCESS_IDS).collect::<Vec<_>>(),
            "processed": counts.processed,
            "failed": counts.failed + counts.dead,
            "pending": total.saturating_sub(counts.finished()),
            "timed_out": timed_out,
        })))
    }
}

/// Where a set of re-queued messages stands.
#[derive(Default)]
struct Counts {
    processed: usize,
    failed: usize,
    dead: usize,
    /// Deleted while waited for.
    gone: usize,
}

impl Counts {
    /// From the status counts of `total` messages; messages deleted
    /// meanwhile are finished too.
    fn of(statuses: &[(MessageStatus, u64)], total: usize) -> Self {
        let mut counts = Self::default();
        let mut present = 0;
        for (status, n) in statuses {
            let n = *n as usize;
            present += n;
            match status {
                MessageStatus::Processed => counts.processed += n,
                MessageStatus::Failed => counts.failed += n,
                MessageStatus::Dead => counts.dead += n,
                _ => {}
            }
        }
        counts.gone = total.saturating_sub(present);
        counts
    }

    fn finished(&self) -> usize {
        self.processed + self.failed + self.dead + self.gone
    }
}
