//! Layered configuration: defaults < `mailroom.toml` < environment < flags.
//!
//! Every setting has one dotted key (`queue.lease_seconds`); its environment
//! variable is `MAILROOM_` + the key upper-cased with `.` as `_`
//! (`MAILROOM_QUEUE_LEASE_SECONDS`), plus the aliases the seed manuals use
//! (`DATABASE_URL`, `LOG_LEVEL`, `WORKERS`). Resolution collects every
//! problem, each naming its key and where the value came from, so
//! `mailroom config validate` can print them all at once.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, time::Duration};

use mailroom_domain::RetryPolicy;
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
        name: "fault_injection",
        aliases: &[],
        default: Some("false"),
        help: "testing only: honour X-Mailroom-Fault headers",
    },
];

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
}

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
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(Problem {
                    key: "config".into(),
                    message: format!("{shown} is not valid TOML: {e}"),
                });
                return;
            }
        };
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
            config.complete().ok_or_else(|| {
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
