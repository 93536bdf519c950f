//! The backstop behind PostgreSQL's `statement_timeout`: a component may
//! turn its own timeout off (`SET statement_timeout = 0` is any session's
//! right) and then run a statement that never ends. Its call is cut off at
//! the component's timeout, but the server would go on running the
//! statement and the pooled connection would wait for it for good. So the
//! host, a member of the component's role, cancels every statement of that
//! role that has run past the limit.

use std::time::Duration;

use super::database::Database;
use crate::platform::sql::Value;

/// Starts cancelling `app_role`'s statements on `host` that run longer than
/// `limit`, looking a few times per limit, until the process ends.
pub fn start(host: Database, app_role: String, limit: Duration) {
    let every = (limit / 4).max(Duration::from_secs(1));
    let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let cancelled = host
                .query(
                    "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) \
                     FROM pg_stat_activity \
                     WHERE usename = $1 AND datname = current_database() AND state = 'active' \
                       AND query_start < now() - $2::bigint * interval '1 millisecond'",
                    vec![Value::Text(app_role.clone()), Value::Integer(limit_ms)],
                )
                .await;
            match cancelled.map(|rows| rows.rows.first().and_then(|row| row.first()).cloned()) {
                Ok(Some(Value::Integer(count))) if count > 0 => {
                    tracing::warn!(role = %app_role, count, "cancelled statements that ran past the component's timeout");
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(role = %app_role, "statement watchdog: {error}"),
            }
        }
    });
}
