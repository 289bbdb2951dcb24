//! MCP adapter: mailroom as a Model Context Protocol server, on the official
//! Rust SDK (`rmcp`), over stdio (`mailroom mcp`) and Streamable HTTP
//! (`/mcp` on the API server), in both protocol eras (2026-07-28
//! stateless, and 2025-11-25 with its initialize handshake and sessions).
//!
//! The server core here knows toolsets only through [`toolsets::TOOLSETS`]:
//! a toolset is a router of tools plus the scope each tool needs. Adding a
//! toolset (triage, utils, …) is a new module and one line in that table.
//!
//! Invariants: tools call the use cases of `mailroom-app` and the same
//! checks and JSON shapes as the REST API (`mailroom_app::query`); errors a
//! model can act on (unknown id, invalid filter, missing scope) come back
//! as `isError` results, protocol errors only for malformed calls; every
//! call is counted in `mcp_tool_calls_total{tool,outcome}`.

mod email;
mod http;
mod prompts;
mod resources;
mod schemas;
mod score;
pub mod toolsets;

use std::{sync::Arc, time::Instant};

use mailroom_app::{
    Actor, AuditLog, ChargeRefused, IngestService, RateCharge, ScoreService, WorkerState,
};
use mailroom_security::Scopes;
use mailroom_store::Store;
use mailroom_telemetry::names;
use rmcp::{
    handler::server::tool::{ToolCallContext, ToolRouter},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
        CompleteResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
        PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    ErrorData, RoleServer, ServerHandler,
};
use serde_json::Value;
use tokio::sync::Notify;

pub use http::{router as http_router, McpHttpSettings};
pub use toolsets::{ToolPolicy, ToolSelection, ToolsetError};

/// What the tools work with: the same services the REST API uses.
#[derive(Clone)]
pub struct McpContext {
    pub store: Store,
    pub ingest: IngestService,
    /// Wakes the workers after a re-queue.
    pub wake: Arc<Notify>,
    pub scoring: Arc<ScoreService>,
    pub audit: AuditLog,
    pub workers: Arc<WorkerState>,
    /// Longest a tool may wait without sending anything over HTTP: under the
    /// server's request deadline (`http.request_timeout_seconds`).
    pub http_wait_limit: std::time::Duration,
}

/// The MCP server: cheap to clone (one per HTTP session or stdio
/// connection), all state shared.
#[derive(Clone)]
pub struct MailroomMcp {
    ctx: Arc<McpContext>,
    tools: Arc<ToolRouter<MailroomMcp>>,
    policies: Arc<Vec<(String, ToolPolicy)>>,
    /// The email toolset carries the message resources and the prompts
    /// (as GitHub's toolsets carry theirs): without it they are not offered.
    messages: bool,
}

/// Who is calling, as the HTTP guard established it (stdio: the local
/// operator, who already holds the database, unlimited).
struct CallerInfo {
    scopes: Scopes,
    actor: Actor,
    charge: Option<RateCharge>,
}

impl CallerInfo {
    /// Charges a call of `cost` tokens: the HTTP request already paid 1,
    /// the call pays the rest of its REST twin's cost.
    async fn charge(&self, cost: u32) -> Result<(), ChargeRefused> {
        match &self.charge {
            Some(charge) => charge.take(cost.saturating_sub(1)).await,
            None => Ok(()),
        }
    }
}

fn caller_of(context: &RequestContext<RoleServer>) -> CallerInfo {
    match context.extensions.get::<axum::http::request::Parts>() {
        Some(parts) => CallerInfo {
            // The guard always grants scopes on /mcp; if it did not, the
            // least is assumed.
            scopes: parts
                .extensions
                .get::<Scopes>()
                .copied()
                .unwrap_or_else(Scopes::read_only),
            actor: parts.extensions.get::<Actor>().cloned().unwrap_or(Actor {
                name: "anonymous".into(),
                ip: None,
            }),
            charge: parts.extensions.get::<RateCharge>().cloned(),
        },
        None => CallerInfo {
            scopes: Scopes::admin(),
            actor: Actor {
                name: "mcp-stdio".into(),
                ip: None,
            },
            charge: None,
        },
    }
}

impl MailroomMcp {
    pub fn new(ctx: McpContext, selection: &ToolSelection) -> Self {
        let (tools, policies) = selection.build();
        Self {
            ctx: Arc::new(ctx),
            messages: selection.toolsets().contains(&"email"),
            tools: Arc::new(tools),
            policies: Arc::new(policies),
        }
    }

    /// A tool's policy, or `None` for a tool this server does not offer.
    fn policy(&self, tool: &str) -> Option<ToolPolicy> {
        self.policies
            .iter()
            .find(|(name, _)| name == tool)
            .map(|(_, policy)| *policy)
    }

    /// Every tool offered, as `tools/list` shows it to a caller holding
    /// every scope (the schema snapshot test reads this).
    pub fn tool_definitions(&self) -> Vec<rmcp::model::Tool> {
        self.tools.list_all()
    }

