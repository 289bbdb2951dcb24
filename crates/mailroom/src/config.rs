//! Layered configuration: defaults < `mailroom.toml` < environment < flags.
//!
//! Every setting has one dotted key (`queue.lease_seconds`); its environment
//! variable is `MAILROOM_` + the key upper-cased with `.` as `_`
//! (`MAILROOM_QUEUE_LEASE_SECONDS`), plus the aliases the seed manuals use
//! (`DATABASE_URL`, `LOG_LEVEL`, `WORKERS`). Resolution collects every
//! problem, each naming its key and where the value came from, so
//! `mailroom config validate` can print them all at once.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use mailroom_domain::RetryPolicy;
use mailroom_http::ServeLimits;
use mailroom_ratelimit::{Quota, RedisFailurePolicy};
use mailroom_security::{ApiKeySecret, DataKey, Scopes, Secret};
use mailroom_telemetry::LogFormat;

/// One configurable setting.
pub struct Key {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// Every key mailroom reads. README's configuration reference mirrors it.
pub const KEYS: &[Key] = &[
    Key {
        name: "bind",
        aliases: &[],
        default: Some("127.0.0.1:8080"),
        help: "address and port the HTTP server listens on",
    },
    Key {
        name: "database_url",
        aliases: &["DATABASE_URL"],
        default: Some("sqlite://data/mailroom.db"),
        help: "sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB",
    },
    Key {
        name: "read_database_url",
        aliases: &["DATABASE_READ_URL"],
        default: None,
        help: "optional PostgreSQL read replica for listings and lookups",
    },
    Key {
        name: "database.max_connections",
        aliases: &[],
        default: Some("16"),
        help: "connections per pool",
    },
    Key {
        name: "workers",
        aliases: &["WORKERS"],
        default: None,
        help: "concurrent pipeline workers (default: number of cores)",
    },
    Key {
        name: "max_message_bytes",
        aliases: &[],
        default: Some("26214400"),
        help: "largest raw message accepted, bytes (25 MiB)",
    },
    Key {
        name: "ingest.max_inflight_bytes",
        aliases: &[],
        default: Some("268435456"),
        help: "memory for all messages being received at once (256 MiB); senders wait, then get 503, beyond it",
    },
    Key {
        name: "log_level",
        aliases: &["LOG_LEVEL", "RUST_LOG"],
        default: Some("info"),
        help: "tracing filter: error, warn, info, debug, trace or a RUST_LOG directive list",
    },
    Key {
        name: "log_format",
        aliases: &[],
        default: Some("pretty"),
        help: "json or pretty",
    },
    Key {
        name: "shutdown_grace_seconds",
        aliases: &[],
        default: Some("30"),
        help: "how long in-flight work may run after SIGTERM",
    },
    Key {
        name: "queue.lease_seconds",
        aliases: &[],
        default: Some("60"),
        help: "how long a worker holds a job before another may take it over",
    },
    Key {
        name: "queue.max_attempts",
        aliases: &[],
        default: Some("5"),
        help: "attempts before a job is dead",
    },
    Key {
        name: "queue.backoff_base_ms",
        aliases: &[],
        default: Some("2000"),
        help: "first retry delay; doubles per attempt",
    },
    Key {
        name: "queue.backoff_max_ms",
        aliases: &[],
        default: Some("600000"),
        help: "longest retry delay",
    },
    Key {
        name: "queue.batch_size",
        aliases: &[],
        default: Some("32"),
        help: "jobs a worker leases at once; keep batch_size x slowest stage time well under the lease",
    },
    Key {
        name: "queue.poll_interval_ms",
        aliases: &[],
        default: Some("500"),
        help: "how often idle workers look for due retries",
    },
    Key {
        name: "score.model_path",
        aliases: &[],
        default: Some("data/model.mrmodel"),
        help: "the live scoring model (learn writes it); until it exists the built-in model scores",
    },
    Key {
        name: "score.profile",
        aliases: &[],
        default: Some("inbound"),
        help: "settings profile the pipeline scores with ([score.profiles.NAME])",
    },
    Key {
        name: "graph.tenant_id",
        aliases: &[],
        default: None,
        help: "Microsoft Entra tenant id; with client_id, client_secret and mailboxes it turns the Microsoft 365 source on",
    },
    Key {
        name: "graph.client_id",
        aliases: &[],
        default: None,
        help: "application (client) id of the app registration",
    },
    Key {
        name: "graph.client_secret",
        aliases: &[],
        default: None,
        help: "secret: the app registration's client secret (or use a certificate)",
    },
    Key {
        name: "graph.certificate_file",
        aliases: &[],
        default: None,
        help: "PEM certificate registered on the app, instead of a client secret (with graph.private_key_file)",
    },
    Key {
        name: "graph.private_key_file",
        aliases: &[],
        default: None,
        help: "its RSA private key (PEM); token requests carry a JWT signed with it",
    },
    Key {
        name: "graph.mailboxes",
        aliases: &[],
        default: None,
        help: "comma-separated user ids or UPNs whose Inbox is watched",
    },
    Key {
        name: "graph.notification_url",
        aliases: &[],
        default: None,
        help: "public URL of this server's /webhook, as Graph reaches it",
    },
    Key {
        name: "graph.lifecycle_url",
        aliases: &[],
        default: None,
        help: "public URL for lifecycle notifications (default: the notification URL)",
    },
    Key {
        name: "graph.base_url",
        aliases: &[],
        default: Some("https://graph.microsoft.com/v1.0"),
        help: "Graph API root (point it at a simulator to try things locally)",
    },
    Key {
        name: "graph.login_url",
        aliases: &[],
        default: Some("https://login.microsoftonline.com"),
        help: "Entra ID token endpoint root",
    },
    Key {
        name: "graph.subscription_minutes",
        aliases: &[],
        default: Some("10070"),
        help: "lifetime asked for each subscription (Outlook messages allow at most 10080)",
    },
    Key {
        name: "graph.renew_before_minutes",
        aliases: &[],
        default: Some("2880"),
        help: "renew a subscription when less than this remains",
    },
    Key {
        name: "graph.lease_seconds",
        aliases: &[],
        default: Some("30"),
        help: "owner lease of the subscription work: how soon another replica takes over from a dead one",
    },
    Key {
        name: "graph.resync_hours",
        aliases: &[],
        default: Some("24"),
        help: "how far back a first sync or a full resync (expired delta link) reaches",
    },
    Key {
        name: "graph.fetchers",
        aliases: &[],
        default: Some("8"),
        help: "messages downloaded from Graph at once (each mailbox also stays within Graph's 4 concurrent requests)",
    },
    Key {
        name: "submission.endpoints",
        aliases: &[],
        default: None,
        help: "comma-separated URLs each processed message's result is POSTed to (signed JSON)",
    },
    Key {
        name: "submission.secret",
        aliases: &[],
        default: None,
        help: "secret: the HMAC-SHA256 key of the X-Mailroom-Signature header (required with endpoints)",
    },
    Key {
        name: "submission.max_attempts",
        aliases: &[],
        default: Some("8"),
        help: "delivery attempts before a submission is dead",
    },
    Key {
        name: "submission.backoff_base_ms",
        aliases: &[],
        default: Some("1000"),
        help: "first retry delay of a submission, doubled per attempt (+ jitter)",
    },
    Key {
        name: "submission.backoff_max_ms",
        aliases: &[],
        default: Some("600000"),
        help: "longest retry delay of a submission",
    },
    Key {
        name: "submission.timeout_seconds",
        aliases: &[],
        default: Some("10"),
        help: "time an endpoint has to answer one submission",
    },
    Key {
        name: "submission.concurrency",
        aliases: &[],
        default: Some("8"),
        help: "submissions in flight at once",
    },
    Key {
        name: "imap.accounts",
        aliases: &[],
        default: None,
        help: "secret: comma-separated mailbox URLs to watch: imaps://USER:PASSWORD@HOST[:PORT][/MAILBOX], imap+starttls://… or imap://… (loopback only); percent-encode , @ : / in user and password",
    },
    Key {
        name: "imap.poll_seconds",
        aliases: &[],
        default: Some("60"),
        help: "how often a server without IDLE is checked",
    },
    Key {
        name: "imap.idle_minutes",
        aliases: &[],
        default: Some("25"),
        help: "longest IDLE before it is renewed (RFC 2177: under 29)",
    },
    Key {
        name: "imap.ca_file",
        aliases: &[],
        default: None,
        help: "PEM file of extra CA certificates trusted for IMAP TLS (a private CA)",
    },
    Key {
        name: "mcp.enabled",
        aliases: &[],
        default: Some("true"),
        help: "serve MCP (Streamable HTTP) at /mcp on the API server",
    },
    Key {
        name: "mcp.toolsets",
        aliases: &["MAILROOM_TOOLSETS"],
        default: Some("all"),
        help: "MCP toolsets offered: all or a comma-separated list (email, score); unknown names fail start-up",
    },
    Key {
        name: "mcp.read_only",
        aliases: &[],
        default: Some("false"),
        help: "offer only MCP tools that change nothing (flag --read-only)",
    },
    Key {
        name: "mcp.allowed_hosts",
        aliases: &[],
        default: Some(""),
        help: "Host header values /mcp accepts, comma-separated names or host:port (default: localhost, 127.0.0.1, ::1 and the bind address)",
    },
    Key {
        name: "mcp.allowed_origins",
        aliases: &[],
        default: Some(""),
        help: "browser origins /mcp accepts, e.g. https://app.example.com:443 (any other Origin gets 403; default: this server's own loopback origins)",
    },
    Key {
        name: "mcp.max_sessions",
        aliases: &[],
        default: Some("100"),
        help: "legacy (2025-11-25) MCP sessions open at most; past it, initialize gets 503",
    },
    Key {
        name: "mcp.session_idle_seconds",
        aliases: &[],
        default: Some("300"),
        help: "a legacy MCP session idle this long is closed",
    },
    Key {
        name: "mcp.max_request_bytes",
        aliases: &[],
        default: Some("37748736"),
        help: "largest MCP request body (36 MiB: a 25 MiB message, base64-encoded, fits)",
    },
    Key {
        name: "http.public_url",
        aliases: &[],
        default: None,
        help: "base URL clients reach the server at, when a proxy changes the Host (used in MCP auth metadata)",
    },
    Key {
        name: "fault_injection",
        aliases: &[],
        default: Some("false"),
        help: "testing only: honour X-Mailroom-Fault headers",
    },
    Key {
        name: "auth.insecure_no_auth",
        aliases: &[],
        default: Some("false"),
        help: "serve every route without an API key (flag --insecure-no-auth); never on a shared network",
    },
    Key {
        name: "auth.api_keys",
        aliases: &["MAILROOM_API_KEYS"],
        default: None,
        help: "secret: comma-separated keys provisioned outside the database, each `KEY` (admin) or `SCOPES:KEY` (read+write:KEY)",
    },
    Key {
        name: "auth.open_ops_endpoints",
        aliases: &[],
        default: Some("auto"),
        help: "serve /metrics and /health/detailed without a key: auto (on loopback binds), true or false",
    },
    Key {
        name: "auth.bootstrap_admin_key",
        aliases: &[],
        default: Some("auto"),
        help: "on first start with no key stored, create an admin key and print it once: auto (on loopback binds), true or false",
    },
    Key {
        name: "http.trusted_proxies",
        aliases: &[],
        default: Some(""),
        help: "comma-separated proxy addresses or CIDRs whose X-Forwarded-For is believed",
    },
    Key {
        name: "http.cors_allowed_origins",
        aliases: &[],
        default: Some(""),
        help: "comma-separated browser origins allowed by CORS (empty: closed)",
    },
    Key {
        name: "http.max_connections",
        aliases: &[],
        default: Some("1024"),
        help: "open connections at most; more wait in the listen backlog",
    },
    Key {
        name: "http.max_connections_per_ip",
        aliases: &[],
        default: Some("256"),
        help: "open connections at most per client address (trusted proxies exempt)",
    },
    Key {
        name: "http.header_timeout_seconds",
        aliases: &[],
        default: Some("10"),
        help: "time a client has to send a request's headers",
    },
    Key {
        name: "http.request_timeout_seconds",
        aliases: &[],
        default: Some("90"),
        help: "time a request may take, body included, before 408",
    },
    Key {
        name: "http.write_timeout_seconds",
        aliases: &[],
        default: Some("30"),
        help: "time a response write may wait for a client that does not read",
    },
    Key {
        name: "http.max_header_bytes",
        aliases: &[],
        default: Some("32768"),
        help: "largest request head (request line and headers) accepted",
    },
    Key {
        name: "rate_limit.enabled",
        aliases: &[],
        default: Some("true"),
        help: "enforce rate limits",
    },
    Key {
        name: "rate_limit.key_per_second",
        aliases: &[],
        default: Some("1000"),
        help: "tokens per second refilled in each API key's bucket",
    },
    Key {
        name: "rate_limit.key_burst",
        aliases: &[],
        default: Some("2000"),
        help: "size of each API key's bucket",
    },
    Key {
        name: "rate_limit.ip_per_second",
        aliases: &[],
        default: Some("100"),
        help: "tokens per second for each client address (open routes, failed authentication)",
    },
    Key {
        name: "rate_limit.ip_burst",
        aliases: &[],
        default: Some("200"),
        help: "size of each client address's bucket",
    },
    Key {
        name: "rate_limit.auth_failure_cost",
        aliases: &[],
        default: Some("10"),
        help: "tokens a refused authentication takes from the client address's bucket",
    },
    Key {
        name: "rate_limit.redis_failure",
        aliases: &[],
        default: Some("fail_open"),
        help: "when Redis is unreachable: fail_open (local limits) or fail_closed (503)",
    },
    Key {
        name: "rate_limit.redis_timeout_ms",
        aliases: &[],
        default: Some("100"),
        help: "longest a Redis round trip may take before it counts as a failure",
    },
    Key {
        name: "rate_limit.redis_key_prefix",
        aliases: &[],
        default: Some("mailroom:rl"),
        help: "prefix of the bucket keys in Redis (deployments sharing a Redis use distinct prefixes)",
    },
    Key {
        name: "redis_url",
        aliases: &["REDIS_URL"],
        default: None,
        help: "secret: redis://HOST:PORT to share rate limits between replicas",
    },
    Key {
        name: "encryption.data_key",
        aliases: &["MAILROOM_DATA_KEY"],
        default: None,
        help: "secret: AES-256 data key (32 bytes, base64 or hex) sealing stored mail",
    },
    Key {
        name: "encryption.previous_keys",
        aliases: &["MAILROOM_DATA_KEYS_PREVIOUS"],
        default: None,
        help: "secret: comma-separated earlier data keys, to read mail sealed before a rotation",
    },
    Key {
        name: "encryption.key_file",
        aliases: &["MAILROOM_DATA_KEY_FILE"],
        default: None,
        help: "file of data keys, one per line, the last current (alternative to data_key; reloaded when it changes)",
    },
];

/// Settings whose values are never printed, logged or audited.
pub const SECRET_KEYS: &[&str] = &[
    "auth.api_keys",
    "redis_url",
    "encryption.data_key",
    "encryption.previous_keys",
    "graph.client_secret",
    "submission.secret",
    "imap.accounts",
];

/// Whether `name` holds a secret.
pub fn is_secret(name: &str) -> bool {
    SECRET_KEYS.contains(&name)
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(String),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A configuration problem tied to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Values gathered from every layer before typing.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    values: BTreeMap<String, (String, Origin)>,
    problems: Vec<Problem>,
    /// The `[score]` table's rule settings (weights, actions, lists,
    /// profiles): structured, so typed as a whole by the scoring crate.
    score_table: Option<(toml::Table, String)>,
}

/// `[score]` keys that are ordinary flat settings; everything else in the
/// table is scoring configuration ([`mailroom_score::ScoreConfig`]).
const SCORE_FLAT_KEYS: &[&str] = &["model_path", "profile"];

impl Layers {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut layers = Layers::default();
        for key in KEYS {
            if let Some(d) = key.default {
                layers
                    .values
                    .insert(key.name.into(), (d.into(), Origin::Default));
            }
        }
        if let Some(path) = file {
            layers.load_file(path);
        }
        for key in KEYS {
            // Aliases first so the MAILROOM_ name wins when both are set.
            let mut names: Vec<String> = key.aliases.iter().rev().map(|a| a.to_string()).collect();
            names.push(env_name(key.name));
            for var in names {
                if let Some(v) = env(&var) {
                    layers.values.insert(key.name.into(), (v, Origin::Env(var)));
                }
            }
        }
        layers
    }

