use std::time::Duration;

use mailroom_security::Secret;

use crate::GraphError;

/// How the application proves itself to Microsoft Entra ID.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `client_secret`.
    Secret(Secret<String>),
    /// A certificate registered on the app: each token request carries a
    /// JWT signed with its private key (`client_assertion`, RS256, `x5t`
    /// the certificate's SHA-1 thumbprint).
    Certificate(CertificateCredential),
}

/// A certificate and its private key, loaded and checked at start-up.
#[derive(Clone)]
pub struct CertificateCredential {
    pub(crate) key: jsonwebtoken::EncodingKey,
    /// base64url SHA-1 of the certificate's DER.
    pub(crate) thumbprint: String,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("thumbprint", &self.thumbprint)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl CertificateCredential {
    /// From PEM text: the certificate (`BEGIN CERTIFICATE`) and its RSA
    /// private key (PKCS#1 or PKCS#8).
    pub fn from_pem(certificate: &[u8], private_key: &[u8]) -> Result<Self, GraphError> {
        use base64::Engine;
        use sha1::{Digest, Sha1};
        let text = std::str::from_utf8(certificate)
            .map_err(|_| GraphError::Config("the certificate is not PEM text".into()))?;
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .ok()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| GraphError::Config("no PEM certificate found".into()))?;
        let thumbprint =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha1::digest(&der));
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key).map_err(|e| {
            GraphError::Config(format!("the private key is not an RSA PEM key: {e}"))
        })?;
        Ok(Self { key, thumbprint })
    }

    /// The signed `client_assertion` for `token_url` (valid 10 minutes).
    pub(crate) fn assertion(&self, client_id: &str, token_url: &str) -> Result<String, GraphError> {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(self.thumbprint.clone());
        let claims = serde_json::json!({
            "aud": token_url, "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::now_v7().to_string(), "nbf": now, "iat": now, "exp": now + 600,
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| GraphError::Config(format!("cannot sign the client assertion: {e}")))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A key and self-signed certificate made by openssl, with the
    /// certificate's SHA-1 fingerprint as openssl prints it.
    fn openssl_pair(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, String) {
        let sh = format!(
            "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj /CN=mailroom 2>/dev/null \
             && openssl rsa -in key.pem -pubout -out pub.pem 2>/dev/null \
             && openssl x509 -in cert.pem -noout -fingerprint -sha1",
            dir.display()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(sh)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "");
        let read = |f: &str| std::fs::read(dir.join(f)).expect("read");
        (
            read("cert.pem"),
            read("key.pem"),
            read("pub.pem"),
            fingerprint,
        )
    }

    #[test]
    fn the_assertion_is_signed_and_names_the_certificate() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, public, fingerprint) = openssl_pair(dir.path());
        let credential = CertificateCredential::from_pem(&cert, &key).expect("loads");
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(hex::decode(fingerprint).expect("hex"));
        assert_eq!(credential.thumbprint, expected);
        let url = "https://login.example/tenant/oauth2/v2.0/token";
        let jwt = credential.assertion("client-1", url).expect("signs");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[url]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_rsa_pem(&public).expect("public key"),
            &validation,
        )
        .expect("a valid signature");
        assert_eq!(decoded.header.x5t.as_deref(), Some(expected.as_str()));
        assert_eq!(decoded.claims["iss"], "client-1");
        assert_eq!(decoded.claims["sub"], "client-1");
        assert!(format!("{credential:?}").contains("[redacted]"));
        assert!(CertificateCredential::from_pem(b"not pem", &key).is_err());
        assert!(CertificateCredential::from_pem(&cert, b"not a key").is_err());
    }
}
