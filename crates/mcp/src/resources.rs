//! Resources: every stored message as `mailroom://messages/{id}` (the
//! parsed view, JSON, as `message_get` returns it) and
//! `mailroom://messages/{id}/raw` (the bytes as received, message/rfc822).
//! `resources/list` pages through the messages newest first.

use base64::Engine;
use mailroom_app::query::{self, ListQuery};
use mailroom_store::MessageSummary;
use rmcp::model::{
    CacheScope, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::ErrorData;

use crate::{database_error, McpContext};

const PREFIX: &str = "mailroom://messages/";
const PAGE: u32 = 50;

fn resource(m: &MessageSummary) -> Resource {
    let name = m
        .subject
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("message {}", m.id));
    let mut resource = Resource::new(format!("{PREFIX}{}", m.id), name)
        .with_mime_type("application/json")
        .with_size(m.size_bytes.max(0) as u64);
    if let Some(from) = &m.from_addr {
        resource = resource.with_description(format!("from {from}, {}", m.status));
    }
    resource
}

pub async fn list(
    ctx: &McpContext,
    cursor: Option<String>,
    modern: bool,
) -> Result<ListResourcesResult, ErrorData> {
    let filter = ListQuery {
        cursor,
        limit: Some(PAGE.to_string()),
        ..Default::default()
    }
    .filter()
    .map_err(|e| ErrorData::invalid_params(format!("invalid cursor: {e}"), None))?;
    let page = ctx
        .store
        .list_messages(&filter)
        .await
        .map_err(database_error)?;
    let mut result = ListResourcesResult::with_all_items(page.items.iter().map(resource).collect());
    result.next_cursor = page.next.map(|id| id.to_string());
    if modern {
        // Messages arrive all the time; the list is never fresh for long.
        result = result.with_ttl_ms(0).with_cache_scope(CacheScope::Private);
    }
    Ok(result)
}

pub fn templates(modern: bool) -> ListResourceTemplatesResult {
    let mut result = ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{PREFIX}{{id}}"), "message")
            .with_title("A stored message")
            .with_description("Summary, parsed view, job and processing history (JSON)")
            .with_mime_type("application/json"),
        ResourceTemplate::new(format!("{PREFIX}{{id}}/raw"), "message-raw")
            .with_title("A stored message, raw")
            .with_description("The message exactly as received (RFC 5322)")
            .with_mime_type("message/rfc822"),
    ]);
    if modern {
        result = result
            .with_ttl_ms(3_600_000)
            .with_cache_scope(CacheScope::Public);
    }
    result
}

fn not_found(uri: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!(
            "no resource {uri}; expected {PREFIX}{{id}} or {PREFIX}{{id}}/raw of a stored message"
        ),
        Some(serde_json::json!({ "uri": uri })),
    )
}

pub async fn read(
    ctx: &McpContext,
    uri: &str,
    modern: bool,
) -> Result<ReadResourceResult, ErrorData> {
    let rest = uri.strip_prefix(PREFIX).ok_or_else(|| not_found(uri))?;
    let (id, raw) = match rest.strip_suffix("/raw") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let id = query::message_id(id).map_err(|_| not_found(uri))?;
    let contents = if raw {
        let bytes = ctx
            .store
            .raw_message(&id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found(uri))?;
        // Mail is mostly text; 8-bit bodies that are not UTF-8 go as a blob.
        match String::from_utf8(bytes) {
            Ok(text) => ResourceContents::text(text, uri),
            Err(e) => ResourceContents::blob(
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                uri,
            ),
        }
        .with_mime_type("message/rfc822")
    } else {
        let record = ctx
            .store
            .message(&id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found(uri))?;
        ResourceContents::text(query::detail_json(&record).to_string(), uri)
            .with_mime_type("application/json")
    };
    let mut result = ReadResourceResult::new(vec![contents]);
    if modern {
        // The raw bytes never change; the parsed view does while processing.
        result = result
            .with_ttl_ms(if raw { 3_600_000 } else { 0 })
            .with_cache_scope(CacheScope::Private);
    }
    Ok(result)
}