    fn load_file(&mut self, path: &Path) {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(Problem {
                    key: "config".into(),
                    message: format!("cannot read {shown}: {e}"),
                });
                return;
            }
        };
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(Problem {
                    key: "config".into(),
                    message: format!("{shown} is not valid TOML: {e}"),
                });
                return;
            }
        };
        if let Some(score) = table.remove("score") {
            match score {
                toml::Value::Table(mut rules) => {
                    let mut flat_part = toml::Table::new();
                    for key in SCORE_FLAT_KEYS {
                        if let Some(v) = rules.remove(*key) {
                            flat_part.insert((*key).to_string(), v);
                        }
                    }
                    table.insert("score".into(), toml::Value::Table(flat_part));
                    self.score_table = Some((rules, shown.clone()));
                }
                _ => self.problems.push(Problem {
                    key: "score".into(),
                    message: format!("must be a table in {shown}"),
                }),
            }
        }
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (key, value) in flat {
            if KEYS.iter().any(|k| k.name == key) {
                self.values
                    .insert(key, (value, Origin::File(shown.clone())));
            } else {
                self.problems.push(Problem {
                    key,
                    message: format!("unknown key in {shown}"),
                });
            }
        }
    }

    /// A command-line flag, the strongest layer.
    pub fn set_flag(&mut self, key: &str, flag: &str, value: Option<String>) {
        if let Some(v) = value {
            self.values
                .insert(key.into(), (v, Origin::Flag(flag.into())));
        }
    }

    fn get(&self, key: &str) -> Option<&(String, Origin)> {
        self.values.get(key)
    }

    /// Every setting's effective value, fit to store and compare between
    /// starts: secrets appear only as `[set]`, URLs without passwords.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(key, (value, _))| {
                let shown = if is_secret(key) {
                    "[set]".to_string()
                } else if key.ends_with("database_url") {
                    mailroom_store::redact(value)
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect()
    }

    fn resolve_score(&self, r: &mut Resolver<'_>) -> Option<ScoreSettings> {
        let rules = match &self.score_table {
            None => mailroom_score::ScoreConfig::default(),
            Some((table, shown)) => match toml::Value::Table(table.clone()).try_into() {
                Ok(c) => c,
                Err(e) => {
                    r.problem("score", format!("in {shown}: {}", e.message()));
                    return None;
                }
            },
        };
        if let Err(e) = mailroom_score::Scorer::new(rules.clone()) {
            r.problem("score", e.to_string());
            return None;
        }
        let profile = r.string("score.profile")?;
        if !rules.profiles.contains_key(&profile) {
            r.problem(
                "score.profile",
                format!(
                    "no profile `{profile}` (configured: {})",
                    rules
                        .profiles
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        Some(ScoreSettings {
            rules,
            model_path: PathBuf::from(r.string("score.model_path")?),
            profile,
        })
    }

    /// Types every value; returns the config or every problem found.
    pub fn resolve(&self) -> Result<Config, Vec<Problem>> {
        let mut r = Resolver {
            layers: self,
            problems: self.problems.clone(),
        };
        let bind = r.parse::<SocketAddr>("bind", "an address such as 127.0.0.1:8080");
        let database_url = r.string("database_url");
        if let Some(url) = &database_url {
            if let Err(e) = mailroom_store::Backend::from_url(url) {
                r.problem("database_url", e.to_string());
            }
        }
        let read_database_url = r.string("read_database_url");
        if let (Some(read), Some(url)) = (&read_database_url, &database_url) {
            if !read.starts_with("postgres") || !url.starts_with("postgres") {
                r.problem(
                    "read_database_url",
                    "a read replica needs PostgreSQL for both database_url and read_database_url"
                        .into(),
                );
            }
        }
        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let workers = if r.layers.get("workers").is_some() {
            r.ranged("workers", 1, 256)
        } else {
            Some(default_workers as u64)
        };
        let log_format = r.string("log_format").and_then(|f| match f.as_str() {
            "json" => Some(LogFormat::Json),
            "pretty" => Some(LogFormat::Pretty),
            other => {
                r.problem("log_format", format!("`{other}` is not json or pretty"));
                None
            }
        });
        let log_level = r.string("log_level");
        if let Some(level) = &log_level {
            if tracing_filter_invalid(level) {
                r.problem(
                    "log_level",
                    format!("`{level}` is not a log level or RUST_LOG filter"),
                );
            }
        }
        let config = PartialConfig {
            bind: r.required(bind, "bind"),
            database_url: r.required(database_url, "database_url"),
            read_database_url,
            db_max_connections: r
                .ranged("database.max_connections", 1, 1000)
                .map(|n| n as u32),
            workers: workers.map(|n| n as usize),
            max_message_bytes: r
                .ranged("max_message_bytes", 1024, 1 << 30)
                .map(|n| n as usize),
            max_inflight_bytes: r
                .ranged("ingest.max_inflight_bytes", 1 << 20, 1 << 40)
                .map(|n| n as usize),
            log_level: normalise_filter(log_level.as_deref().unwrap_or("info")),
            log_format: log_format.unwrap_or(LogFormat::Pretty),
            shutdown_grace: r
                .ranged("shutdown_grace_seconds", 0, 3600)
                .map(Duration::from_secs),
            lease: r
                .ranged("queue.lease_seconds", 1, 86_400)
                .map(Duration::from_secs),
            retry: match (
                r.ranged("queue.max_attempts", 1, 100),
                r.ranged("queue.backoff_base_ms", 1, 86_400_000),
                r.ranged("queue.backoff_max_ms", 1, 604_800_000),
            ) {
                (Some(max_attempts), Some(base), Some(max)) => Some(RetryPolicy {
                    max_attempts: max_attempts as u32,
                    base_delay: Duration::from_millis(base),
                    max_delay: Duration::from_millis(max.max(base)),
                }),
                _ => None,
            },
            batch_size: r.ranged("queue.batch_size", 1, 1000).map(|n| n as u32),
            poll_interval: r
                .ranged("queue.poll_interval_ms", 10, 60_000)
                .map(Duration::from_millis),
            fault_injection: r.parse::<bool>("fault_injection", "true or false"),
            security: resolve_security(&mut r),
            score: self.resolve_score(&mut r),
            mcp: resolve_mcp(&mut r),
            graph: resolve_graph(&mut r),
            submission: resolve_submission(&mut r),
            imap: resolve_imap(&mut r),
        };
        if let (Some(one), Some(all)) = (config.max_message_bytes, config.max_inflight_bytes) {
            if all < one {
                r.problem(
                    "ingest.max_inflight_bytes",
                    format!(
                        "{all} is smaller than max_message_bytes ({one}): one message must fit"
                    ),
                );
            }
        }
        if r.problems.is_empty() {
            let fingerprint = self.fingerprint();
            config
                .complete()
                .map(|mut c| {
                    c.fingerprint = fingerprint;
                    c
                })
                .ok_or_else(|| {
                    vec![Problem {
                        key: "config".into(),
                        message: "incomplete configuration".into(),
                    }]
                })
        } else {
            Err(r.problems)
        }
    }
}

/// `auto`, `true` or `false`: a behaviour that by default depends on
/// whether the server listens on loopback only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl Switch {
    /// The decision for a server bound to `bind`.
    pub fn decide(self, bind: &SocketAddr) -> bool {
        match self {
            Switch::Auto => bind.ip().is_loopback(),
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

/// Where the data keys come from.
#[derive(Debug, Clone)]
pub enum DataKeySource {
    /// No key: mail is stored in the clear (and the server says so).
    None,
    /// `MAILROOM_DATA_KEY` (+ `MAILROOM_DATA_KEYS_PREVIOUS`).
    Inline {
        current: Secret<String>,
        previous: Vec<Secret<String>>,
    },
    /// A key file (one key per line, the last current).
    File(PathBuf),
}

/// The rate limits when enabled.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub key: Quota,
    pub ip: Quota,
    pub on_redis_failure: RedisFailurePolicy,
    pub redis_timeout: Duration,
    pub redis_prefix: String,
}

/// How every surface is protected.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub insecure_no_auth: bool,
    /// Keys provisioned in configuration (`MAILROOM_API_KEYS`).
    pub api_keys: Vec<(ApiKeySecret, Scopes)>,
    pub open_ops_endpoints: Switch,
    pub bootstrap_admin_key: Switch,
    pub trusted_proxies: Vec<IpNet>,
    pub cors_allowed_origins: Vec<String>,
    pub serve_limits: ServeLimits,
    pub request_timeout: Duration,
    /// `None` when rate limiting is off.
    pub rate_limit: Option<RateLimitSettings>,
    pub auth_failure_cost: u32,
    pub redis_url: Option<Secret<String>>,
    pub data_keys: DataKeySource,
}

/// A browser origin as written in configuration: scheme and host (and
/// port), no path.
fn is_origin(origin: &str) -> bool {
    (origin.starts_with("https://") || origin.starts_with("http://"))
        && !origin.ends_with('/')
        && axum::http::HeaderValue::from_str(origin).is_ok()
}

/// The MCP server's settings (`[mcp]`).
#[derive(Debug, Clone)]
pub struct McpConfig {
    pub enabled: bool,
    pub tools: mailroom_mcp::ToolSelection,
    /// Empty: the loopback names and the bind address.
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_sessions: usize,
    pub session_idle: Duration,
    pub max_request_bytes: usize,
    pub public_url: Option<String>,
}

fn resolve_mcp(r: &mut Resolver<'_>) -> Option<McpConfig> {
    let enabled = r.parse::<bool>("mcp.enabled", "true or false");
    let read_only = r.parse::<bool>("mcp.read_only", "true or false");
    let spec = r.string("mcp.toolsets").unwrap_or_else(|| "all".into());
    let tools = match mailroom_mcp::ToolSelection::parse(&spec, read_only.unwrap_or(false)) {
        Ok(tools) => Some(tools),
        Err(e) => {
            r.problem("mcp.toolsets", e.to_string());
            None
        }
    };
    let allowed_hosts = r.list("mcp.allowed_hosts");
    let allowed_origins = r.list("mcp.allowed_origins");
    for origin in &allowed_origins {
        if !is_origin(origin) {
            r.problem(
                "mcp.allowed_origins",
                format!("`{origin}` is not an origin such as https://app.example.com:443"),
            );
        }
    }
    let public_url = r.string("http.public_url");
    if let Some(url) = &public_url {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if !ok {
            r.problem(
                "http.public_url",
                format!("`{url}` is not an http(s) URL such as https://mail.example.com"),
            );
        }
    }
    // Every setting is checked before any is given up on, so all
    // problems are reported at once.
    let max_sessions = r.ranged("mcp.max_sessions", 1, 100_000);
    let session_idle = r.ranged("mcp.session_idle_seconds", 1, 86_400);
    let max_request_bytes = r.ranged("mcp.max_request_bytes", 1024, 1 << 30);
    Some(McpConfig {
        enabled: enabled?,
        tools: tools?,
        allowed_hosts,
        allowed_origins,
        max_sessions: max_sessions? as usize,
        session_idle: Duration::from_secs(session_idle?),
        max_request_bytes: max_request_bytes? as usize,
        public_url,
    })
}

/// `[graph]`: `Some(None)` when the source is not configured at all, a
/// problem for each missing piece when it is half configured.
fn resolve_graph(r: &mut Resolver<'_>) -> Option<Option<mailroom_graph::GraphSettings>> {
    let identity = [
        "graph.tenant_id",
        "graph.client_id",
        "graph.mailboxes",
        "graph.notification_url",
    ];
    let given: Vec<Option<String>> = identity.iter().map(|k| r.string(k)).collect();
    let secret = r.string("graph.client_secret");
    let certificate = r.string("graph.certificate_file");
    let private_key = r.string("graph.private_key_file");
    let subscription_minutes = r.ranged("graph.subscription_minutes", 2, 10_080);
    let renew_before = r.ranged("graph.renew_before_minutes", 1, 10_079);
    let lease = r.ranged("graph.lease_seconds", 2, 3600);
    let resync = r.ranged("graph.resync_hours", 1, 24 * 365);
    let fetchers = r.ranged("graph.fetchers", 1, 256);
    let base_url = r.string("graph.base_url");
    let login_url = r.string("graph.login_url");
    let lifecycle_url = r.string("graph.lifecycle_url");
    let credential_given = secret.is_some() || certificate.is_some() || private_key.is_some();
    if given.iter().all(Option::is_none) && !credential_given {
        return Some(None);
    }
    for (key, value) in identity.iter().zip(&given) {
        if value.is_none() {
            r.problem(
                key,
                "is required once any graph.* identity setting is set".into(),
            );
        }
    }
    let credential = match (secret, certificate, private_key) {
        (Some(secret), None, None) => Some(mailroom_graph::Credential::Secret(Secret::new(secret))),
        (None, Some(cert), Some(key)) => {
            let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
            match (read(&cert), read(&key)) {
                (Ok(c), Ok(k)) => match mailroom_graph::CertificateCredential::from_pem(&c, &k) {
                    Ok(credential) => Some(mailroom_graph::Credential::Certificate(credential)),
                    Err(e) => {
                        r.problem("graph.certificate_file", e.to_string());
                        None
                    }
                },
                (Err(e), _) => {
                    r.problem("graph.certificate_file", e);
                    None
                }
                (_, Err(e)) => {
                    r.problem("graph.private_key_file", e);
                    None
                }
            }
        }
        (None, None, None) => {
            r.problem(
                "graph.client_secret",
                "is required (or graph.certificate_file with graph.private_key_file)".into(),
            );
            None
        }
        _ => {
            r.problem(
                "graph.client_secret",
                "give either a client secret or a certificate with its private key, not both or half".into(),
            );
            None
        }
    };
    for (key, url) in [
        ("graph.notification_url", given[3].as_ref()),
        ("graph.lifecycle_url", lifecycle_url.as_ref()),
        ("graph.base_url", base_url.as_ref()),
        ("graph.login_url", login_url.as_ref()),
    ] {
        if let Some(url) = url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                r.problem(key, format!("`{url}` is not an http(s) URL"));
            }
        }
    }
    let mut values = given.into_iter();
    let (tenant, client, mailboxes, notification_url) = (
        values.next()??,
        values.next()??,
        values.next()??,
        values.next()??,
    );
    let credential = credential?;
    let mailboxes: Vec<String> = mailboxes
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if mailboxes.is_empty() {
        r.problem("graph.mailboxes", "names no mailbox".into());
        return None;
    }
    let (minutes, renew) = (subscription_minutes?, renew_before?);
    if renew >= minutes {
        r.problem(
            "graph.renew_before_minutes",
            format!("{renew} is not shorter than graph.subscription_minutes ({minutes})"),
        );
        return None;
    }
    let mut settings =
        mailroom_graph::GraphSettings::new(tenant, client, credential, mailboxes, notification_url);
    if let Some(url) = lifecycle_url {
        settings.lifecycle_url = url;
    }
    settings.base_url = base_url?;
    settings.login_url = login_url?;
    settings.subscription_lifetime = Duration::from_secs(minutes * 60);
    settings.renew_before = Duration::from_secs(renew * 60);
    settings.lease_ttl = Duration::from_secs(lease?);
    settings.resync_window = Duration::from_secs(resync? * 3600);
    settings.fetchers = fetchers? as usize;
    Some(Some(settings))
}

