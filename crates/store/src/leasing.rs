//! The shape every leased queue table shares (graph_notifications,
//! submissions): rows `queued` with a `run_at`, taken under a token and an
//! expiry, taken over when the lease expires with attempts left.

use sqlx::{any::AnyArguments, query::Query, Any, AnyPool, Row};

use crate::{Backend, StoreError};

/// The one statement that leases up to `$4` runnable rows of `table`
/// (`$1` token, `$2` lease end, `$3` now, `$5` most attempts; `filter`
/// adds conditions with binds from `$6`) and returns `returning`. On
/// PostgreSQL concurrent leasers skip each other's rows; SQLite's single
/// writer makes the statement atomic by itself.
pub(crate) fn lease_sql(backend: Backend, table: &str, filter: &str, returning: &str) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!(
        "UPDATE {table} SET state = 'leased', lease_token = $1, lease_until = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM {table} WHERE ((state = 'queued' AND run_at <= $3) \
         OR (state = 'leased' AND lease_until <= $3 AND attempts < $5)){filter} \
         ORDER BY run_at, id LIMIT $4{lock}) RETURNING {returning}"
    )
}

/// Binds `$1`..`$5` of [`lease_sql`].
pub(crate) fn bind_lease<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    token: &'q str,
    limit: u32,
    now_ms: i64,
    lease_ms: i64,
    max_attempts: u32,
) -> Query<'q, Any, AnyArguments<'q>> {
    query
        .bind(token)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(i64::from(max_attempts))
}

/// Rows of `table` per `state`.
pub(crate) async fn counts_by_state(
    pool: &AnyPool,
    table: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("state")?, r.try_get::<i64, _>("n")? as u64)))
        .collect()
}
