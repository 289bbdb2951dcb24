//! Data keys and the envelope that seals stored mail at rest.
//!
//! A record sealed here is `"MR" | version 1 | id length | key id | nonce
//! (12 bytes, random) | AES-256-GCM ciphertext and tag`. The key id inside
//! the envelope says which key opens it, so keys can be rotated record by
//! record while the old ones stay configured for reading. The caller binds
//! each record to its place (table and message id) as associated data: a
//! sealed body copied onto another message's row fails to open.
//!
//! Random 96-bit nonces are safe for about 2^32 records per key; rotating
//! the data key resets the count.

use std::fmt;

use aes_gcm::{
    aead::{rand_core::RngCore, Aead, KeyInit, OsRng, Payload},
    Aes256Gcm, Nonce,
};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::SecurityError;

const MAGIC: &[u8; 2] = b"MR";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Names a data key: 16 hex characters derived from the key (a
/// fingerprint), so operators never have to name keys and two different
/// keys cannot share an id by mistake.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One AES-256 key with its id. Prints as its id only.
#[derive(Clone)]
pub struct DataKey {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({}, [redacted])", self.id)
    }
}

impl DataKey {
    /// Parses key material: 32 bytes as base64 (44 characters) or hex (64).
    pub fn parse(material: &str) -> Result<Self, SecurityError> {
        let text = material.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecurityError::InvalidDataKey("bad hex".into()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    SecurityError::InvalidDataKey(
                        "expected 32 bytes as base64 (44 characters) or hex (64 characters)".into(),
                    )
                })?
        };
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            SecurityError::InvalidDataKey(format!(
                "a data key has 32 bytes, this one has {}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_bytes(&key))
    }

    fn from_bytes(key: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"mailroom data key id\0");
        hasher.update(key);
        let id = KeyId(hex::encode(&hasher.finalize()[..8]));
        Self {
            id,
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// A fresh random key and its material as base64, for a key file or
    /// `MAILROOM_DATA_KEY`.
    pub fn generate() -> (Self, String) {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let material = base64::engine::general_purpose::STANDARD.encode(key);
        (Self::from_bytes(&key), material)
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }
}

/// A sealed record and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    pub key_id: KeyId,
    pub bytes: Vec<u8>,
}

/// The current data key (seals) and the previous ones (open only).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: DataKey,
    previous: Vec<DataKey>,
}

impl Keyring {
    /// `previous` keys open records sealed before a rotation; duplicates of
    /// the current key are ignored.
    pub fn new(current: DataKey, previous: Vec<DataKey>) -> Self {
        let mut kept: Vec<DataKey> = Vec::with_capacity(previous.len());
        for key in previous {
            if key.id != current.id && !kept.iter().any(|k| k.id == key.id) {
                kept.push(key);
            }
        }
        Self {
            current,
            previous: kept,
        }
    }

    /// A key file: one key per line (base64 or hex), `#` comments and
    /// blank lines ignored; the last key is current, earlier ones open old
    /// records.
    pub fn from_key_file(text: &str) -> Result<Self, SecurityError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, line)| {
                DataKey::parse(line).map_err(|e| match e {
                    SecurityError::InvalidDataKey(why) => {
                        SecurityError::InvalidDataKey(format!("key {} of the file: {why}", i + 1))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let current = keys.pop().ok_or(SecurityError::NoDataKey)?;
        keys.reverse();
        Ok(Self::new(current, keys))
    }

    pub fn current_id(&self) -> &KeyId {
        &self.current.id
    }

    /// Every key id this keyring can open, current first.
    pub fn key_ids(&self) -> Vec<&KeyId> {
        std::iter::once(&self.current.id)
            .chain(self.previous.iter().map(|k| &k.id))
            .collect()
    }

    pub fn knows(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &str) -> Option<&DataKey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id.0 == id)
    }

    /// Seals `plaintext` under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> SealedBlob {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let id = self.current.id.0.as_bytes();
        // AES-GCM only fails for plaintexts beyond 64 GiB, far above any
        // message limit; the empty fallback would then fail to open, loudly.
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(4 + id.len() + NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.push(id.len() as u8);
        bytes.extend_from_slice(id);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        SealedBlob {
            key_id: self.current.id.clone(),
            bytes,
        }
    }

    /// The key id written in a sealed record, without opening it.
    pub fn envelope_key_id(sealed: &[u8]) -> Result<&str, SecurityError> {
        Ok(split_envelope(sealed)?.0)
    }

    /// Opens a record sealed by any key of this keyring with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let (id, nonce, ciphertext) = split_envelope(sealed)?;
        let key = self
            .key(id)
            .ok_or_else(|| SecurityError::UnknownDataKey(id.to_string()))?;
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SecurityError::Tampered)
    }
}

