//! The security vocabulary of mailroom, free of I/O: what an API key looks
//! like and how it is hashed and compared, the scopes a key can carry, the
//! data keys that encrypt stored mail and the AES-256-GCM envelope they
//! seal it in, and the short durations operators type (`90d`, `24h`).
//!
//! Invariants:
//! - No I/O (no files, no network, no database). Randomness comes from the
//!   operating system's generator; everything else is a pure function.
//! - Secrets never reach `Debug` or `Display`: [`ApiKeySecret`], [`DataKey`]
//!   and [`Secret`] print as `[redacted]`.
//! - Secrets are compared in constant time.

mod api_key;
mod duration;
mod error;
mod keyring;
mod scope;
mod secret;

pub use api_key::{ApiKeySecret, KeyHash, KEY_PREFIX, PUBLIC_PREFIX_LEN};
pub use duration::parse_duration;
pub use error::SecurityError;
pub use keyring::{DataKey, KeyId, Keyring, SealedBlob};
pub use scope::{Scope, Scopes};
pub use secret::{random_hex, Secret};
