//! API keys: issuing, listing, revoking, rotating with an overlap, and
//! authenticating a presented key.
//!
//! Authentication is on every request's path, so it is cheap: a malformed
//! key is refused by its checksum without a lookup; a known key is served
//! from a small cache for [`CACHE_TTL`] (revocations made through this
//! process take effect at once, those made elsewhere within the TTL); the
//! stored hash is compared in constant time; `last_used_at` is written at
//! most once a minute per key, off the request path.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use mailroom_security::{ApiKeySecret, KeyHash, Scopes, SecurityError};
use mailroom_store::{ApiKeyRecord, NewApiKey, Store, StoreError};
use serde::Serialize;
use serde_json::json;

use crate::{
    audit::{actions, Actor, AuditLog},
    clock::now_ms,
};

/// How long a looked-up key is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached keys (only keys that exist are cached, so this bounds the
/// memory of a busy deployment, not of an attack).
const CACHE_MAX: usize = 10_000;
const TOUCH_EVERY_MS: i64 = 60_000;

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    /// Public prefix: what logs and the audit trail show.
    pub prefix: String,
    pub scopes: Scopes,
}

/// Why a presented key was refused. `as_str` is the `reason` label of
/// `auth_failures_total` and what the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    /// Expired because it was rotated and its overlap ended.
    Rotated,
    InsufficientScope,
    /// The key could not be checked (the database did not answer): not the
    /// client's fault, answered 503.
    Unavailable,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Expired => "expired",
            AuthFailure::Rotated => "rotated",
            AuthFailure::InsufficientScope => "insufficient_scope",
            AuthFailure::Unavailable => "unavailable",
        }
    }
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key name: {0}")]
    InvalidName(String),
    #[error("a live key named `{0}` exists; rotate it, revoke it, or choose another name")]
    NameTaken(String),
    #[error("no live key matches `{0}` (give its id, its prefix or its name)")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] SecurityError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub replaced_by: Option<String>,
    pub created_by: Option<String>,
    /// `active`, `expiring` (rotated, in its overlap), `expired`, `revoked`.
    pub status: &'static str,
    /// `database`, or `configuration` for keys from `MAILROOM_API_KEYS`.
    pub source: &'static str,
}

/// A newly issued key: the secret is shown once, then only its hash exists.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub secret: ApiKeySecret,
    pub info: KeyInfo,
}

/// A key provisioned in configuration rather than the database.
#[derive(Debug, Clone)]
struct ConfiguredKey {
    hash: KeyHash,
    principal: Arc<Principal>,
}

/// A looked-up key: what liveness is judged on, and the principal a
/// request gets, built once per lookup rather than once per request.
struct Cached {
    record: ApiKeyRecord,
    principal: Arc<Principal>,
    fetched: Instant,
    touched_at_ms: AtomicI64,
}

/// Issues and checks API keys.
#[derive(Clone)]
pub struct KeyService {
    store: Store,
    audit: AuditLog,
    configured: Arc<Vec<ConfiguredKey>>,
    cache: Arc<RwLock<HashMap<KeyHash, Arc<Cached>>>>,
    /// Bumped by every revocation and rotation: a lookup that began before
    /// one does not put its (possibly stale) row in the cache.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("configured_keys", &self.configured.len())
            .finish()
    }
}

impl KeyService {
    /// `configured`: keys provisioned outside the database (the
    /// `MAILROOM_API_KEYS` secret), each with its scopes.
    pub fn new(store: Store, audit: AuditLog, configured: Vec<(ApiKeySecret, Scopes)>) -> Self {
        let configured = configured
            .into_iter()
            .enumerate()
            .map(|(i, (secret, scopes))| ConfiguredKey {
                hash: secret.hash(),
                principal: Arc::new(Principal {
                    key_id: format!("configured-{}", i + 1),
                    name: format!("configured-{}", i + 1),
                    prefix: configured_prefix(&secret),
                    scopes,
                }),
            })
            .collect();
        Self {
            store,
            audit,
            configured: Arc::new(configured),
            cache: Arc::default(),
            generation: Arc::default(),
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Checks a presented key. Cheap on the hot path (see module docs).
    pub async fn authenticate(&self, presented: &str) -> Result<Arc<Principal>, AuthFailure> {
        if !ApiKeySecret::looks_generated(presented) {
            return self.authenticate_configured(presented);
        }
        let secret = ApiKeySecret::parse(presented).map_err(|_| AuthFailure::Malformed)?;
        let hash = secret.hash();
        let now = now_ms();
        let cached = self.cache.read().ok().and_then(|cache| {
            cache
                .get(&hash)
                .filter(|c| c.fetched.elapsed() < CACHE_TTL)
                .cloned()
        });
        let key = match cached {
            Some(hit) => hit,
            None => self.look_up(&secret, hash).await?,
        };
        check_live(&key.record, now)?;
        if now - key.touched_at_ms.load(Ordering::Relaxed) >= TOUCH_EVERY_MS {
            key.touched_at_ms.store(now, Ordering::Relaxed);
            let (store, id) = (self.store.clone(), key.record.id.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::debug!(error = %e, "recording key use failed");
                }
            });
        }
        Ok(Arc::clone(&key.principal))
    }

