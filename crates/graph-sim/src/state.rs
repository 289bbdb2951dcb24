//! Shared simulator state. One `std::sync::Mutex` guards everything: the
//! simulator is small, every critical section is short, and the lock is never
//! held across an `.await` (outbound webhook POSTs are made after copying out
//! what they need).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::{RecordedRequest, SimConfig, SimStats};

/// Everything behind a [`crate::GraphSim`] handle.
pub(crate) struct Inner {
    pub config: SimConfig,
    pub addr: SocketAddr,
    /// Outbound client for validation handshakes, notifications and
    /// lifecycle events. Built with `no_proxy` so a developer's HTTP(S)_PROXY
    /// never intercepts webhooks aimed at 127.0.0.1.
    pub http: reqwest::Client,
    state: Mutex<State>,
    pub server: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Inner {
    pub fn new(config: SimConfig, addr: SocketAddr, http: reqwest::Client) -> Self {
        let mut mailboxes: Vec<Mailbox> = Vec::new();
        for upn in &config.mailboxes {
            let upn = upn.trim();
            if upn.is_empty() || mailboxes.iter().any(|m| m.upn.eq_ignore_ascii_case(upn)) {
                continue;
            }
            mailboxes.push(Mailbox::new(upn));
        }
        Inner {
            config,
            addr,
            http,
            state: Mutex::new(State {
                mailboxes,
                ..State::default()
            }),
            server: Mutex::new(None),
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave the data
    /// half-written in a way that matters for a test simulator, so a poisoned
    /// lock is simply taken over instead of propagating the panic.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT` (an unspecified listen address is reported as
    /// loopback so the URL is usable by a client).
    pub fn login_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1.0", self.login_url())
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub tokens: HashMap<String, TokenInfo>,
    pub mailboxes: Vec<Mailbox>,
    /// Kept in creation order so `GET /subscriptions` is stable.
    pub subscriptions: Vec<Subscription>,
    /// (requests still to throttle, Retry-After seconds)
    pub throttle: (usize, u64),
    pub paused: bool,
    pub delta_tokens: HashMap<String, DeltaCursor>,
    pub stats: SimStats,
    pub requests: Vec<RecordedRequest>,
    /// In-flight Graph requests per mailbox index.
    pub inflight: HashMap<usize, usize>,
    pub chats: Vec<Chat>,
}

impl State {
    /// Finds a mailbox by UPN (case-insensitive) or by its GUID user id.
    pub fn mailbox_index(&self, key: &str) -> Option<usize> {
        let key = key.trim();
        self.mailboxes
            .iter()
            .position(|m| m.upn.eq_ignore_ascii_case(key) || m.id.eq_ignore_ascii_case(key))
    }

    /// Drops expired subscriptions: Graph deletes a subscription once its
    /// expirationDateTime passes, so it no longer lists or notifies.
    pub fn prune_subscriptions(&mut self, now: DateTime<Utc>) {
        self.subscriptions.retain(|s| s.expiration > now);
    }

    pub fn live_subscription(&mut self, id: &str) -> Option<&mut Subscription> {
        self.prune_subscriptions(Utc::now());
        self.subscriptions
            .iter_mut()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }
}

pub(crate) struct TokenInfo {
    pub expires: Instant,
    /// Some(username) for a delegated (password grant) token; None for an
    /// application token.
    pub user: Option<String>,
}

pub(crate) struct Mailbox {
    pub upn: String,
    pub id: String,
    pub inbox_id: String,
    /// Change sequence: bumped by every delivery, update, move and delete so
    /// delta can answer "what changed since N".
    pub seq: u64,
    pub messages: BTreeMap<String, Message>,
    /// (seq, message id) of messages that left the Inbox (deleted or moved).
    pub tombstones: Vec<(u64, String)>,
}

impl Mailbox {
    fn new(upn: &str) -> Self {
        let lower = upn.to_ascii_lowercase();
        Mailbox {
            upn: upn.to_string(),
            id: stable_guid(&format!("user:{lower}")),
            inbox_id: format!(
                "AAMkAD{}",
                URL_SAFE_NO_PAD.encode(digest(&format!("inbox:{lower}")))
            ),
            seq: 0,
            messages: BTreeMap::new(),
            tombstones: Vec::new(),
        }
    }

    pub fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Address {
    pub name: String,
    pub address: String,
}

pub(crate) struct Message {
    pub id: String,
    pub raw: Arc<Vec<u8>>,
    pub subject: Option<String>,
    pub internet_message_id: Option<String>,
    pub from: Option<Address>,
    pub to: Vec<Address>,
    pub body: String,
    pub received: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    /// "inbox" for the Inbox, otherwise the destinationId given to move
    /// (well-known names lowercased).
    pub folder: String,
    pub categories: Vec<String>,
    pub flag_status: String,
    pub is_read: bool,
    pub replies: Vec<String>,
    pub change_key: String,
    pub conversation_id: String,
    /// Sequence of the last create/update, for delta.
    pub changed_seq: u64,
}

impl Message {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.change_key)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `/users/{x}/mailFolders('Inbox')/messages`
    Inbox,
    /// `/users/{x}/messages`: every folder, which includes the Inbox.
    AllMessages,
}

#[derive(Clone)]
pub(crate) struct Subscription {
    pub id: String,
    pub resource: String,
    pub mailbox: usize,
    #[allow(dead_code)] // both scopes cover Inbox deliveries; kept for clarity of intent
    pub scope: Scope,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: DateTime<Utc>,
    pub tls_version: String,
    pub creator_id: String,
    pub reauthorization_required: bool,
}

impl Subscription {
    pub fn has_change_type(&self, kind: &str) -> bool {
        self.change_type
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(kind))
    }
}

pub(crate) struct Chat {
    pub id: String,
    pub topic: Option<String>,
    pub chat_type: String,
    pub members: Vec<(String, Vec<String>)>,
    pub messages: Vec<String>,
    pub created: DateTime<Utc>,
}

#[derive(Clone)]
pub(crate) enum DeltaItem {
    Changed(String),
    Removed(String),
}

/// Server-side state behind an opaque delta or skip token. Keeping it here
/// (instead of encoding it in the token) makes `expire_delta_tokens` a
/// simple `clear()` and lets a client retry a page with the same link.
#[derive(Clone)]
pub(crate) enum DeltaCursor {
    Skip {
        mailbox: usize,
        items: Arc<Vec<DeltaItem>>,
        offset: usize,
        /// Sequence the round was computed at; becomes the next deltaLink's base.
        hi: u64,
        select: Option<Vec<String>>,
    },
    Delta {
        mailbox: usize,
        since: u64,
        select: Option<Vec<String>>,
    },
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Opaque, URL-safe random token.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// An immutable-id-like message id ("AAMkAD" + base64url). URL-safe on
/// purpose so clients may put it in a path without surprises.
pub(crate) fn new_message_id() -> String {
    format!("AAMkAD{}", URL_SAFE_NO_PAD.encode(random_bytes::<48>()))
}

/// A changeKey like Exchange's ("CQAAAB" prefix), which is what the weak
/// etag wraps.
pub(crate) fn new_change_key() -> String {
    format!(
        "CQAAABYAAAA{}",
        STANDARD_NO_PAD.encode(random_bytes::<15>())
    )
}

fn digest(s: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mailroom-graph-sim:");
    h.update(s.as_bytes());
    h.finalize().into()
}

/// A GUID derived from a name, so a mailbox keeps its user id across runs
/// of the simulator.
pub(crate) fn stable_guid(name: &str) -> String {
    let d = digest(name);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// Graph's date-time rendering (UTC, `Z`).
pub(crate) fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Subscription expirations keep sub-second precision like Graph's
/// `2016-11-20T18:23:45.9356913Z`.
pub(crate) fn graph_time_precise(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 date-time; an offset-less value is taken as UTC, as
/// Graph does for `expirationDateTime`.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}
