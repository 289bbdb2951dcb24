//! Encryption at rest, applied where bytes meet the database: raw
//! messages and parsed views are sealed (AES-256-GCM, `mailroom-security`)
//! before they are written and opened after they are read, so no other
//! crate handles ciphertext or keys.
//!
//! The keyring can change while the server runs (a key file gains a new
//! key during a rotation): it sits behind a lock, and a record sealed by a
//! key this process has not seen yet triggers one reload before giving up.

use std::sync::{Arc, RwLock};

use mailroom_domain::MessageId;
use mailroom_security::{Keyring, SecurityError};

use crate::{Store, StoreError};

/// Reads the keyring again from where it came from (a key file).
pub type KeyringReloader = Box<dyn Fn() -> Result<Keyring, String> + Send + Sync>;

#[derive(Default)]
pub(crate) struct Sealing {
    ring: RwLock<Option<Arc<Keyring>>>,
    reload: RwLock<Option<Arc<KeyringReloader>>>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing")
            .field(
                "current_key",
                &self.current().map(|r| r.current_id().to_string()),
            )
            .finish()
    }
}

impl Sealing {
    pub(crate) fn current(&self) -> Option<Arc<Keyring>> {
        self.ring.read().ok().and_then(|r| r.clone())
    }
}

/// Raw bytes ready to store: sealed when a data key is configured.
#[derive(Debug, Clone)]
pub struct StoredRaw {
    pub(crate) bytes: Vec<u8>,
    pub(crate) key_id: Option<String>,
    pub(crate) plain_len: usize,
}

impl StoredRaw {
    /// Size of the message as received (not of its ciphertext).
    pub fn len(&self) -> usize {
        self.plain_len
    }

    pub fn is_empty(&self) -> bool {
        self.plain_len == 0
    }
}

pub(crate) fn raw_aad(id: &str) -> Vec<u8> {
    [b"message_raw\0".as_slice(), id.as_bytes()].concat()
}

pub(crate) fn view_aad(id: &str) -> Vec<u8> {
    [b"messages.view\0".as_slice(), id.as_bytes()].concat()
}

impl Store {
    /// Installs (or, with `None`, removes) the keyring that seals new
    /// records and opens stored ones.
    pub fn set_keyring(&self, ring: Option<Keyring>) {
        if let Ok(mut slot) = self.sealing.ring.write() {
            *slot = ring.map(Arc::new);
        }
    }

    /// How to read the keyring again when a record names an unknown key.
    pub fn set_keyring_reloader(&self, reload: KeyringReloader) {
        if let Ok(mut slot) = self.sealing.reload.write() {
            *slot = Some(Arc::new(reload));
        }
    }

    /// The keyring in force, if encryption is configured.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.sealing.current()
    }

    /// Reads the keyring again (key file changed). Returns whether it changed.
    pub fn reload_keyring(&self) -> Result<bool, StoreError> {
        let reload = self.sealing.reload.read().ok().and_then(|r| r.clone());
        let Some(reload) = reload else {
            return Ok(false);
        };
        let fresh = reload().map_err(StoreError::Keyring)?;
        let before = self.keyring().map(|r| {
            r.key_ids()
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
        });
        let after: Vec<String> = fresh.key_ids().iter().map(|k| k.to_string()).collect();
        let changed = before.as_ref() != Some(&after);
        if changed {
            tracing::info!(current_key = %fresh.current_id(), keys = after.len(), "data keys reloaded");
            self.set_keyring(Some(fresh));
        }
        Ok(changed)
    }

    /// Raw bytes as they will be stored: sealed under the current data key
    /// when one is configured. Call it in the caller's task, not in the
    /// group-commit writer, so sealing runs in parallel.
    pub fn stored_raw(&self, id: &MessageId, raw: Vec<u8>) -> StoredRaw {
        let plain_len = raw.len();
        match self.keyring() {
            Some(ring) => {
                let sealed = ring.seal(&raw_aad(id.as_str()), &raw);
                StoredRaw {
                    bytes: sealed.bytes,
                    key_id: Some(sealed.key_id.to_string()),
                    plain_len,
                }
            }
            None => StoredRaw {
                bytes: raw,
                key_id: None,
                plain_len,
            },
        }
    }

    /// Opens a sealed record, reloading the keyring once if the record
    /// names a key this process does not know yet.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let attempt = |ring: Option<Arc<Keyring>>| match ring {
            Some(ring) => ring.open(aad, sealed),
            None => Err(SecurityError::NoDataKey),
        };
        match attempt(self.keyring()) {
            Err(SecurityError::UnknownDataKey(_) | SecurityError::NoDataKey)
                if self.reload_keyring().unwrap_or(false) =>
            {
                attempt(self.keyring()).map_err(StoreError::Sealing)
            }
            other => other.map_err(StoreError::Sealing),
        }
    }

    /// A stored raw message, opened if it was sealed.
    pub(crate) fn open_raw(
        &self,
        id: &str,
        bytes: Vec<u8>,
        key_id: Option<String>,
    ) -> Result<Vec<u8>, StoreError> {
        match key_id {
            None => Ok(bytes),
            Some(_) => self.open(&raw_aad(id), &bytes),
        }
    }
}