    fn authenticate_configured(&self, presented: &str) -> Result<Arc<Principal>, AuthFailure> {
        let Ok(secret) = ApiKeySecret::configured(presented) else {
            return Err(AuthFailure::Malformed);
        };
        let hash = secret.hash();
        // Every configured key is compared, in constant time each, so the
        // time taken does not tell which one (if any) came close.
        let mut found = None;
        for key in self.configured.iter() {
            if key.hash.ct_eq(&hash) {
                found = Some(Arc::clone(&key.principal));
            }
        }
        found.ok_or(AuthFailure::Unknown)
    }

    async fn look_up(
        &self,
        secret: &ApiKeySecret,
        hash: KeyHash,
    ) -> Result<Arc<Cached>, AuthFailure> {
        let generation = self.generation.load(Ordering::SeqCst);
        let rows = self
            .store
            .api_keys_by_prefix(secret.public_prefix())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "key lookup failed");
                AuthFailure::Unavailable
            })?;
        let record = rows
            .into_iter()
            .find(|r| KeyHash::from_hex(&r.key_hash).is_some_and(|h| h.ct_eq(&hash)))
            .ok_or(AuthFailure::Unknown)?;
        let scopes: Scopes = record.scopes.parse().map_err(|_| AuthFailure::Unknown)?;
        let cached = Arc::new(Cached {
            principal: Arc::new(Principal {
                key_id: record.id.clone(),
                name: record.name.clone(),
                prefix: record.prefix.clone(),
                scopes,
            }),
            touched_at_ms: AtomicI64::new(record.last_used_at_ms.unwrap_or(0)),
            record,
            fetched: Instant::now(),
        });
        if let Ok(mut cache) = self.cache.write() {
            // Checked under the lock `forget_cached` takes, so a revocation
            // either sees this entry (and clears it) or this check sees it.
            if self.generation.load(Ordering::SeqCst) == generation {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(hash, Arc::clone(&cached));
            }
        }
        Ok(cached)
    }

    fn forget_cached(&self) {
        if let Ok(mut cache) = self.cache.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            cache.clear();
        }
    }

    /// Issues a key. Its secret is in the result and nowhere else.
    pub async fn create(
        &self,
        name: &str,
        scopes: Scopes,
        expires_in: Option<Duration>,
        actor: &Actor,
    ) -> Result<IssuedKey, KeyError> {
        let name = valid_name(name)?;
        let now = now_ms();
        if self
            .store
            .list_api_keys()
            .await?
            .iter()
            .any(|k| k.name == name && check_live(k, now).is_ok())
        {
            return Err(KeyError::NameTaken(name));
        }
        let (secret, new) = new_key(&name, scopes, now, expires_in, actor);
        let audit = AuditLog::event(
            actor,
            actions::KEY_CREATE,
            "success",
            Some(&new.id),
            Some(
                json!({"name": name, "prefix": new.prefix, "scopes": scopes.to_string(), "expires_at_ms": new.expires_at_ms}),
            ),
        );
        self.store.insert_api_key(&new, &audit).await?;
        let info = self.info_of(&new.id).await?;
        Ok(IssuedKey { secret, info })
    }

    /// On first start with no key stored at all: an admin key, issued once
    /// across every replica. `None` when keys exist (or another replica won).
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedKey>, KeyError> {
        let now = now_ms();
        let actor = Actor::system();
        let (secret, new) = new_key("bootstrap-admin", Scopes::admin(), now, None, &actor);
        let audit = AuditLog::event(
            &actor,
            actions::KEY_BOOTSTRAP,
            "success",
            Some(&new.id),
            Some(json!({"name": new.name, "prefix": new.prefix, "scopes": "admin"})),
        );
        if !self.store.insert_first_api_key(&new, now, &audit).await? {
            return Ok(None);
        }
        let info = self.info_of(&new.id).await?;
        Ok(Some(IssuedKey { secret, info }))
    }

    /// Every key (database first, newest first; then configured ones).
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let now = now_ms();
        let mut out: Vec<KeyInfo> = self
            .store
            .list_api_keys()
            .await?
            .iter()
            .filter_map(|r| info_from_record(r, now))
            .collect();
        out.extend(self.configured.iter().map(|c| KeyInfo {
            id: c.principal.key_id.clone(),
            name: c.principal.name.clone(),
            prefix: c.principal.prefix.clone(),
            scopes: c.principal.scopes,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: None,
            replaced_by: None,
            created_by: Some("configuration".into()),
            status: "active",
            source: "configuration",
        }));
        Ok(out)
    }

    /// Keys that can authenticate now (database and configured).
    pub async fn usable_count(&self) -> Result<u64, KeyError> {
        Ok(self.store.count_usable_api_keys(now_ms()).await? as u64 + self.configured.len() as u64)
    }

    /// Live keys matching an id, a public prefix or a name.
    async fn live_matching(&self, selector: &str) -> Result<Vec<ApiKeyRecord>, KeyError> {
        let now = now_ms();
        let selector = selector.trim();
        Ok(self
            .store
            .list_api_keys()
            .await?
            .into_iter()
            .filter(|k| k.id == selector || k.prefix == selector || k.name == selector)
            .filter(|k| check_live(k, now).is_ok())
            .collect())
    }

    /// Revokes at once every live key matching `selector` (an id or prefix
    /// names one key; a name revokes each live key of that name, both sides
    /// of a rotation included).
    pub async fn revoke(&self, selector: &str, actor: &Actor) -> Result<Vec<KeyInfo>, KeyError> {
        let targets = self.live_matching(selector).await?;
        if targets.is_empty() {
            return Err(KeyError::NotFound(selector.to_string()));
        }
        let now = now_ms();
        let mut revoked = Vec::with_capacity(targets.len());
        for key in targets {
            let audit = AuditLog::event(
                actor,
                actions::KEY_REVOKE,
                "success",
                Some(&key.id),
                Some(json!({"name": key.name, "prefix": key.prefix})),
            );
            let done = self.store.revoke_api_key(&key.id, now, &audit).await;
            // Forgotten even if the next key fails: this one may be revoked.
            self.forget_cached();
            if done? {
                revoked.push(self.info_of(&key.id).await?);
            }
        }
        Ok(revoked)
    }

    /// Issues a successor with the same name, scopes and lifetime; the old
    /// key keeps working for `overlap`, then stops.
    pub async fn rotate(
        &self,
        selector: &str,
        overlap: Duration,
        actor: &Actor,
    ) -> Result<(IssuedKey, KeyInfo), KeyError> {
        // During an overlap a name matches two keys: the successor (the
        // one not yet replaced) is the one to rotate.
        let old = self
            .live_matching(selector)
            .await?
            .into_iter()
            .find(|k| k.replaced_by.is_none())
            .ok_or_else(|| KeyError::NotFound(selector.to_string()))?;
        let scopes: Scopes = old.scopes.parse()?;
        let now = now_ms();
        let lifetime = old
            .expires_at_ms
            .map(|at| Duration::from_millis((at - old.created_at_ms).max(0) as u64));
        let (secret, new) = new_key(&old.name, scopes, now, lifetime, actor);
        let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        let audit = AuditLog::event(
            actor,
            actions::KEY_ROTATE,
            "success",
            Some(&old.id),
            Some(
                json!({"name": old.name, "old_prefix": old.prefix, "new_id": new.id, "new_prefix": new.prefix, "overlap_seconds": overlap.as_secs()}),
            ),
        );
        let rotated = self
            .store
            .rotate_api_key(&old.id, &new, now.saturating_add(overlap_ms), &audit)
            .await;
        self.forget_cached();
        if !rotated? {
            return Err(KeyError::NotFound(selector.to_string()));
        }
        let info = self.info_of(&new.id).await?;
        let old_info = self.info_of(&old.id).await?;
        Ok((IssuedKey { secret, info }, old_info))
    }

    async fn info_of(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let record = self
            .store
            .api_key(id)
            .await?
            .ok_or_else(|| KeyError::NotFound(id.to_string()))?;
        info_from_record(&record, now_ms()).ok_or_else(|| KeyError::NotFound(id.to_string()))
    }
}

