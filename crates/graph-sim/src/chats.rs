//! Teams chats: `POST /v1.0/chats` and `POST /v1.0/chats/{id}/messages`.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};

use crate::graph::{Caller, GraphError, GraphRequest, GraphResponse, GraphResult};
use crate::state::{graph_time, random_bytes, stable_guid, Chat, Inner};
use crate::ChatView;

const MEMBER_TYPE: &str = "#microsoft.graph.aadUserConversationMember";

pub(crate) fn view(c: &Chat) -> ChatView {
    ChatView {
        id: c.id.clone(),
        topic: c.topic.clone(),
        chat_type: c.chat_type.clone(),
        members: c.members.clone(),
        messages: c.messages.clone(),
    }
}

/// The user id inside `https://graph.microsoft.com/v1.0/users('{id}')`
/// (also `.../users/{id}`).
fn bound_user(bind: &str) -> Option<String> {
    if let Some(start) = bind.find("users('") {
        let rest = &bind[start + 7..];
        let end = rest.find("')")?;
        let id = &rest[..end];
        return (!id.is_empty()).then(|| id.to_string());
    }
    let (_, id) = bind.rsplit_once("/users/")?;
    let id = id.trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request("BadRequest", msg)
}

pub(crate) fn create(inner: &Arc<Inner>, req: &GraphRequest) -> GraphResult {
    let body = req.json_body()?;
    let chat_type = body
        .get("chatType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("chatType is required."))?;
    let chat_type = match chat_type.to_ascii_lowercase().as_str() {
        "group" => "group",
        "oneonone" => "oneOnOne",
        _ => {
            return Err(bad(format!(
                "Invalid chatType '{chat_type}'; use group or oneOnOne."
            )))
        }
    };
    let members = body
        .get("members")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("members is required."))?;
    let mut parsed = Vec::with_capacity(members.len());
    for m in members {
        let odata_type = m
            .get("@odata.type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !odata_type.eq_ignore_ascii_case(MEMBER_TYPE) {
            return Err(bad(format!(
                "Each member must have @odata.type '{MEMBER_TYPE}'."
            )));
        }
        let roles = m
            .get("roles")
            .and_then(Value::as_array)
            .and_then(|r| {
                r.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("Each member must have a roles array."))?;
        let user = m
            .get("user@odata.bind")
            .and_then(Value::as_str)
            .and_then(bound_user)
            .ok_or_else(|| bad("Each member must have user@odata.bind set to https://graph.microsoft.com/v1.0/users('{id}')."))?;
        parsed.push((user, roles));
    }
    match chat_type {
        "group" if parsed.len() < 2 => {
            return Err(bad(
                "A group chat needs at least 2 members, including the creator.",
            ))
        }
        "oneOnOne" if parsed.len() != 2 => {
            return Err(bad("A oneOnOne chat needs exactly 2 members."))
        }
        _ => {}
    }
    // Graph ignores a topic on oneOnOne chats.
    let topic = if chat_type == "group" {
        body.get("topic")
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    let chat = Chat {
        id: format!("19:{}@thread.v2", hex::encode(random_bytes::<16>())),
        topic,
        chat_type: chat_type.to_string(),
        members: parsed,
        messages: Vec::new(),
        created: Utc::now(),
    };
    let created = graph_time(chat.created);
    let out = json!({
        "@odata.context": format!("{}/$metadata#chats/$entity", inner.base_url()),
        "id": chat.id,
        "topic": chat.topic,
        "createdDateTime": created,
        "lastUpdatedDateTime": created,
        "chatType": chat.chat_type,
        "webUrl": format!("https://teams.microsoft.com/l/chat/{}/0?tenantId={}", chat.id, inner.config.tenant_id),
        "tenantId": inner.config.tenant_id,
        "isHiddenForAllMembers": false,
        "onlineMeetingInfo": null,
        "viewpoint": null,
    });
    inner.lock().chats.push(chat);
    Ok(GraphResponse::json(StatusCode::CREATED, out))
}

pub(crate) fn post_message(
    inner: &Arc<Inner>,
    req: &GraphRequest,
    caller: &Caller,
    chat_id: &str,
) -> GraphResult {
    // ChatMessage.Send has no application permission; app-only posting is
    // only for migration (Teamwork.Migrate.All), so Graph refuses it.
    let Some(user) = &caller.user else {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Message POST is allowed in application-only context only for import purposes. Refer to https://docs.microsoft.com/microsoftteams/platform/graph-api/import-messages/import-external-messages-to-teams for more details.",
        ));
    };
    let body = req.json_body()?;
    let content_type = body
        .get("body")
        .and_then(|b| b.get("contentType"))
        .and_then(Value::as_str)
        .unwrap_or("text")
        .to_string();
    let content = body
        .get("body")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("body.content is required."))?
        .to_string();
    let mut st = inner.lock();
    let user_id = st
        .mailbox_index(user)
        .map(|i| st.mailboxes[i].id.clone())
        .unwrap_or_else(|| stable_guid(&format!("user:{}", user.to_ascii_lowercase())));
    let chat = st
        .chats
        .iter_mut()
        .find(|c| c.id == chat_id)
        .ok_or_else(|| {
            GraphError::not_found("NotFound", format!("Chat '{chat_id}' was not found."))
        })?;
    chat.messages.push(content.clone());
    let now = Utc::now();
    // Teams message ids are the creation time in epoch milliseconds.
    let id = format!(
        "{}{:03}",
        now.timestamp_millis(),
        chat.messages.len() % 1000
    );
    let out = json!({
        "@odata.context": format!("{}/$metadata#chats('{}')/messages/$entity", inner.base_url(), chat.id),
        "id": id,
        "replyToId": null,
        "etag": id,
        "messageType": "message",
        "createdDateTime": graph_time(now),
        "lastModifiedDateTime": graph_time(now),
        "chatId": chat.id,
        "importance": "normal",
        "locale": "en-us",
        "from": {"user": {"id": user_id, "displayName": user, "userIdentityType": "aadUser"}},
        "body": {"contentType": content_type, "content": content},
        "attachments": [],
        "mentions": [],
    });
    Ok(GraphResponse::json(StatusCode::CREATED, out))
}