/// `[imap]`: `Some(None)` without accounts. A bad URL is reported by its
/// position, never by its text (it holds a password).
fn resolve_imap(r: &mut Resolver<'_>) -> Option<Option<mailroom_imap::ImapSettings>> {
    let poll = r.ranged("imap.poll_seconds", 1, 86_400);
    let idle = r.ranged("imap.idle_minutes", 1, 28);
    let ca_file = r.string("imap.ca_file").map(PathBuf::from);
    let raw = r.list("imap.accounts");
    if raw.is_empty() {
        return Some(None);
    }
    let mut accounts = Vec::new();
    for (i, url) in raw.iter().enumerate() {
        match mailroom_imap::Account::parse(url) {
            Ok(a) => accounts.push(a),
            Err(e) => r.problem("imap.accounts", format!("account {}: {e}", i + 1)),
        }
    }
    if accounts.len() != raw.len() {
        return None;
    }
    Some(Some(mailroom_imap::ImapSettings {
        accounts,
        poll_interval: Duration::from_secs(poll?),
        idle_timeout: Duration::from_secs(idle? * 60),
        ca_file,
    }))
}

/// `[submission]`: `Some(None)` without endpoints.
fn resolve_submission(r: &mut Resolver<'_>) -> Option<Option<mailroom_submit::SubmitSettings>> {
    let endpoints = r.list("submission.endpoints");
    let secret = r.string("submission.secret");
    let max_attempts = r.ranged("submission.max_attempts", 1, 100);
    let base = r.ranged("submission.backoff_base_ms", 1, 86_400_000);
    let max = r.ranged("submission.backoff_max_ms", 1, 604_800_000);
    let timeout = r.ranged("submission.timeout_seconds", 1, 600);
    let concurrency = r.ranged("submission.concurrency", 1, 256);
    if endpoints.is_empty() {
        return Some(None);
    }
    for url in &endpoints {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            r.problem(
                "submission.endpoints",
                format!("`{url}` is not an http(s) URL"),
            );
        }
    }
    let Some(secret) = secret else {
        r.problem(
            "submission.secret",
            "is required with submission.endpoints (it signs every delivery)".into(),
        );
        return None;
    };
    let base = base?;
    Some(Some(mailroom_submit::SubmitSettings {
        endpoints,
        secret: Secret::new(secret),
        retry: RetryPolicy {
            max_attempts: max_attempts? as u32,
            base_delay: Duration::from_millis(base),
            max_delay: Duration::from_millis(max?.max(base)),
        },
        timeout: Duration::from_secs(timeout?),
        concurrency: concurrency? as usize,
    }))
}

