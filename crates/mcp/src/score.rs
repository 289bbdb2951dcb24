//! The `score` toolset: score a message (every symbol with its evidence)
//! and teach the live model ham or spam, on the same engine and model as
//! `POST /api/v1/score` and `POST /api/v1/learn/{label}`.

use std::sync::Arc;

use mailroom_app::{actions, AuditLog, ScoringError};
use mailroom_score::{Envelope, Label, ScoreError};
use mailroom_security::Scope;
use rmcp::{
    handler::server::wrapper::Parameters,
    model::CallToolResult,
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

/// As `POST /api/v1/score` (scoring stores nothing: a read key may scan
/// mail) and `POST /api/v1/learn/{label}`.
pub(crate) const POLICIES: &[ToolPolicy] = &[
    policy("message_score", Scope::Read, 2),
    policy("score_learn", Scope::Write, 5),
];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreArgs {
    /// A raw RFC 5322 message to score (give this or `id`).
    pub raw: Option<String>,
    /// Id of a stored message to score (give this or `raw`).
    pub id: Option<String>,
    /// Settings profile, e.g. inbound or outbound (default: the configured one).
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnArgs {
    /// `ham` or `spam`.
    pub label: String,
    /// A raw RFC 5322 message (give this or `id`).
    pub raw: Option<String>,
    /// Id of a stored message (give this or `raw`).
    pub id: Option<String>,
}

impl MailroomMcp {
    /// The message a score or learn call names: its raw text or a stored id.
    async fn message_bytes(
        &self,
        raw: Option<String>,
        id: Option<String>,
    ) -> Result<Vec<u8>, CallToolResult> {
        let bytes = match (raw, id) {
            (Some(raw), None) => raw.into_bytes(),
            (None, Some(id)) => {
                let id = mailroom_app::query::message_id(&id)
                    .map_err(|e| tool_error(format!("id: {e}")))?;
                self.ctx
                    .store
                    .raw_message(&id)
                    .await
                    .map_err(store_failed)?
                    .ok_or_else(|| tool_error(format!("no message with id {id}")))?
            }
            _ => return Err(tool_error("give exactly one of `raw` and `id`")),
        };
        let limit = self.ctx.ingest.max_bytes();
        if bytes.len() > limit {
            return Err(tool_error(format!(
                "the message is {} bytes; the limit is {limit}",
                bytes.len()
            )));
        }
        // The ingest admission check (is this an email at all?), as REST
        // scoring applies it.
        mailroom_mail::check_ingestible(&bytes).map_err(|e| tool_error(e.to_string()))?;
        Ok(bytes)
    }
}

fn scoring_failed(e: ScoringError) -> CallToolResult {
    match e {
        ScoringError::Score(ScoreError::UnknownProfile(p)) => {
            tool_error(format!("profile: unknown settings profile `{p}`"))
        }
        other => {
            tracing::error!(error = %other, "MCP scoring failed");
            tool_error(format!("scoring failed: {other}"))
        }
    }
}

#[tool_router(router = score_tools, vis = "pub(crate)")]
impl MailroomMcp {
    #[tool(
        description = "Score a message for spam and phishing: total score, action, and every rule that fired with its points and evidence, plus the model's probability.",
        output_schema = schemas::score_report(),
        annotations(
            title = "Score a message",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn message_score(
        &self,
        Parameters(args): Parameters<ScoreArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            if args.profile.as_deref().is_some_and(|p| p.len() > 64) {
                return Err(tool_error("profile: at most 64 characters"));
            }
            let raw = self.message_bytes(args.raw, args.id).await?;
            let report = self
                .ctx
                .scoring
                .score_async(Arc::new(raw), Envelope::default(), args.profile)
                .await
                .map_err(scoring_failed)?;
            Ok(tool_ok(serde_json::to_value(report).unwrap_or_default()))
        }
        .await;
        answer(result)
    }

    #[tool(
        description = "Teach the live model that a message is ham or spam (a correction); the model file is updated before the call returns.",
        output_schema = schemas::learned(),
        annotations(
            title = "Learn ham or spam",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn score_learn(
        &self,
        Parameters(args): Parameters<LearnArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let label = match args.label.as_str() {
                "ham" => Label::Ham,
                "spam" => Label::Spam,
                other => return Err(tool_error(format!("label: `{other}` is not ham or spam"))),
            };
            let raw = self.message_bytes(args.raw, args.id).await?;
            let scoring = Arc::clone(&self.ctx.scoring);
            let info = tokio::task::spawn_blocking(move || scoring.learn(&raw, label))
                .await
                .map_err(|e| tool_error(format!("learning failed: {e}")))?
                .map_err(scoring_failed)?;
            let actor = caller_of(&context).actor;
            self.ctx
                .audit
                .record(AuditLog::event(
                    &actor,
                    actions::MODEL_LEARN,
                    "success",
                    Some(label.as_str()),
                    Some(json!({ "model": info.version, "online_updates": info.online_updates, "surface": "mcp" })),
                ))
                .await
                .map_err(store_failed)?;
            Ok(tool_ok(mailroom_app::learned_json(label, &info)))
        }
        .await;
        answer(result)
    }
}