fn new_key(
    name: &str,
    scopes: Scopes,
    now: i64,
    expires_in: Option<Duration>,
    actor: &Actor,
) -> (ApiKeySecret, NewApiKey) {
    let secret = ApiKeySecret::generate();
    let new = NewApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        prefix: secret.public_prefix().to_string(),
        key_hash: secret.hash().to_hex(),
        scopes: scopes.to_string(),
        created_at_ms: now,
        expires_at_ms: expires_in
            .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        created_by: Some(actor.name.clone()),
    };
    (secret, new)
}

/// Whether a stored key may authenticate at `now`, and why not.
fn check_live(record: &ApiKeyRecord, now: i64) -> Result<(), AuthFailure> {
    if record.revoked_at_ms.is_some() {
        return Err(AuthFailure::Revoked);
    }
    match record.expires_at_ms {
        Some(at) if at <= now && record.replaced_by.is_some() => Err(AuthFailure::Rotated),
        Some(at) if at <= now => Err(AuthFailure::Expired),
        _ => Ok(()),
    }
}

fn info_from_record(r: &ApiKeyRecord, now: i64) -> Option<KeyInfo> {
    let scopes: Scopes = r.scopes.parse().ok()?;
    let status = match check_live(r, now) {
        Ok(()) if r.replaced_by.is_some() => "expiring",
        Ok(()) => "active",
        Err(AuthFailure::Revoked) => "revoked",
        Err(_) => "expired",
    };
    Some(KeyInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        prefix: r.prefix.clone(),
        scopes,
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms,
        revoked_at_ms: r.revoked_at_ms,
        last_used_at_ms: r.last_used_at_ms,
        replaced_by: r.replaced_by.clone(),
        created_by: r.created_by.clone(),
        status,
        source: "database",
    })
}