    /// Serves one client on stdin/stdout until it disconnects.
    pub async fn serve_stdio(self) -> Result<(), McpError> {
        use rmcp::ServiceExt;
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP transport: {0}")]
    Transport(String),
}

/// A tool's failure a model can act on: an `isError` result whose text says
/// what was wrong. No structured content: it would not match the tool's
/// output schema, which describes success.
pub(crate) fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A database failure during a tool call, told to the model as a failed
/// call (it may retry) and logged in full for the operator.
pub(crate) fn store_failed(e: impl std::fmt::Display) -> CallToolResult {
    tracing::error!(error = %e, "MCP tool: the database failed");
    tool_error(format!("the database failed; try again later ({e})"))
}

/// A database failure outside tools (resources, prompts, completion): a
/// protocol error, logged.
pub(crate) fn database_error(e: mailroom_store::StoreError) -> ErrorData {
    tracing::error!(error = %e, "MCP: the database failed");
    ErrorData::internal_error(format!("the database failed: {e}"), None)
}

/// A tool body's `Ok` and `Err` are both answers to the model.
pub(crate) fn answer(
    result: Result<CallToolResult, CallToolResult>,
) -> Result<CallToolResult, ErrorData> {
    Ok(result.unwrap_or_else(|e| e))
}

/// A tool's answer: the JSON as structured content and as text.
pub(crate) fn tool_ok(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// Cache hints exist from 2026-07-28 on; older clients get none.
pub(crate) fn modern(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
}

const INSTRUCTIONS: &str = "mailroom stores, scores and processes email. \
Find messages with messages_list (filters: status, from, since, until, q) and read one \
with message_get or the resources mailroom://messages/{id} (JSON) and \
mailroom://messages/{id}/raw (RFC 822); message_score explains a spam score. \
Tools that change state say so in their annotations.";

impl ServerHandler for MailroomMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = if self.messages {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mailroom", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller_of(&context);
        // A key sees only the tools it may call (read keys: read-only tools).
        let tools = self
            .tools
            .list_all()
            .into_iter()
            .filter(|tool| {
                self.policy(&tool.name)
                    .is_some_and(|p| caller.scopes.allows(p.scope))
            })
            .collect();
        let mut result = ListToolsResult::with_all_items(tools);
        if modern(&context) {
            // The list depends on the caller's key: private, not shared.
            result = result
                .with_ttl_ms(0)
                .with_cache_scope(rmcp::model::CacheScope::Private);
        }
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tools.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let name = request.name.to_string();
        let Some(policy) = self.policy(&name) else {
            metrics::counter!(names::MCP_TOOL_CALLS_TOTAL, "tool" => "unknown", "outcome" => "unknown_tool")
                .increment(1);
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`; tools/list shows the tools offered"),
                None,
            ));
        };
        let caller = caller_of(&context);
        let (outcome, result) = if !caller.scopes.allows(policy.scope) {
            let message = format!(
                "`{name}` needs an API key with the `{}` scope; this key has `{}`",
                policy.scope, caller.scopes
            );
            ("denied", Ok(tool_error(message).into()))
        } else if let Err(refused) = caller.charge(policy.cost).await {
            let message = match refused {
                ChargeRefused::RateLimited { retry_after_secs } => format!(
                    "rate limit exceeded for this API key; retry `{name}` in {retry_after_secs} s"
                ),
                ChargeRefused::Unavailable => {
                    "the shared rate limiter is unreachable; try again later".to_string()
                }
            };
            ("rate_limited", Ok(tool_error(message).into()))
        } else {
            let result = self
                .tools
                .call(ToolCallContext::new(self, request, context))
                .await;
            let outcome = match &result {
                Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => "error",
                Ok(_) => "ok",
                Err(_) => "invalid_call",
            };
            (outcome, result)
        };
        metrics::counter!(names::MCP_TOOL_CALLS_TOTAL, "tool" => name.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(names::MCP_TOOL_DURATION_SECONDS, "tool" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::ListResourcesRequestMethod,
            >());
        }
        resources::list(&self.ctx, request.and_then(|r| r.cursor), modern(&context)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::ListResourceTemplatesRequestMethod,
            >());
        }
        Ok(resources::templates(modern(&context)))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::ReadResourceRequestMethod,
            >());
        }
        resources::read(&self.ctx, &request.uri, modern(&context))
            .await
            .map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::ListPromptsRequestMethod,
            >());
        }
        let mut result = ListPromptsResult::with_all_items(prompts::list());
        if modern(&context) {
            result = result
                .with_ttl_ms(60_000)
                .with_cache_scope(rmcp::model::CacheScope::Public);
        }
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::GetPromptRequestMethod,
            >());
        }
        let scoring = self.policy("message_score").is_some();
        prompts::get(
            &self.ctx,
            &request.name,
            request.arguments.as_ref(),
            scoring,
        )
        .await
        .map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        if !self.messages {
            return Err(ErrorData::method_not_found::<
                rmcp::model::CompleteRequestMethod,
            >());
        }
        prompts::complete(&self.ctx, &request).await
    }
}
