//! The Graph operations mailroom uses and their documents.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{client::Call, GraphClient, GraphError};

/// Graph's JSON `$batch` takes at most this many requests.
pub const MAX_BATCH: usize = 20;

/// A subscription as Graph returns it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub change_type: String,
    #[serde(default)]
    pub notification_url: String,
    #[serde(default)]
    pub lifecycle_notification_url: Option<String>,
    pub expiration_date_time: DateTime<Utc>,
}

/// One item of a notification POST: a change, or a lifecycle event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub subscription_id: String,
    #[serde(default)]
    pub client_state: Option<String>,
    #[serde(default)]
    pub change_type: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_data: Option<ResourceData>,
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceData {
    #[serde(default)]
    pub id: Option<String>,
}

/// The body of a notification POST.
#[derive(Debug, Clone, Deserialize)]
pub struct NotificationCollection {
    pub value: Vec<Notification>,
}

/// One entry of a delta page.
#[derive(Debug, Clone, Deserialize)]
pub struct DeltaItem {
    pub id: String,
    #[serde(rename = "@removed", default)]
    pub removed: Option<Value>,
}

/// A page of a delta round.
#[derive(Debug, Clone, Deserialize)]
pub struct DeltaPage {
    #[serde(default)]
    pub value: Vec<DeltaItem>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
}

/// One request of a `$batch`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequest {
    pub id: String,
    pub method: String,
    /// Relative to the version root: `/subscriptions/{id}`.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

/// Its answer.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    #[serde(default)]
    pub body: Option<Value>,
}

#[derive(Deserialize)]
struct BatchReply {
    responses: Vec<BatchResponse>,
}

#[derive(Deserialize)]
struct Collection<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// The resource of a mailbox's Inbox messages.
pub fn inbox_resource(mailbox: &str) -> String {
    format!("/users/{mailbox}/mailFolders('Inbox')/messages")
}

/// Graph's date-time format (UTC, `Z`).
pub fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Most pages followed when listing subscriptions (100 per page).
const MAX_LIST_PAGES: usize = 100;

impl GraphClient {
    pub async fn create_subscription(
        &self,
        mailbox: &str,
        client_state: &str,
        expires: DateTime<Utc>,
    ) -> Result<Subscription, GraphError> {
        let s = self.settings();
        let body = json!({
            "changeType": "created",
            "notificationUrl": s.notification_url,
            "lifecycleNotificationUrl": s.lifecycle_url,
            "resource": inbox_resource(mailbox),
            "expirationDateTime": graph_time(expires),
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        self.json(&Call::new("create_subscription", Method::POST, "subscriptions").json(body))
            .await
    }

    /// Every subscription of this application.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, GraphError> {
        let mut all = Vec::new();
        let mut url = "subscriptions".to_string();
        for _ in 0..MAX_LIST_PAGES {
            let page: Collection<Subscription> = self
                .json(&Call::new("list_subscriptions", Method::GET, url))
                .await?;
            all.extend(page.value);
            match page.next_link {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    pub async fn renew_subscription(
        &self,
        id: &str,
        expires: DateTime<Utc>,
    ) -> Result<Subscription, GraphError> {
        self.json(
            &Call::new(
                "renew_subscription",
                Method::PATCH,
                format!("subscriptions/{id}"),
            )
            .json(json!({"expirationDateTime": graph_time(expires)})),
        )
        .await
    }

    /// Deletes a subscription; one already gone counts as deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        match self
            .empty(&Call::new(
                "delete_subscription",
                Method::DELETE,
                format!("subscriptions/{id}"),
            ))
            .await
        {
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other,
        }
    }

    pub async fn reauthorize_subscription(&self, id: &str) -> Result<(), GraphError> {
        self.empty(&Call::new(
            "reauthorize_subscription",
            Method::POST,
            format!("subscriptions/{id}/reauthorize"),
        ))
        .await
    }

    /// Opens a message's MIME (`$value`) for reading; `None` when the
    /// message no longer exists.
    pub async fn open_message_mime(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<Option<reqwest::Response>, GraphError> {
        let call = Call::new(
            "get_message_mime",
            Method::GET,
            format!("users/{mailbox}/messages/{id}/$value"),
        )
        .mailbox(mailbox);
        self.open(&call).await
    }

    /// One delta page: `url` is a stored next/delta link, or `None` to
    /// start a round over messages received since `since`.
    pub async fn delta_page(
        &self,
        mailbox: &str,
        url: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<DeltaPage, GraphError> {
        let url = match url {
            Some(link) => link.to_string(),
            None => format!(
                "users/{mailbox}/mailFolders('Inbox')/messages/delta?$select=id,receivedDateTime&$filter=receivedDateTime+ge+{}",
                graph_time(since)
            ),
        };
        self.json(
            &Call::new("delta", Method::GET, url)
                .mailbox(mailbox)
                .prefer("odata.maxpagesize=100"),
        )
        .await
    }

    /// Sends up to [`MAX_BATCH`] requests in one round trip.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        if requests.len() > MAX_BATCH {
            return Err(GraphError::Config(format!(
                "a $batch holds at most {MAX_BATCH} requests, not {}",
                requests.len()
            )));
        }
        let reply: BatchReply = self
            .json(&Call::new("batch", Method::POST, "$batch").json(json!({ "requests": requests })))
            .await?;
        Ok(reply.responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_change_and_lifecycle_items() {
        let body = r##"{"value":[
            {"subscriptionId":"s1","clientState":"c","changeType":"created","resource":"Users/u/Messages/m",
             "resourceData":{"@odata.type":"#Microsoft.Graph.Message","id":"m"},"tenantId":"t"},
            {"subscriptionId":"s1","clientState":"c","lifecycleEvent":"missed","subscriptionExpirationDateTime":"2026-12-05T00:00:00Z"}
        ]}"##;
        let c: NotificationCollection = serde_json::from_str(body).expect("parses");
        assert_eq!(c.value.len(), 2);
        assert_eq!(
            c.value[0]
                .resource_data
                .as_ref()
                .and_then(|r| r.id.as_deref()),
            Some("m")
        );
        assert_eq!(c.value[1].lifecycle_event.as_deref(), Some("missed"));
    }

    #[test]
    fn delta_pages_carry_links_and_removals() {
        let page: DeltaPage = serde_json::from_str(
            r#"{"value":[{"id":"a"},{"id":"b","@removed":{"reason":"deleted"}}],"@odata.deltaLink":"https://x/delta?$deltatoken=1"}"#,
        )
        .expect("parses");
        assert!(page.value[1].removed.is_some());
        assert!(page.next_link.is_none());
        assert!(page.delta_link.is_some());
    }
}