/// A configured secret's public label: a fingerprint of its hash, so no
/// character of the secret itself is ever shown.
fn configured_prefix(secret: &ApiKeySecret) -> String {
    format!("cfg:{}", &secret.hash().to_hex()[..8])
}

/// 1–64 characters: letters, digits, `.`, `_`, `-`.
fn valid_name(raw: &str) -> Result<String, KeyError> {
    let name = raw.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(KeyError::InvalidName("1 to 64 characters".into()));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(KeyError::InvalidName(
            "letters, digits, '.', '_' and '-' only".into(),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revoked: Option<i64>, expires: Option<i64>, replaced: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            id: "1".into(),
            name: "n".into(),
            prefix: "mr_x".into(),
            key_hash: String::new(),
            scopes: "read".into(),
            created_at_ms: 0,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
            last_used_at_ms: None,
            replaced_by: replaced.then(|| "2".into()),
            created_by: None,
        }
    }

    #[test]
    fn liveness() {
        assert_eq!(check_live(&record(None, None, false), 10), Ok(()));
        assert_eq!(
            check_live(&record(Some(1), None, false), 10),
            Err(AuthFailure::Revoked)
        );
        assert_eq!(
            check_live(&record(None, Some(10), false), 10),
            Err(AuthFailure::Expired)
        );
        assert_eq!(
            check_live(&record(None, Some(10), true), 11),
            Err(AuthFailure::Rotated)
        );
        assert_eq!(check_live(&record(None, Some(11), true), 10), Ok(()));
        assert_eq!(
            info_from_record(&record(None, Some(11), true), 10).map(|i| i.status),
            Some("expiring")
        );
    }

    #[test]
    fn names() {
        assert_eq!(valid_name(" ci-bot.1 ").ok().as_deref(), Some("ci-bot.1"));
        assert!(valid_name("").is_err());
        assert!(valid_name("a b").is_err());
        assert!(valid_name(&"x".repeat(65)).is_err());
    }
}