fn resolve_security(r: &mut Resolver<'_>) -> Option<SecurityConfig> {
    let switch = |r: &mut Resolver<'_>, key: &str| {
        r.string(key).and_then(|v| match v.as_str() {
            "auto" => Some(Switch::Auto),
            "true" => Some(Switch::On),
            "false" => Some(Switch::Off),
            other => {
                r.problem(key, format!("`{other}` is not auto, true or false"));
                None
            }
        })
    };
    let mut trusted_proxies = Vec::new();
    for item in r.list("http.trusted_proxies") {
        let parsed = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => r.problem(
                "http.trusted_proxies",
                format!("`{item}` is not an IP address or CIDR"),
            ),
        }
    }
    let cors_allowed_origins = r.list("http.cors_allowed_origins");
    for origin in &cors_allowed_origins {
        if !is_origin(origin) {
            r.problem(
                "http.cors_allowed_origins",
                format!("`{origin}` is not an origin such as https://app.example.com"),
            );
        }
    }
    let api_keys = configured_api_keys(r);
    let rate_limit_enabled = r.parse::<bool>("rate_limit.enabled", "true or false");
    let key = quota(r, "rate_limit.key_per_second", "rate_limit.key_burst");
    let ip = quota(r, "rate_limit.ip_per_second", "rate_limit.ip_burst");
    let on_redis_failure = r.string("rate_limit.redis_failure").and_then(|v| {
        v.parse::<RedisFailurePolicy>()
            .map_err(|e| r.problem("rate_limit.redis_failure", e))
            .ok()
    });
    let redis_timeout = r
        .ranged("rate_limit.redis_timeout_ms", 1, 10_000)
        .map(Duration::from_millis);
    let redis_prefix = r.string("rate_limit.redis_key_prefix");
    if redis_prefix.is_none() {
        r.problem("rate_limit.redis_key_prefix", "must not be empty".into());
    }
    let redis_url = r.string("redis_url");
    if let Some(url) = &redis_url {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            r.problem(
                "redis_url",
                "expected redis://HOST:PORT (or rediss://, unix://)".into(),
            );
        }
    }
    let data_keys = data_key_source(r);
    // Every value is read (and every problem recorded) before any is
    // required.
    let max_connections = r.ranged("http.max_connections", 1, 1_000_000);
    let max_connections_per_ip = r.ranged("http.max_connections_per_ip", 1, 1_000_000);
    let header_timeout = r.ranged("http.header_timeout_seconds", 1, 3600);
    let max_header_bytes = r.ranged("http.max_header_bytes", 8192, 1 << 20);
    let write_timeout = r.ranged("http.write_timeout_seconds", 1, 3600);
    let request_timeout = r.ranged("http.request_timeout_seconds", 1, 86_400);
    let auth_failure_cost = r.ranged("rate_limit.auth_failure_cost", 1, 10_000);
    let insecure_no_auth = r.parse::<bool>("auth.insecure_no_auth", "true or false");
    let open_ops_endpoints = switch(r, "auth.open_ops_endpoints");
    let bootstrap_admin_key = switch(r, "auth.bootstrap_admin_key");
    let rate_limit = match rate_limit_enabled? {
        true => Some(RateLimitSettings {
            key: key?,
            ip: ip?,
            on_redis_failure: on_redis_failure?,
            redis_timeout: redis_timeout?,
            redis_prefix: redis_prefix?,
        }),
        false => None,
    };
    Some(SecurityConfig {
        insecure_no_auth: insecure_no_auth?,
        api_keys,
        open_ops_endpoints: open_ops_endpoints?,
        bootstrap_admin_key: bootstrap_admin_key?,
        serve_limits: ServeLimits {
            max_connections: max_connections? as usize,
            max_connections_per_ip: max_connections_per_ip? as usize,
            header_timeout: Duration::from_secs(header_timeout?),
            max_header_bytes: max_header_bytes? as usize,
            max_headers: 100,
            write_timeout: Duration::from_secs(write_timeout?),
            trusted_proxies: trusted_proxies.clone(),
        },
        trusted_proxies,
        cors_allowed_origins,
        request_timeout: Duration::from_secs(request_timeout?),
        rate_limit,
        auth_failure_cost: auth_failure_cost? as u32,
        redis_url: redis_url.map(Secret::new),
        data_keys: data_keys?,
    })
}

