//! API keys: `mr_` + 43 base62 characters (256 bits from the operating
//! system's generator) + a 6-character checksum, 52 characters in all.
//!
//! The checksum lets a malformed or mistyped key be refused without a
//! database lookup and lets secret scanners recognise leaked keys. Only the
//! SHA-256 of a key is stored: the key has 256 bits of entropy, so a slow
//! password hash would add latency to every request and no security. The
//! first characters (`mr_` + 8) are the key's public prefix: shown in
//! listings and logs, and used to find the stored hash, which is then
//! compared in constant time.

use std::fmt;

use aes_gcm::aead::{rand_core::RngCore, OsRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SecurityError;

/// Every generated key starts with this.
pub const KEY_PREFIX: &str = "mr_";
/// Length of the public prefix (`mr_` + 8 characters).
pub const PUBLIC_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Shortest secret accepted from configuration (`MAILROOM_API_KEYS`):
/// `openssl rand -hex 16` and longer.
const MIN_CONFIGURED_LEN: usize = 32;
const MAX_CONFIGURED_LEN: usize = 256;

/// An API key in full. Shown to its owner once, at creation; never stored,
/// never logged (`Debug` and `Display` print `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// A fresh key. Each base62 character is drawn uniformly by rejection
    /// sampling (bytes >= 248 are redrawn), so the body carries
    /// 43 × log2(62) ≈ 256 bits.
    pub fn generate() -> Self {
        let mut body = String::with_capacity(BODY_LEN);
        let mut buf = [0u8; 64];
        while body.len() < BODY_LEN {
            OsRng.fill_bytes(&mut buf);
            for b in buf {
                if b < 248 && body.len() < BODY_LEN {
                    body.push(char::from(BASE62[usize::from(b % 62)]));
                }
            }
        }
        let checksum = checksum(&body);
        Self(format!("{KEY_PREFIX}{body}{checksum}"))
    }

    /// A key as presented by a client: the generated format, checksum
    /// included. Cheap; no lookup.
    pub fn parse(raw: &str) -> Result<Self, SecurityError> {
        if !raw.starts_with(KEY_PREFIX) {
            return Err(SecurityError::MalformedKey("it does not start with mr_"));
        }
        if raw.len() != KEY_LEN {
            return Err(SecurityError::MalformedKey("wrong length"));
        }
        if !raw
            .bytes()
            .skip(KEY_PREFIX.len())
            .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(SecurityError::MalformedKey("characters outside base62"));
        }
        let (body, sum) = raw[KEY_PREFIX.len()..].split_at(BODY_LEN);
        if checksum(body).as_bytes().ct_eq(sum.as_bytes()).into() {
            Ok(Self(raw.to_string()))
        } else {
            Err(SecurityError::MalformedKey("checksum mismatch"))
        }
    }

    /// A secret an operator provisioned in configuration (the seed
    /// runbooks generate them with `openssl rand -hex 32`): any visible
    /// ASCII without commas or spaces, 32 to 256 characters.
    pub fn configured(raw: &str) -> Result<Self, SecurityError> {
        if raw.starts_with(KEY_PREFIX) {
            return Err(SecurityError::MalformedKey(
                "a configured key must not start with mr_ (that prefix marks generated keys)",
            ));
        }
        if raw.len() < MIN_CONFIGURED_LEN || raw.len() > MAX_CONFIGURED_LEN {
            return Err(SecurityError::MalformedKey(
                "a configured key must have 32 to 256 characters",
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(SecurityError::MalformedKey(
                "a configured key may hold only visible ASCII without commas",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// Whether `raw` claims to be a generated key (its prefix), before
    /// checking it: configured secrets may not start with `mr_`.
    pub fn looks_generated(raw: &str) -> bool {
        raw.starts_with(KEY_PREFIX)
    }

    /// The public prefix: safe to show, log and index.
    pub fn public_prefix(&self) -> &str {
        &self.0[..PUBLIC_PREFIX_LEN.min(self.0.len())]
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The key itself, for the one moment it is shown to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl ApiKeySecret {
    /// What may be printed: the public prefix of a generated key, nothing
    /// of a configured secret.
    fn shown(&self) -> &str {
        if Self::looks_generated(&self.0) {
            self.public_prefix()
        } else {
            "configured"
        }
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…[redacted])", self.shown())
    }
}

impl fmt::Display for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…[redacted]", self.shown())
    }
}

/// SHA-256 of a key: what the database holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(raw: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(raw, &mut out).ok()?;
        Some(Self(out))
    }

    /// Constant-time equality: the time taken says nothing about how many
    /// leading bytes matched.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_are_distinct() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 52);
        assert!(a.expose().starts_with("mr_"));
        assert_eq!(ApiKeySecret::parse(a.expose()), Ok(a.clone()));
        assert_eq!(a.public_prefix().len(), PUBLIC_PREFIX_LEN);
        assert!(a.hash().ct_eq(&a.hash()));
        assert!(!a.hash().ct_eq(&b.hash()));
    }

    #[test]
    fn malformed_keys_are_refused_without_lookup() {
        let key = ApiKeySecret::generate();
        let text = key.expose();
        // One character changed: the checksum catches it.
        let mut flipped = text.as_bytes().to_vec();
        flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(
            ApiKeySecret::parse(&flipped),
            Err(SecurityError::MalformedKey("checksum mismatch"))
        );
        assert!(ApiKeySecret::parse(&text[..51]).is_err());
        assert!(ApiKeySecret::parse(&format!("{}!", &text[..51])).is_err());
        assert!(ApiKeySecret::parse("Bearer abc").is_err());
        assert!(ApiKeySecret::parse("").is_err());
    }

    #[test]
    fn never_prints_the_secret() {
        let key = ApiKeySecret::generate();
        let shown = format!("{key:?} {key}");
        assert!(!shown.contains(&key.expose()[PUBLIC_PREFIX_LEN..]));
        assert!(shown.contains(key.public_prefix()));
    }

    #[test]
    fn configured_secrets() {
        let hex64 = "a".repeat(64);
        assert!(ApiKeySecret::configured(&hex64).is_ok());
        assert!(ApiKeySecret::configured("short").is_err());
        assert!(ApiKeySecret::configured(&format!("{} x", "a".repeat(40))).is_err());
        assert!(ApiKeySecret::configured(&format!("mr_{}", "a".repeat(40))).is_err());
        let configured = ApiKeySecret::configured(&hex64).expect("valid");
        assert!(!format!("{configured:?} {configured}").contains("aaaa"));
    }

    #[test]
    fn hash_roundtrips_through_hex() {
        let h = ApiKeySecret::generate().hash();
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }
}
