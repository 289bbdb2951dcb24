//! Messages: storage, a simple RFC 5322 header reader, the Graph message
//! JSON, and the message routes (GET, `$value`, PATCH, DELETE, move, reply).

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::graph::{GraphError, GraphRequest, GraphResponse, GraphResult, RespBody};
use crate::state::{
    graph_time, new_change_key, new_message_id, random_token, Address, Inner, Mailbox, Message,
};
use crate::MessageState;

/// Well-known folder names accepted as a move `destinationId`.
const WELL_KNOWN_FOLDERS: [&str; 10] = [
    "inbox",
    "archive",
    "deleteditems",
    "drafts",
    "junkemail",
    "outbox",
    "sentitems",
    "clutter",
    "conversationhistory",
    "recoverableitemsdeletions",
];

struct Parsed {
    subject: Option<String>,
    message_id: Option<String>,
    from: Option<Address>,
    to: Vec<Address>,
    body: String,
}

/// Reads the header block (unfolding continuation lines) and takes the rest
/// as the body. Deliberately simple: no MIME decoding, no RFC 2047 words.
fn parse_mime(raw: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = match (text.find("\r\n\r\n"), text.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (&text[..b], &text[b + 2..]),
        (Some(a), _) => (&text[..a], &text[a + 4..]),
        (None, Some(b)) => (&text[..b], &text[b + 2..]),
        (None, None) => (&text[..], ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Parsed {
        subject: get("subject"),
        message_id: get("message-id"),
        from: get("from").and_then(|v| parse_address(&v)),
        to: get("to")
            .map(|v| v.split(',').filter_map(parse_address).collect())
            .unwrap_or_default(),
        body: body.to_string(),
    }
}

/// `Name <a@b>`, `"Name" <a@b>` or `a@b`.
fn parse_address(s: &str) -> Option<Address> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let (Some(lt), Some(gt)) = (s.find('<'), s.rfind('>')) {
        if lt < gt {
            let address = s[lt + 1..gt].trim().to_string();
            let name = s[..lt].trim().trim_matches('"').trim().to_string();
            let name = if name.is_empty() {
                address.clone()
            } else {
                name
            };
            return Some(Address { name, address });
        }
    }
    Some(Address {
        name: s.to_string(),
        address: s.to_string(),
    })
}

/// Stores a new message in the Inbox and returns its id.
pub(crate) fn store_message(mb: &mut Mailbox, raw: Vec<u8>) -> String {
    let parsed = parse_mime(&raw);
    let id = new_message_id();
    let seq = mb.bump();
    let now = Utc::now();
    mb.messages.insert(
        id.clone(),
        Message {
            id: id.clone(),
            raw: Arc::new(raw),
            subject: parsed.subject,
            internet_message_id: parsed.message_id,
            from: parsed.from,
            to: parsed.to,
            body: parsed.body,
            received: now,
            modified: now,
            folder: "inbox".into(),
            categories: Vec::new(),
            flag_status: "notFlagged".into(),
            is_read: false,
            replies: Vec::new(),
            change_key: new_change_key(),
            conversation_id: format!("AAQkAD{}", random_token(24)),
            changed_seq: seq,
        },
    );
    id
}

/// Removes a message; an Inbox message leaves a tombstone for delta.
pub(crate) fn remove_message(mb: &mut Mailbox, id: &str) -> bool {
    match mb.messages.remove(id) {
        Some(m) => {
            let seq = mb.bump();
            if m.folder == "inbox" {
                mb.tombstones.push((seq, m.id));
            }
            true
        }
        None => false,
    }
}

pub(crate) fn state_of(m: &Message) -> MessageState {
    MessageState {
        categories: m.categories.clone(),
        flagged: m.flag_status == "flagged",
        flag_status: m.flag_status.clone(),
        is_read: m.is_read,
        folder: m.folder.clone(),
        replies: m.replies.clone(),
    }
}

fn address_json(a: &Address) -> Value {
    json!({"emailAddress": {"name": a.name, "address": a.address}})
}

/// The Graph message resource. With `select`, only `id`, `@odata.etag` and
/// the selected properties (case-insensitive names) are kept.
pub(crate) fn message_json(
    mb: &Mailbox,
    m: &Message,
    select: Option<&[String]>,
) -> Map<String, Value> {
    let preview: String = m
        .body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(255)
        .collect();
    let parent = if m.folder == "inbox" {
        mb.inbox_id.clone()
    } else {
        m.folder.clone()
    };
    let v = json!({
        "@odata.etag": m.etag(),
        "id": m.id,
        "createdDateTime": graph_time(m.received),
        "lastModifiedDateTime": graph_time(m.modified),
        "changeKey": m.change_key,
        "categories": m.categories,
        "receivedDateTime": graph_time(m.received),
        "sentDateTime": graph_time(m.received),
        "hasAttachments": false,
        "internetMessageId": m.internet_message_id,
        "subject": m.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "parentFolderId": parent,
        "conversationId": m.conversation_id,
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": m.is_read,
        "isDraft": false,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem", m.id),
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": m.body},
        "sender": m.from.as_ref().map(address_json),
        "from": m.from.as_ref().map(address_json),
        "toRecipients": m.to.iter().map(address_json).collect::<Vec<_>>(),
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": m.flag_status},
    });
    let Value::Object(mut map) = v else {
        return Map::new();
    };
    if let Some(fields) = select {
        map.retain(|k, _| {
            k == "id" || k == "@odata.etag" || fields.iter().any(|f| f.eq_ignore_ascii_case(k))
        });
    }
    map
}

/// `$select=a,b` as a list of names.
pub(crate) fn select_of(req: &GraphRequest) -> Option<Vec<String>> {
    req.query_param("$select").map(|s| {
        s.split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect()
    })
}

fn find<'a>(inner_mb: &'a Mailbox, id: &str, inbox_only: bool) -> Result<&'a Message, GraphError> {
    inner_mb
        .messages
        .get(id)
        .filter(|m| !inbox_only || m.folder == "inbox")
        .ok_or_else(GraphError::item_not_found)
}