fn quota(r: &mut Resolver<'_>, rate_key: &str, burst_key: &str) -> Option<Quota> {
    let per_second = r.ranged(rate_key, 1, 1_000_000);
    let burst = r.ranged(burst_key, 1, 10_000_000);
    Some(Quota {
        per_second: per_second? as u32,
        burst: burst? as u32,
    })
}

/// `MAILROOM_API_KEYS`: `KEY` or `SCOPES:KEY` entries, comma-separated.
/// Problems name the entry by position, never by value.
fn configured_api_keys(r: &mut Resolver<'_>) -> Vec<(ApiKeySecret, Scopes)> {
    let Some(raw) = r.string("auth.api_keys") else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (i, entry) in raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let (scopes, secret) = match entry.split_once(':') {
            Some((scopes, secret)) => match scopes.parse::<Scopes>() {
                Ok(s) => (s, secret),
                Err(e) => {
                    r.problem("auth.api_keys", format!("entry {}: {e}", i + 1));
                    continue;
                }
            },
            None => (Scopes::admin(), entry),
        };
        match ApiKeySecret::configured(secret) {
            Ok(key) => keys.push((key, scopes)),
            Err(e) => r.problem("auth.api_keys", format!("entry {}: {e}", i + 1)),
        }
    }
    keys
}

