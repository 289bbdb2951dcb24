use std::time::Duration;

use mailroom_security::Secret;

/// How the application proves itself to Microsoft Entra ID.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `client_secret`.
    Secret(Secret<String>),
}

/// Everything the Graph source needs, resolved from `[graph]` and the
/// `MAILROOM_GRAPH_*` variables by the binary.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
    /// User ids or UPNs whose Inbox is watched.
    pub mailboxes: Vec<String>,
    /// Public URL of `/webhook` (Graph must reach it over HTTPS).
    pub notification_url: String,
    /// Where lifecycle notifications go; the notification URL by default.
    pub lifecycle_url: String,
    /// `https://graph.microsoft.com/v1.0` unless pointed at a simulator.
    pub base_url: String,
    /// `https://login.microsoftonline.com` unless pointed at a simulator.
    pub login_url: String,
    /// Lifetime asked for each subscription (Outlook messages allow at
    /// most 10,080 minutes).
    pub subscription_lifetime: Duration,
    /// Renew a subscription when less than this remains.
    pub renew_before: Duration,
    /// How long the subscription owner's lease lasts without renewal: the
    /// longest another replica waits to take over from a dead owner.
    pub lease_ttl: Duration,
    /// How far back a first sync or a full resync (expired delta link)
    /// reaches.
    pub resync_window: Duration,
    /// Concurrent requests per mailbox (Graph allows 4).
    pub mailbox_concurrency: usize,
    /// Attempts per request on throttling and transient failures.
    pub max_attempts: u32,
    /// Longest single wait, whatever `Retry-After` says.
    pub max_retry_wait: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Concurrent message fetches (all mailboxes).
    pub fetchers: usize,
    /// Fetch attempts of one notified message before it is dead.
    pub fetch_attempts: u32,
}

impl GraphSettings {
    pub const DEFAULT_BASE_URL: &'static str = "https://graph.microsoft.com/v1.0";
    pub const DEFAULT_LOGIN_URL: &'static str = "https://login.microsoftonline.com";

    /// Settings with the defaults for everything but the identity and the
    /// URLs.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credential: Credential,
        mailboxes: Vec<String>,
        notification_url: impl Into<String>,
    ) -> Self {
        let notification_url = notification_url.into();
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential,
            mailboxes,
            lifecycle_url: notification_url.clone(),
            notification_url,
            base_url: Self::DEFAULT_BASE_URL.into(),
            login_url: Self::DEFAULT_LOGIN_URL.into(),
            // 10,080 minutes is the maximum; ask a little less so clock
            // skew never makes Graph refuse the request.
            subscription_lifetime: Duration::from_secs(10_070 * 60),
            renew_before: Duration::from_secs(2 * 24 * 3600),
            lease_ttl: Duration::from_secs(30),
            resync_window: Duration::from_secs(24 * 3600),
            mailbox_concurrency: 4,
            max_attempts: 8,
            max_retry_wait: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            fetchers: 8,
            fetch_attempts: 10,
        }
    }
}