fn context(inner: &Inner, mailbox_seg: &str) -> String {
    format!(
        "{}/$metadata#users('{mailbox_seg}')/messages/$entity",
        inner.base_url()
    )
}

fn entity_response(
    inner: &Inner,
    status: StatusCode,
    mailbox_seg: &str,
    mut map: Map<String, Value>,
) -> GraphResponse {
    map.insert("@odata.context".into(), json!(context(inner, mailbox_seg)));
    GraphResponse::json(status, Value::Object(map))
}

pub(crate) fn get(
    inner: &Arc<Inner>,
    req: &GraphRequest,
    idx: usize,
    mailbox_seg: &str,
    id: &str,
    inbox_only: bool,
) -> GraphResult {
    let select = select_of(req);
    let st = inner.lock();
    let mb = &st.mailboxes[idx];
    let m = find(mb, id, inbox_only)?;
    let map = message_json(mb, m, select.as_deref());
    let mut resp = entity_response(inner, StatusCode::OK, mailbox_seg, map);
    if req.wants_immutable_ids() {
        resp = resp.with_header("preference-applied", "IdType=\"ImmutableId\"");
    }
    Ok(resp)
}

pub(crate) fn value(inner: &Arc<Inner>, idx: usize, id: &str, inbox_only: bool) -> GraphResult {
    let st = inner.lock();
    let m = find(&st.mailboxes[idx], id, inbox_only)?;
    Ok(GraphResponse {
        status: StatusCode::OK,
        headers: Default::default(),
        body: RespBody::Bytes {
            content_type: "text/plain".into(),
            data: m.raw.as_ref().clone(),
        },
    })
}

pub(crate) fn update(
    inner: &Arc<Inner>,
    req: &GraphRequest,
    idx: usize,
    mailbox_seg: &str,
    id: &str,
) -> GraphResult {
    let body = req.json_body()?;
    let categories = match body.get("categories") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    GraphError::bad_request(
                        "ErrorInvalidProperty",
                        "categories must be an array of strings.",
                    )
                })?,
        ),
        Some(_) => {
            return Err(GraphError::bad_request(
                "ErrorInvalidProperty",
                "categories must be an array of strings.",
            ))
        }
    };
    let flag_status = match body.get("flag") {
        None => None,
        Some(f) => match f.get("flagStatus").and_then(Value::as_str) {
            Some(s)
                if ["notFlagged", "flagged", "complete"]
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(s)) =>
            {
                let canonical = ["notFlagged", "flagged", "complete"]
                    .into_iter()
                    .find(|v| v.eq_ignore_ascii_case(s))
                    .unwrap_or("notFlagged");
                Some(canonical.to_string())
            }
            _ => {
                return Err(GraphError::bad_request(
                    "ErrorInvalidProperty",
                    "flag.flagStatus must be one of notFlagged, flagged, complete.",
                ))
            }
        },
    };
    let is_read = match body.get("isRead") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(GraphError::bad_request(
                "ErrorInvalidProperty",
                "isRead must be a boolean.",
            ))
        }
    };
    let mut st = inner.lock();
    let mb = &mut st.mailboxes[idx];
    if !mb.messages.contains_key(id) {
        return Err(GraphError::item_not_found());
    }
    let seq = mb.bump();
    let Some(m) = mb.messages.get_mut(id) else {
        return Err(GraphError::item_not_found());
    };
    if let Some(c) = categories {
        m.categories = c;
    }
    if let Some(f) = flag_status {
        m.flag_status = f;
    }
    if let Some(r) = is_read {
        m.is_read = r;
    }
    m.change_key = new_change_key();
    m.modified = Utc::now();
    m.changed_seq = seq;
    let mb = &st.mailboxes[idx];
    let map = mb
        .messages
        .get(id)
        .map(|m| message_json(mb, m, None))
        .unwrap_or_default();
    Ok(entity_response(inner, StatusCode::OK, mailbox_seg, map))
}