fn data_key_source(r: &mut Resolver<'_>) -> Option<DataKeySource> {
    let inline = r.string("encryption.data_key");
    let previous = r.string("encryption.previous_keys");
    let file = r.string("encryption.key_file");
    let check = |r: &mut Resolver<'_>, key: &str, material: &str| {
        if let Err(e) = DataKey::parse(material) {
            r.problem(key, e.to_string());
        }
    };
    match (inline, file) {
        (Some(_), Some(_)) => {
            r.problem(
                "encryption.key_file",
                "set either encryption.data_key or encryption.key_file, not both".into(),
            );
            None
        }
        (Some(current), None) => {
            check(r, "encryption.data_key", &current);
            let previous: Vec<Secret<String>> = previous
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Secret::new(k.to_string()))
                .collect();
            for old in &previous {
                check(r, "encryption.previous_keys", old.expose());
            }
            Some(DataKeySource::Inline {
                current: Secret::new(current),
                previous,
            })
        }
        (None, Some(path)) => {
            if previous.is_some() {
                r.problem(
                    "encryption.previous_keys",
                    "with a key file, list earlier keys in the file (the last line is current)"
                        .into(),
                );
            }
            Some(DataKeySource::File(PathBuf::from(path)))
        }
        (None, None) => {
            if previous.is_some() {
                r.problem(
                    "encryption.previous_keys",
                    "earlier keys without a current encryption.data_key".into(),
                );
            }
            Some(DataKeySource::None)
        }
    }
}

