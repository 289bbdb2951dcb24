//! The audit log: append-only (the database refuses UPDATE and DELETE on
//! it), filtered and paged newest first.

use sqlx::{any::AnyRow, Any, Row, Transaction};

use crate::{jobs::value_rows, Store, StoreError};

/// One event to record. Never put a secret or message content in it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub at_ms: i64,
    /// `key.create`, `auth.failure`, `message.delete`, ...
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Who: a key's public prefix, `cli:<user>`, `system`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// What it was done to: a key id, a message id.
    pub target: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// A recorded event and its place in the log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub event: AuditEvent,
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact action, or a prefix ending in `*` (`key.*`).
    pub action: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Entries strictly older than this id.
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next: Option<i64>,
}

const ROWS_PER_INSERT: usize = 200;

impl Store {
    /// Appends events in one transaction.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let _turn = self.gate.urgent().await;
        let mut tx = self.write.begin().await?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Writes `events` inside `tx`: an action and its audit record commit
/// together or not at all.
pub(crate) async fn insert_audit(
    tx: &mut Transaction<'static, Any>,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_log (at, action, outcome, actor, ip, target, details) VALUES {}",
            value_rows(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for e in chunk {
            query = query
                .bind(e.at_ms)
                .bind(e.action.as_str())
                .bind(e.outcome.as_str())
                .bind(e.actor.as_deref())
                .bind(e.ip.as_deref())
                .bind(e.target.as_deref())
                .bind(e.details.as_ref().map(|d| d.to_string()));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// One page of the log, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let mut sql =
            "SELECT id, at, action, outcome, actor, ip, target, details FROM audit_log WHERE 1 = 1"
                .to_string();
        let mut n = 0;
        let mut next_param = || {
            n += 1;
            format!("${n}")
        };
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(action) = &filter.action {
            let p = next_param();
            match action.strip_suffix('*') {
                Some(prefix) => {
                    sql.push_str(&format!(" AND action LIKE {p} ESCAPE '\\'"));
                    binds.push(Bind::Text(format!("{}%", escape_like(prefix))));
                }
                None => {
                    sql.push_str(&format!(" AND action = {p}"));
                    binds.push(Bind::Text(action.clone()));
                }
            }
        }
        for (column, value) in [("actor", &filter.actor), ("outcome", &filter.outcome)] {
            if let Some(v) = value {
                let p = next_param();
                sql.push_str(&format!(" AND {column} = {p}"));
                binds.push(Bind::Text(v.clone()));
            }
        }
        for (clause, value) in [
            ("at >=", filter.since_ms),
            ("at <", filter.until_ms),
            ("id <", filter.before),
        ] {
            if let Some(v) = value {
                let p = next_param();
                sql.push_str(&format!(" AND {clause} {p}"));
                binds.push(Bind::Int(v));
            }
        }
        let limit = filter.limit.clamp(1, 500);
        let p = next_param();
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {p}"));
        binds.push(Bind::Int(i64::from(limit) + 1));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.read).await?;
        let mut items = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage { items, next })
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

fn escape_like(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn entry_from_row(r: &AnyRow) -> Result<AuditEntry, StoreError> {
    let details: Option<String> = r.try_get("details")?;
    Ok(AuditEntry {
        id: r.try_get("id")?,
        event: AuditEvent {
            at_ms: r.try_get("at")?,
            action: r.try_get("action")?,
            outcome: r.try_get("outcome")?,
            actor: r.try_get("actor")?,
            ip: r.try_get("ip")?,
            target: r.try_get("target")?,
            details: details.and_then(|d| serde_json::from_str(&d).ok()),
        },
    })
}
