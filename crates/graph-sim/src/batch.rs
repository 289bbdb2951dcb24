//! JSON batching: `POST /v1.0/$batch`. Each item runs through the same
//! dispatcher as a direct request (auth from the outer request, throttling,
//! mailbox concurrency, recording). Items run one at a time in an order
//! that honours `dependsOn`; Graph may run up to four in parallel, which
//! only matters for concurrency limits, and sequential is the conservative
//! choice.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::graph::{handle_boxed, GraphError, GraphRequest, GraphResponse, GraphResult, RespBody};
use crate::state::Inner;

/// Graph's limit on requests in one batch.
const MAX_BATCH: usize = 20;

struct Item {
    id: String,
    method: Method,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request("BadRequest", msg)
}

fn parse_item(v: &Value) -> Result<Item, GraphError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("Invalid batch payload format: each request must be an object."))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(invalid(
                "Invalid batch payload format: every request needs an 'id'.",
            ))
        }
    };
    let method_str = obj.get("method").and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "Invalid batch payload format: request '{id}' has no 'method'."
        ))
    })?;
    let method = match method_str.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PATCH" => Method::PATCH,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        _ => {
            return Err(invalid(format!(
                "Invalid method '{method_str}' in request '{id}'."
            )))
        }
    };
    let url = obj
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(format!(
                "Invalid batch payload format: request '{id}' has no 'url'."
            ))
        })?
        .to_string();
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(invalid(format!(
            "Request '{id}': the url must be relative to the version, e.g. '/users/{{id}}/messages'."
        )));
    }
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h.clone(),
        Some(_) => {
            return Err(invalid(format!(
                "Request '{id}': headers must be an object."
            )))
        }
    };
    let body = obj.get("body").filter(|b| !b.is_null()).cloned();
    if body.is_some()
        && !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"))
    {
        return Err(invalid(format!(
            "Write request id : {id} does not contain Content-Type header or body."
        )));
    }
    let depends_on = match obj.get("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| match d {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("Request '{id}': dependsOn must list request ids.")))?,
        Some(_) => {
            return Err(invalid(format!(
                "Request '{id}': dependsOn must be an array."
            )))
        }
    };
    Ok(Item {
        id,
        method,
        url,
        headers,
        body,
        depends_on,
    })
}

/// Builds the inner request; JSON bodies are serialized, other bodies are
/// taken as base64 (Graph's rule for non-JSON batch bodies) or raw text.
fn to_request(item: &Item, outer: &HeaderMap) -> GraphRequest {
    let mut headers = HeaderMap::new();
    for (k, v) in &item.headers {
        let value = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    // The outer request's Authorization applies to every item.
    headers.remove(header::AUTHORIZATION);
    if let Some(auth) = outer.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let body = match &item.body {
        None => Bytes::new(),
        Some(v) if is_json => Bytes::from(v.to_string()),
        Some(Value::String(s)) => Bytes::from(
            STANDARD
                .decode(s)
                .unwrap_or_else(|_| s.clone().into_bytes()),
        ),
        Some(v) => Bytes::from(v.to_string()),
    };
    let url = item.url.trim_start_matches('/');
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (format!("/{p}"), Some(q.to_string())),
        None => (format!("/{url}"), None),
    };
    GraphRequest {
        method: item.method.clone(),
        path,
        query,
        headers,
        body,
        in_batch: true,
    }
}

fn item_response(id: &str, resp: GraphResponse) -> Value {
    let mut headers = Map::new();
    let wire = resp.wire_headers();
    for (k, v) in &wire {
        if let Ok(s) = v.to_str() {
            headers.insert(k.as_str().to_string(), json!(s));
        }
    }
    let mut out = json!({"id": id, "status": resp.status.as_u16(), "headers": headers});
    match resp.body {
        RespBody::Empty => {}
        RespBody::Json(v) => out["body"] = v,
        RespBody::Bytes { data, .. } => out["body"] = json!(STANDARD.encode(data)),
    }
    out
}

pub(crate) async fn run(inner: &Arc<Inner>, req: &GraphRequest) -> GraphResult {
    if req.in_batch {
        return Err(invalid("Nested batch requests are not supported."));
    }
    let body = req.json_body()?;
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Invalid batch payload format: 'requests' must be an array."))?;
    if requests.len() > MAX_BATCH {
        return Err(invalid(format!(
            "Number of batch request steps exceeds the maximum of {MAX_BATCH}."
        )));
    }
    let items = requests
        .iter()
        .map(parse_item)
        .collect::<Result<Vec<_>, _>>()?;
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if index.insert(it.id.as_str(), i).is_some() {
            return Err(invalid(format!(
                "Batch request id '{}' is used more than once.",
                it.id
            )));
        }
    }
    for it in &items {
        if let Some(d) = it
            .depends_on
            .iter()
            .find(|d| !index.contains_key(d.as_str()))
        {
            return Err(invalid(format!(
                "Request '{}' depends on unknown request '{d}'.",
                it.id
            )));
        }
    }

    let n = items.len();
    let deps: Vec<Vec<usize>> = items
        .iter()
        .map(|it| {
            it.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // Order the items before running any, so a cycle rejects the whole
    // batch without side effects: repeated passes take every item whose
    // dependencies are already placed, keeping request order otherwise.
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while order.len() < n {
        let before = order.len();
        for i in 0..n {
            if !placed[i] && deps[i].iter().all(|&d| placed[d]) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            return Err(invalid("The dependsOn graph of the batch has a cycle."));
        }
    }

    let mut status: Vec<Option<u16>> = vec![None; n];
    let mut responses: Vec<Option<Value>> = vec![None; n];
    for i in order {
        let failed_dep = deps[i]
            .iter()
            .any(|&d| !status[d].is_some_and(|s| (200..300).contains(&s)));
        let resp = if failed_dep {
            GraphError::new(
                StatusCode::FAILED_DEPENDENCY,
                "FailedDependency",
                "The request could not be run because a request it depends on failed.",
            )
            .into_response(&uuid::Uuid::new_v4().to_string(), None)
        } else {
            handle_boxed(inner.clone(), to_request(&items[i], &req.headers)).await
        };
        status[i] = Some(resp.status.as_u16());
        responses[i] = Some(item_response(&items[i].id, resp));
    }
    let responses: Vec<Value> = responses.into_iter().flatten().collect();
    Ok(GraphResponse::json(
        StatusCode::OK,
        json!({ "responses": responses }),
    ))
}
