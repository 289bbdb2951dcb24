//! Inbox delta: `GET /users/{mb}/mailFolders('Inbox')/messages/delta`.
//!
//! A round (initial sync, or "changes since the last deltaLink") is
//! computed once and paged out through skip tokens; the last page carries a
//! deltaLink whose token remembers the mailbox's change sequence.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::graph::{GraphError, GraphRequest, GraphResponse, GraphResult};
use crate::mail::{message_json, select_of};
use crate::state::{parse_time, random_token, DeltaCursor, DeltaItem, Inner, Mailbox};

fn gone() -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "SyncStateNotFound",
        "The sync state generation is not found. Restart the synchronization with an initial delta query.",
    )
}

/// `receivedDateTime ge|gt <RFC 3339>`, the only filter Graph supports on message delta.
fn parse_filter(f: &str) -> Result<(bool, DateTime<Utc>), GraphError> {
    let bad = || {
        GraphError::bad_request(
            "ErrorInvalidUrlQueryFilter",
            format!("The query filter '{f}' is not supported on delta. Only 'receivedDateTime ge|gt <date-time>' is."),
        )
    };
    let parts: Vec<&str> = f.split_whitespace().collect();
    let [field, op, value] = parts.as_slice() else {
        return Err(bad());
    };
    if !field.eq_ignore_ascii_case("receivedDateTime") {
        return Err(bad());
    }
    let inclusive = match op.to_ascii_lowercase().as_str() {
        "ge" => true,
        "gt" => false,
        _ => return Err(bad()),
    };
    let t = parse_time(value.trim_matches('\'')).ok_or_else(bad)?;
    Ok((inclusive, t))
}

fn initial_items(mb: &Mailbox, filter: Option<(bool, DateTime<Utc>)>) -> Vec<DeltaItem> {
    let mut msgs: Vec<_> = mb
        .messages
        .values()
        .filter(|m| m.folder == "inbox")
        .filter(|m| match filter {
            Some((true, t)) => m.received >= t,
            Some((false, t)) => m.received > t,
            None => true,
        })
        .collect();
    msgs.sort_by_key(|m| m.changed_seq);
    msgs.into_iter()
        .map(|m| DeltaItem::Changed(m.id.clone()))
        .collect()
}

fn changes_since(mb: &Mailbox, since: u64) -> Vec<DeltaItem> {
    let mut v: Vec<(u64, DeltaItem)> = mb
        .messages
        .values()
        .filter(|m| m.folder == "inbox" && m.changed_seq > since)
        .map(|m| (m.changed_seq, DeltaItem::Changed(m.id.clone())))
        .collect();
    let mut removed: Vec<&(u64, String)> = mb
        .tombstones
        .iter()
        .filter(|(seq, id)| *seq > since && mb.messages.get(id).is_none_or(|m| m.folder != "inbox"))
        .collect();
    // One @removed per id, even if it left the Inbox more than once.
    removed.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    removed.dedup_by(|a, b| a.1 == b.1);
    v.extend(
        removed
            .into_iter()
            .map(|(seq, id)| (*seq, DeltaItem::Removed(id.clone()))),
    );
    v.sort_by_key(|(seq, _)| *seq);
    v.into_iter().map(|(_, i)| i).collect()
}

fn item_json(mb: &Mailbox, item: &DeltaItem, select: Option<&[String]>) -> Value {
    let removed = |id: &str| {
        json!({
            "@odata.type": "#microsoft.graph.message",
            "id": id,
            "@removed": {"reason": "deleted"},
        })
    };
    match item {
        DeltaItem::Changed(id) => match mb.messages.get(id).filter(|m| m.folder == "inbox") {
            Some(m) => {
                let mut map = message_json(mb, m, select);
                map.insert("@odata.type".into(), json!("#microsoft.graph.message"));
                Value::Object(map)
            }
            // Gone since the round was computed.
            None => removed(id),
        },
        DeltaItem::Removed(id) => removed(id),
    }
}

pub(crate) fn handle(inner: &Arc<Inner>, req: &GraphRequest, idx: usize) -> GraphResult {
    for unsupported in ["$search", "$count", "$expand"] {
        if req.query_param(unsupported).is_some() {
            return Err(GraphError::bad_request(
                "BadRequest",
                format!("The following parameters are not supported with change tracking over the 'Messages' resource: '{unsupported}'."),
            ));
        }
    }
    let token = req
        .query_param("$skiptoken")
        .or_else(|| req.query_param("$deltatoken"));
    let preferred = req.max_page_size();
    let page_size = preferred.unwrap_or(inner.config.delta_page_size).max(1);

    let mut st = inner.lock();
    let (items, offset, hi, select) = match token {
        Some(t) => match st.delta_tokens.get(&t).cloned() {
            Some(DeltaCursor::Skip {
                mailbox,
                items,
                offset,
                hi,
                select,
            }) if mailbox == idx => (items, offset, hi, select),
            Some(DeltaCursor::Delta {
                mailbox,
                since,
                select,
            }) if mailbox == idx => {
                let mb = &st.mailboxes[idx];
                (Arc::new(changes_since(mb, since)), 0, mb.seq, select)
            }
            // Unknown, expired, or issued for another mailbox.
            _ => return Err(gone()),
        },
        None => {
            // $filter only counts on the initial round; later rounds are
            // scoped by the token.
            let filter = req
                .query_param("$filter")
                .map(|f| parse_filter(&f))
                .transpose()?;
            let mb = &st.mailboxes[idx];
            (
                Arc::new(initial_items(mb, filter)),
                0,
                mb.seq,
                select_of(req),
            )
        }
    };

    let end = (offset + page_size).min(items.len());
    let mb = &st.mailboxes[idx];
    let value: Vec<Value> = items[offset.min(end)..end]
        .iter()
        .map(|i| item_json(mb, i, select.as_deref()))
        .collect();
    let link_base = format!("{}{}", inner.base_url(), req.path);
    let new_token = random_token(24);
    let mut body = json!({
        "@odata.context": format!("{}/$metadata#Collection(message)", inner.base_url()),
        "value": value,
    });
    if end < items.len() {
        body["@odata.nextLink"] = json!(format!("{link_base}?$skiptoken={new_token}"));
        st.delta_tokens.insert(
            new_token,
            DeltaCursor::Skip {
                mailbox: idx,
                items,
                offset: end,
                hi,
                select,
            },
        );
    } else {
        body["@odata.deltaLink"] = json!(format!("{link_base}?$deltatoken={new_token}"));
        st.delta_tokens.insert(
            new_token,
            DeltaCursor::Delta {
                mailbox: idx,
                since: hi,
                select,
            },
        );
    }
    drop(st);

    let mut applied = Vec::new();
    if let Some(n) = preferred {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    if req.wants_immutable_ids() {
        applied.push("IdType=\"ImmutableId\"".to_string());
    }
    let mut resp = GraphResponse::json(StatusCode::OK, body);
    if !applied.is_empty() {
        resp = resp.with_header("preference-applied", &applied.join(", "));
    }
    Ok(resp)
}