/// A filter is a comma-separated list of `level` or `target=level`
/// directives (`info`, `mailroom=debug,sqlx=warn`).
fn tracing_filter_invalid(filter: &str) -> bool {
    const LEVELS: [&str; 7] = ["error", "warn", "warning", "info", "debug", "trace", "off"];
    filter.trim().is_empty()
        || filter.split(',').any(|directive| {
            let level = directive
                .rsplit('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            !LEVELS.contains(&level.as_str())
        })
}

/// The seed manuals write `INFO`, `WARNING`: the subscriber wants `info`, `warn`.
fn normalise_filter(filter: &str) -> String {
    filter
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase().replace("warning", "warn"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `queue.lease_seconds` -> `MAILROOM_QUEUE_LEASE_SECONDS`.
pub fn env_name(key: &str) -> String {
    format!("MAILROOM_{}", key.to_ascii_uppercase().replace('.', "_"))
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.into(), s.clone())),
        other => out.push((prefix.into(), other.to_string())),
    }
}

struct Resolver<'a> {
    layers: &'a Layers,
    problems: Vec<Problem>,
}

impl Resolver<'_> {
    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.into(),
            message,
        });
    }

    /// A comma-separated list; blank items dropped.
    fn list(&mut self, key: &str) -> Vec<String> {
        self.string(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn string(&mut self, key: &str) -> Option<String> {
        self.layers
            .get(key)
            .map(|(v, _)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &str, expected: &str) -> Option<T> {
        let (raw, origin) = self.layers.get(key)?.clone();
        match raw.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(key, format!("`{raw}` (from {origin}) is not {expected}"));
                None
            }
        }
    }

    fn ranged(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let n = self.parse::<u64>(key, &format!("a whole number from {min} to {max}"))?;
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            let origin = self
                .layers
                .get(key)
                .map(|(_, o)| o.to_string())
                .unwrap_or_default();
            self.problem(key, format!("{n} (from {origin}) is outside {min}..={max}"));
            None
        }
    }

    fn required<T>(&mut self, value: Option<T>, key: &str) -> Option<T> {
        if value.is_none() && self.layers.get(key).is_none() {
            self.problem(key, "is required".into());
        }
        value
    }
}

/// Partially typed configuration; `complete` turns it into [`Config`].
struct PartialConfig {
    bind: Option<SocketAddr>,
    database_url: Option<String>,
    read_database_url: Option<String>,
    db_max_connections: Option<u32>,
    workers: Option<usize>,
    max_message_bytes: Option<usize>,
    max_inflight_bytes: Option<usize>,
    log_level: String,
    log_format: LogFormat,
    shutdown_grace: Option<Duration>,
    lease: Option<Duration>,
    retry: Option<RetryPolicy>,
    batch_size: Option<u32>,
    poll_interval: Option<Duration>,
    fault_injection: Option<bool>,
    security: Option<SecurityConfig>,
    score: Option<ScoreSettings>,
    mcp: Option<McpConfig>,
    graph: Option<Option<mailroom_graph::GraphSettings>>,
    submission: Option<Option<mailroom_submit::SubmitSettings>>,
    imap: Option<Option<mailroom_imap::ImapSettings>>,
}

/// Scoring: the rules and the live model file.
#[derive(Debug, Clone)]
pub struct ScoreSettings {
    pub rules: mailroom_score::ScoreConfig,
    pub model_path: PathBuf,
    /// Profile the pipeline scores with.
    pub profile: String,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    pub read_database_url: Option<String>,
    pub db_max_connections: u32,
    pub workers: usize,
    pub max_message_bytes: usize,
    /// Memory budget of all messages being received at once.
    pub max_inflight_bytes: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub batch_size: u32,
    pub poll_interval: Duration,
    pub fault_injection: bool,
    pub security: SecurityConfig,
    pub score: ScoreSettings,
    pub mcp: McpConfig,
    /// The Microsoft 365 source, when configured.
    pub graph: Option<mailroom_graph::GraphSettings>,
    /// Downstream submission, when endpoints are configured.
    pub submission: Option<mailroom_submit::SubmitSettings>,
    /// IMAP mailboxes watched, when configured.
    pub imap: Option<mailroom_imap::ImapSettings>,
    /// Every setting, secrets masked: compared between starts to audit
    /// configuration changes.
    pub fingerprint: BTreeMap<String, String>,
}