fn split_envelope(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), SecurityError> {
    let malformed = SecurityError::MalformedEnvelope;
    if sealed.len() < 4 || &sealed[..2] != MAGIC {
        return Err(malformed("no envelope header"));
    }
    if sealed[2] != VERSION {
        return Err(malformed("unknown envelope version"));
    }
    let id_len = usize::from(sealed[3]);
    let rest = &sealed[4..];
    if rest.len() < id_len + NONCE_LEN + 16 {
        return Err(malformed("truncated"));
    }
    let (id, rest) = rest.split_at(id_len);
    let id = std::str::from_utf8(id).map_err(|_| malformed("key id is not text"))?;
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok((id, nonce, ciphertext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::new(DataKey::generate().0, vec![])
    }

    #[test]
    fn seal_and_open() {
        let ring = keyring();
        let sealed = ring.seal(b"message_raw:1", b"Dear Bob, the secret is 42");
        assert_eq!(&sealed.key_id, ring.current_id());
        assert!(!sealed.bytes.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            ring.open(b"message_raw:1", &sealed.bytes).expect("opens"),
            b"Dear Bob, the secret is 42"
        );
        assert_eq!(
            Keyring::envelope_key_id(&sealed.bytes),
            Ok(ring.current_id().as_str())
        );
    }

    #[test]
    fn another_place_or_altered_bytes_do_not_open() {
        let ring = keyring();
        let sealed = ring.seal(b"message_raw:1", b"body");
        assert_eq!(
            ring.open(b"message_raw:2", &sealed.bytes),
            Err(SecurityError::Tampered)
        );
        let mut altered = sealed.bytes.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            ring.open(b"message_raw:1", &altered),
            Err(SecurityError::Tampered)
        );
        assert!(matches!(
            ring.open(b"x", b"plain text"),
            Err(SecurityError::MalformedEnvelope(_))
        ));
        assert!(ring.open(b"x", &sealed.bytes[..20]).is_err());
    }

    #[test]
    fn rotation_keeps_old_records_readable() {
        let (old, old_material) = DataKey::generate();
        let before = Keyring::new(old.clone(), vec![]);
        let sealed = before.seal(b"a", b"old record");
        let (new, new_material) = DataKey::generate();
        let after = Keyring::from_key_file(&format!("# keys\n{old_material}\n\n{new_material}\n"))
            .expect("file");
        assert_eq!(after.current_id(), new.id());
        assert_eq!(after.key_ids().len(), 2);
        assert_eq!(
            after.open(b"a", &sealed.bytes).expect("old key"),
            b"old record"
        );
        let only_new = Keyring::new(DataKey::parse(&new_material).expect("key"), vec![]);
        assert_eq!(
            only_new.open(b"a", &sealed.bytes),
            Err(SecurityError::UnknownDataKey(old.id().to_string()))
        );
    }

    #[test]
    fn key_material_formats() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = DataKey::parse(hex_key).expect("hex");
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_key).expect("hex"));
        let b = DataKey::parse(&b64).expect("base64");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().as_str().len(), 16);
        assert!(DataKey::parse("too short").is_err());
        assert!(
            DataKey::parse(&base64::engine::general_purpose::STANDARD.encode([0u8; 16])).is_err()
        );
        assert!(!format!("{a:?}").contains("0011"));
        assert_eq!(
            Keyring::from_key_file("# nothing\n").err(),
            Some(SecurityError::NoDataKey)
        );
    }
}
