use std::{path::Path, str::FromStr, sync::Arc, time::Duration, time::Instant};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
    AnyPool, ConnectOptions, Executor,
};

use crate::{gate::WriteGate, sealing::Sealing, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which SQL engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::InvalidUrl {
                url: redact(url),
                reason: "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
            })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// Optional read replica (PostgreSQL only); reads go there when set.
    pub read_url: Option<String>,
    /// Connections in the read pool (and the write pool on PostgreSQL).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_url: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Handle to the database: cheap to clone, shared by every task.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    /// Ingest before background writes at SQLite's single writer.
    pub(crate) gate: Arc<WriteGate>,
    /// `read` is its own pool (SQLite readers, a PostgreSQL replica) rather
    /// than a clone of `write`.
    separate_read: bool,
    /// The data keys sealing mail at rest (none: stored in the clear).
    pub(crate) sealing: Arc<Sealing>,
    /// Downstream endpoints each processed message is queued for, in the
    /// transaction recording its result (the outbox).
    pub(crate) outbox: Arc<Vec<String>>,
}

/// Result of a health probe of the database.
#[derive(Debug, Clone)]
pub struct DatabaseHealth {
    pub reachable: bool,
    pub latency: Duration,
    pub migrations_applied: bool,
    pub error: Option<String>,
}

impl Store {
    /// Opens the pools (creating the SQLite file and its folder if missing).
    /// Does not migrate: call [`Store::migrate`].
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&options.url)?;
        match backend {
            Backend::Sqlite => {
                let url = sqlite_url(&options.url)?;
                // One writer (SQLite admits one at a time); readers are
                // in-process CPU work, so a handful is all that helps.
                let write = sqlite_pool(&url, 1, Role::Writer, options.acquire_timeout).await?;
                let readers = options.max_connections.clamp(2, 8);
                let read =
                    sqlite_pool(&url, readers, Role::Reader, options.acquire_timeout).await?;
                Ok(Self {
                    backend,
                    write,
                    read,
                    gate: Arc::new(WriteGate::new(true)),
                    separate_read: true,
                    sealing: Arc::default(),
                    outbox: Arc::default(),
                })
            }
            Backend::Postgres => {
                let write = pg_pool(
                    &options.url,
                    options.max_connections,
                    options.acquire_timeout,
                )
                .await?;
                let read = match &options.read_url {
                    Some(url) => {
                        pg_pool(url, options.max_connections, options.acquire_timeout).await?
                    }
                    None => write.clone(),
                };
                Ok(Self {
                    backend,
                    write,
                    read,
                    gate: Arc::new(WriteGate::new(false)),
                    separate_read: options.read_url.is_some(),
                    sealing: Arc::default(),
                    outbox: Arc::default(),
                })
            }
        }
    }

    /// Where reads that must see this process's latest commits go: the
    /// PostgreSQL primary (never a lagging replica), or SQLite's readers
    /// (same file, consistent as soon as the writer commits).
    pub(crate) fn primary(&self) -> &AnyPool {
        match self.backend {
            Backend::Sqlite => &self.read,
            Backend::Postgres => &self.write,
        }
    }

    /// Queues every processed message for these endpoints (URLs) from
    /// now on.
    pub fn with_outbox(mut self, endpoints: Vec<String>) -> Self {
        self.outbox = Arc::new(endpoints);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.write).await?;
        Ok(())
    }

    /// Probes the database: a round trip plus a check that every migration
    /// this binary knows has been applied.
    pub async fn health(&self) -> DatabaseHealth {
        let started = Instant::now();
        let applied: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.read)
                .await;
        let latency = started.elapsed();
        match applied {
            Ok(count) => DatabaseHealth {
                reachable: true,
                latency,
                migrations_applied: count as usize >= self.backend.migrator().iter().count(),
                error: None,
            },
            Err(sqlx::Error::Database(e)) => DatabaseHealth {
                reachable: true,
                latency,
                migrations_applied: false,
                error: Some(e.message().to_string()),
            },
            Err(e) => DatabaseHealth {
                reachable: false,
                latency,
                migrations_applied: false,
                error: Some(e.to_string()),
            },
        }
    }

    /// Connections currently checked out of the pools (the
    /// `database_connections_active` gauge).
    pub fn connections_active(&self) -> u32 {
        let busy = |p: &AnyPool| p.size().saturating_sub(p.num_idle() as u32);
        busy(&self.write)
            + if self.separate_read {
                busy(&self.read)
            } else {
                0
            }
    }

    /// Copies committed WAL pages into the SQLite database file without
    /// blocking the writer (PASSIVE), and truncates the WAL when it can.
    /// Call about once a second; a no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            let (busy, wal_pages, _moved): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&self.read)
                    .await?;
            // A large WAL that was fully copied is reset so it does not keep
            // the disk space of the last burst.
            if busy == 0 && wal_pages > 16_384 {
                let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_all(&self.read)
                    .await;
            }
        }
        Ok(())
    }

    /// Copies the whole WAL into the database file and empties it, so
    /// content that was overwritten or deleted is gone from disk too. A
    /// no-op on PostgreSQL.
    pub async fn truncate_wal(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_all(&self.write)
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Normalises a SQLite URL: `mode=rwc` so the file is created, and the parent
/// folder created on disk.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(StoreError::InvalidUrl {
            url: url.into(),
            reason: "no file path (use sqlite://data/mailroom.db)".into(),
        });
    }
    if path != ":memory:" {
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Which of SQLite's two pools a connection belongs to.
#[derive(Clone, Copy)]
enum Role {
    Writer,
    Reader,
}

async fn sqlite_pool(
    url: &str,
    max: u32,
    role: Role,
    acquire_timeout: Duration,
) -> Result<AnyPool, StoreError> {
    let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL lets readers proceed while the writer commits; NORMAL
                // sync in WAL mode keeps every committed transaction across a
                // process crash (the WAL is written before COMMIT returns) and
                // fsyncs at checkpoints. busy_timeout covers the rare
                // checkpoint contention between the two pools. secure_delete
                // zeroes freed content, so DELETE really erases a message
                // from the database file (extra I/O only on freed pages).
                // The writer never checkpoints on commit (a reader does it in
                // the background, off the commit path: `checkpoint()`); it
                // gets the larger page cache.
                let role_pragmas = match role {
                    Role::Writer => "PRAGMA cache_size = -16000; PRAGMA wal_autocheckpoint = 0;",
                    Role::Reader => "PRAGMA cache_size = -4000;",
                };
                let pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                     PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY; PRAGMA secure_delete = ON; {role_pragmas}"
                );
                conn.execute(pragmas.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

async fn pg_pool(url: &str, max: u32, acquire_timeout: Duration) -> Result<AnyPool, StoreError> {
    let options = AnyConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?
        .disable_statement_logging();
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await?)
}

/// A URL with its password replaced (in the user part and in a
/// `password=` query parameter), safe to print.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &base[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => {
                    format!("{}{}:***{}", &base[..scheme_end + 3], user, &base[at..])
                }
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=hunter2"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("mailroom-url-{}", std::process::id()));
        let url = format!("sqlite://{}/x/m.db", dir.display());
        let out = sqlite_url(&url).expect("url");
        assert!(out.ends_with("m.db?mode=rwc"), "{out}");
        assert!(dir.join("x").is_dir());
        let _ = std::fs::remove_dir_all(dir);
    }
}