pub(crate) fn delete(inner: &Arc<Inner>, idx: usize, id: &str) -> GraphResult {
    let mut st = inner.lock();
    if remove_message(&mut st.mailboxes[idx], id) {
        Ok(GraphResponse::empty(StatusCode::NO_CONTENT))
    } else {
        Err(GraphError::item_not_found())
    }
}

/// Moves keep the id: the simulator only hands out immutable-style ids
/// (real Graph changes a moved message's id unless the client asked for
/// `Prefer: IdType="ImmutableId"`).
pub(crate) fn move_message(
    inner: &Arc<Inner>,
    req: &GraphRequest,
    idx: usize,
    mailbox_seg: &str,
    id: &str,
) -> GraphResult {
    let body = req.json_body()?;
    let dest = body
        .get("destinationId")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            GraphError::bad_request("ErrorInvalidIdMalformed", "destinationId is required.")
        })?;
    let mut st = inner.lock();
    let mb = &mut st.mailboxes[idx];
    let folder = if dest == mb.inbox_id {
        "inbox".to_string()
    } else if let Some(w) = WELL_KNOWN_FOLDERS
        .iter()
        .find(|w| w.eq_ignore_ascii_case(dest))
    {
        (*w).to_string()
    } else {
        dest.to_string()
    };
    let Some(was) = mb.messages.get(id).map(|m| m.folder.clone()) else {
        return Err(GraphError::item_not_found());
    };
    let seq = mb.bump();
    if was == "inbox" && folder != "inbox" {
        // Leaving the Inbox looks like a removal to an Inbox delta.
        mb.tombstones.push((seq, id.to_string()));
    }
    if let Some(m) = mb.messages.get_mut(id) {
        m.folder = folder;
        m.change_key = new_change_key();
        m.modified = Utc::now();
        m.changed_seq = seq;
    }
    let mb = &st.mailboxes[idx];
    let map = mb
        .messages
        .get(id)
        .map(|m| message_json(mb, m, None))
        .unwrap_or_default();
    Ok(entity_response(
        inner,
        StatusCode::CREATED,
        mailbox_seg,
        map,
    ))
}

pub(crate) fn reply(inner: &Arc<Inner>, req: &GraphRequest, idx: usize, id: &str) -> GraphResult {
    // The body is optional for reply; when present it must be JSON.
    let comment = if req.body.is_empty() {
        String::new()
    } else {
        req.json_body()?
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut st = inner.lock();
    let m = st.mailboxes[idx]
        .messages
        .get_mut(id)
        .ok_or_else(GraphError::item_not_found)?;
    m.replies.push(comment);
    Ok(GraphResponse::empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_with_folding_and_lf_only() {
        let p = parse_mime(b"Subject: Hello\n  world\nMessage-ID: <a@b>\nFrom: \"Bob B\" <bob@x.test>\nTo: a@x, C <c@x>\n\nBody here");
        assert_eq!(p.subject.as_deref(), Some("Hello world"));
        assert_eq!(p.message_id.as_deref(), Some("<a@b>"));
        let from = p.from.expect("from");
        assert_eq!(
            (from.name.as_str(), from.address.as_str()),
            ("Bob B", "bob@x.test")
        );
        assert_eq!(p.to.len(), 2);
        assert_eq!(p.body, "Body here");
    }

    #[test]
    fn headers_only_message() {
        let p = parse_mime(b"Subject: x");
        assert_eq!(p.subject.as_deref(), Some("x"));
        assert_eq!(p.body, "");
    }
}