impl PartialConfig {
    fn complete(self) -> Option<Config> {
        Some(Config {
            bind: self.bind?,
            database_url: self.database_url?,
            read_database_url: self.read_database_url,
            db_max_connections: self.db_max_connections?,
            workers: self.workers?,
            max_message_bytes: self.max_message_bytes?,
            max_inflight_bytes: self.max_inflight_bytes?,
            log_level: self.log_level,
            log_format: self.log_format,
            shutdown_grace: self.shutdown_grace?,
            lease: self.lease?,
            retry: self.retry?,
            batch_size: self.batch_size?,
            poll_interval: self.poll_interval?,
            fault_injection: self.fault_injection?,
            security: self.security?,
            score: self.score?,
            mcp: self.mcp?,
            graph: self.graph?,
            submission: self.submission?,
            imap: self.imap?,
            fingerprint: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn mailbox_sources_resolve_and_name_what_is_missing() {
        let none = Layers::load(None, &env_of(&[])).resolve().expect("valid");
        assert!(none.graph.is_none() && none.imap.is_none() && none.submission.is_none());

        let half = Layers::load(None, &env_of(&[("MAILROOM_GRAPH_TENANT_ID", "t")]))
            .resolve()
            .expect_err("half a Graph configuration");
        for key in [
            "graph.client_id",
            "graph.client_secret",
            "graph.mailboxes",
            "graph.notification_url",
        ] {
            assert!(
                half.iter().any(|p| p.key == key),
                "{key} not reported: {half:?}"
            );
        }

        let env = env_of(&[
            ("MAILROOM_GRAPH_TENANT_ID", "t"),
            ("MAILROOM_GRAPH_CLIENT_ID", "c"),
            ("MAILROOM_GRAPH_CLIENT_SECRET", "graph-secret-value"),
            ("MAILROOM_GRAPH_MAILBOXES", "a@x.test, b@x.test"),
            (
                "MAILROOM_GRAPH_NOTIFICATION_URL",
                "https://mail.x.test/webhook",
            ),
            (
                "MAILROOM_IMAP_ACCOUNTS",
                "imaps://u:imap-secret-value@imap.x.test/INBOX",
            ),
            ("MAILROOM_SUBMISSION_ENDPOINTS", "https://sink.x.test/hook"),
            ("MAILROOM_SUBMISSION_SECRET", "hmac-secret-value"),
        ]);
        let c = Layers::load(None, &env).resolve().expect("valid");
        let graph = c.graph.expect("graph");
        assert_eq!(graph.mailboxes, ["a@x.test", "b@x.test"]);
        assert_eq!(graph.lifecycle_url, "https://mail.x.test/webhook");
        assert_eq!(graph.base_url, "https://graph.microsoft.com/v1.0");
        assert_eq!(c.imap.expect("imap").accounts[0].host, "imap.x.test");
        assert_eq!(c.submission.expect("submission").endpoints.len(), 1);
        let printed = format!("{:?}", c.fingerprint);
        for secret in [
            "graph-secret-value",
            "imap-secret-value",
            "hmac-secret-value",
        ] {
            assert!(!printed.contains(secret), "{secret} in the fingerprint");
        }

        let bad = Layers::load(
            None,
            &env_of(&[
                ("MAILROOM_IMAP_ACCOUNTS", "pop3://u:leaky-password@h"),
                ("MAILROOM_SUBMISSION_ENDPOINTS", "https://sink.x.test/hook"),
            ]),
        )
        .resolve()
        .expect_err("bad");
        assert!(
            bad.iter()
                .any(|p| p.key == "imap.accounts" && !p.message.contains("leaky-password")),
            "{bad:?}"
        );
        assert!(bad.iter().any(|p| p.key == "submission.secret"), "{bad:?}");
    }

    #[test]
    fn defaults_resolve() {
        let c = Layers::load(None, &env_of(&[]))
            .resolve()
            .expect("defaults are valid");
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://data/mailroom.db");
        assert_eq!(c.max_message_bytes, 25 * 1024 * 1024);
        assert!(c.workers >= 1);
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mailroom.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\nworkers = 3\n[queue]\nmax_attempts = 7\n",
        )
        .expect("write");
        let mut layers = Layers::load(
            Some(&path),
            &env_of(&[("WORKERS", "4"), ("MAILROOM_BIND", "127.0.0.1:9001")]),
        );
        let c = layers.resolve().expect("valid");
        assert_eq!(c.bind.port(), 9001);
        assert_eq!(c.workers, 4);
        assert_eq!(c.retry.max_attempts, 7);
        layers.set_flag("workers", "--workers", Some("5".into()));
        assert_eq!(layers.resolve().expect("valid").workers, 5);
    }

    #[test]
    fn seed_manual_log_levels_are_understood() {
        let c = Layers::load(None, &env_of(&[("LOG_LEVEL", "WARNING")]))
            .resolve()
            .expect("valid");
        assert_eq!(c.log_level, "warn");
        let c = Layers::load(None, &env_of(&[("LOG_LEVEL", "DEBUG")]))
            .resolve()
            .expect("valid");
        assert_eq!(c.log_level, "debug");
        let problems = Layers::load(None, &env_of(&[("LOG_LEVEL", "verbose")]))
            .resolve()
            .expect_err("invalid");
        assert_eq!(problems[0].key, "log_level");
    }

    #[test]
    fn mailroom_name_beats_alias() {
        let c = Layers::load(
            None,
            &env_of(&[
                ("DATABASE_URL", "sqlite://a.db"),
                ("MAILROOM_DATABASE_URL", "sqlite://b.db"),
            ]),
        )
        .resolve()
        .expect("valid");
        assert_eq!(c.database_url, "sqlite://b.db");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "bind = \"nowhere\"\nworkers = 0\nbogus = 1\nlog_format = \"xml\"\n[queue]\nlease_seconds = \"soon\"\n").expect("write");
        let problems = Layers::load(Some(&path), &env_of(&[("DATABASE_URL", "mysql://x")]))
            .resolve()
            .expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "bind",
            "workers",
            "bogus",
            "log_format",
            "queue.lease_seconds",
            "database_url",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }
}
