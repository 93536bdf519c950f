//! The sandbox every guest-facing SQLite connection runs under (managed
//! `sql` databases and `spin:sqlite`): a guest reaches the tables of its own
//! file and nothing else.
//!
//! SQLite asks an authorizer about every table, pragma and function while it
//! prepares a statement; ours refuses what would reach another file (ATTACH,
//! VACUUM INTO), load code (extensions), leave state on a pooled connection
//! for the next caller (temp objects, settings pragmas) or touch the host's
//! own tables (`spindle_*`, `_sqlx_migrations`). Defensive mode and an
//! attach limit of 0 back it up. The host's own statements on a guest's
//! connection (the outbox insert inside the guest's transaction) run inside
//! a [`HostStatement`] and are never cached, so a guest sending the same text
//! gets it prepared, and refused, afresh.
//!
//! Every guest statement also runs against a clock: SQLite's progress
//! handler interrupts one that has run longer than the component may (a
//! recursive CTE that never ends would otherwise hold its pooled connection,
//! and the file's write lock, for good).

use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;
use sqlx::SqliteConnection;

/// What a refusal means, added to SQLite's own terse message.
pub const REFUSED: &str = "a component reaches only its own tables \
     (no ATTACH, VACUUM, extensions, temp objects, settings pragmas or spindle_* tables)";

/// Connections (by their `sqlite3*`) running a host statement right now.
static TRUSTED: LazyLock<Mutex<HashSet<usize>>> = LazyLock::new(Mutex::default);

fn trusted() -> MutexGuard<'static, HashSet<usize>> {
    TRUSTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What SQLite says when the statement clock stopped a statement.
pub const INTERRUPTED: &str = "interrupted";

/// What an interruption means, for the guest's error.
pub const TIMED_OUT: &str =
    "the statement ran longer than the component's timeout and was cancelled";

/// Puts `connection` under the sandbox, with statements cut off after
/// `statement_limit`; for a pool's `after_connect`.
pub async fn install(
    connection: &mut SqliteConnection,
    statement_limit: Duration,
) -> Result<(), sqlx::Error> {
    let mut handle = connection.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the live handle this connection holds locked; the
    // callback's user data is the handle's address, which outlives every
    // statement prepared on it.
    let code = unsafe {
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_DEFENSIVE,
            1,
            std::ptr::null_mut::<c_int>(),
        );
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
            0,
            std::ptr::null_mut::<c_int>(),
        );
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
            0,
            std::ptr::null_mut::<c_int>(),
        );
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_set_authorizer(db, Some(authorize), db.cast())
    };
    if code != ffi::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "installing the SQLite authorizer failed with code {code}"
        )));
    }
    // SAFETY: as above; the clock is handed to SQLite, which frees it with
    // the connection.
    unsafe { StatementClock::install(db, statement_limit) }
}

/// When the statement running on one connection began, and how long it may
/// run. Read by SQLite's callbacks on the connection's own thread; atomics
/// keep it `Sync` all the same.
struct StatementClock {
    limit_ns: u64,
    started_ns: AtomicU64,
}

/// VM steps between two looks at the clock: often enough to stop within
/// milliseconds, rarely enough to cost nothing measurable.
const STEPS_BETWEEN_CHECKS: c_int = 10_000;

/// The name the clock is kept under in the connection's client data.
const CLOCK_KEY: &CStr = c"spindle.statement_clock";

/// Nanoseconds on a process-wide monotonic clock.
fn now_ns() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl StatementClock {
    /// Starts timing `db`'s statements.
    ///
    /// # Safety
    /// `db` must be a live connection handle that the caller holds.
    unsafe fn install(db: *mut ffi::sqlite3, limit: Duration) -> Result<(), sqlx::Error> {
        let clock = Box::into_raw(Box::new(Self {
            limit_ns: u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX),
            started_ns: AtomicU64::new(now_ns()),
        }));
        // SAFETY: `clock` lives until SQLite calls `free_clock` when the
        // connection closes (or at once, if registering fails).
        let code = unsafe {
            ffi::sqlite3_set_clientdata(db, CLOCK_KEY.as_ptr(), clock.cast(), Some(free_clock))
        };
        if code != ffi::SQLITE_OK {
            return Err(sqlx::Error::Protocol(format!(
                "installing the SQLite statement clock failed with code {code}"
            )));
        }
        // SAFETY: `clock` outlives both callbacks (freed with the connection).
        unsafe {
            ffi::sqlite3_trace_v2(
                db,
                ffi::SQLITE_TRACE_STMT as c_uint,
                Some(statement_started),
                clock.cast(),
            );
            ffi::sqlite3_progress_handler(
                db,
                STEPS_BETWEEN_CHECKS,
                Some(past_deadline),
                clock.cast(),
            );
        }
        Ok(())
    }
}

unsafe extern "C" fn free_clock(clock: *mut c_void) {
    // SAFETY: made by `Box::into_raw` in `StatementClock::install`; SQLite
    // calls this once.
    drop(unsafe { Box::from_raw(clock.cast::<StatementClock>()) });
}

/// Restarts the clock when a statement begins. Trigger programs report
/// themselves as `-- trigger` comments: they are part of the running
/// statement and do not restart it.
unsafe extern "C" fn statement_started(
    _event: c_uint,
    clock: *mut c_void,
    _statement: *mut c_void,
    sql: *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes the clock registered with this callback and the
    // statement's NUL-terminated text.
    let (clock, sql) = unsafe { (&*clock.cast::<StatementClock>(), sql.cast::<c_char>()) };
    let in_trigger = !sql.is_null() && unsafe { CStr::from_ptr(sql) }.to_bytes().starts_with(b"--");
    if !in_trigger {
        clock.started_ns.store(now_ns(), Ordering::Relaxed);
    }
    0
}

/// Non-zero (interrupt the statement) once it has run past the limit.
unsafe extern "C" fn past_deadline(clock: *mut c_void) -> c_int {
    // SAFETY: SQLite passes the clock registered with this callback.
    let clock = unsafe { &*clock.cast::<StatementClock>() };
    let running = now_ns().saturating_sub(clock.started_ns.load(Ordering::Relaxed));
    c_int::from(running > clock.limit_ns)
}

/// While alive, statements on its connection run as the host's, unchecked.
/// Dropping it (also when the call is cancelled) puts the sandbox back.
pub struct HostStatement {
    db: usize,
}

impl HostStatement {
    /// Marks `connection`'s next statements as the host's own.
    pub async fn begin(connection: &mut SqliteConnection) -> Result<Self, sqlx::Error> {
        let db = connection.lock_handle().await?.as_raw_handle().as_ptr() as usize;
        trusted().insert(db);
        Ok(Self { db })
    }
}

impl Drop for HostStatement {
    fn drop(&mut self) {
        trusted().remove(&self.db);
    }
}

/// Whether `table` is one the host keeps for itself in a component's file.
pub fn is_host_table(table: &str) -> bool {
    let lower = table.to_ascii_lowercase();
    lower.starts_with("spindle_") || lower == "_sqlx_migrations"
}

/// Pragmas that only read the schema of the guest's own tables.
const SCHEMA_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas a guest may read (never set): they report, they reveal no path.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "user_version",
    "schema_version",
    "data_version",
    "foreign_keys",
    "page_count",
    "page_size",
    "freelist_count",
    "table_list",
];

/// Virtual table modules that keep their data inside the database file.
const VIRTUAL_TABLE_MODULES: &[&str] = &["fts3", "fts4", "fts5", "rtree"];

/// What the authorizer decides for one action of a guest statement.
fn decide(action: c_int, first: Option<&str>, second: Option<&str>) -> bool {
    let host_table = |name: Option<&str>| name.is_some_and(is_host_table);
    match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => false,
        ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_DROP_TEMP_TABLE
        | ffi::SQLITE_DROP_TEMP_INDEX
        | ffi::SQLITE_DROP_TEMP_TRIGGER
        | ffi::SQLITE_DROP_TEMP_VIEW => false,
        ffi::SQLITE_PRAGMA => {
            let name = first.unwrap_or_default().to_ascii_lowercase();
            match second {
                None => {
                    SCHEMA_PRAGMAS.contains(&name.as_str())
                        || READ_ONLY_PRAGMAS.contains(&name.as_str())
                }
                Some(table) => SCHEMA_PRAGMAS.contains(&name.as_str()) && !is_host_table(table),
            }
        }
        ffi::SQLITE_FUNCTION => !second.is_some_and(|f| f.eq_ignore_ascii_case("load_extension")),
        ffi::SQLITE_CREATE_VTABLE => {
            !host_table(first)
                && second.is_some_and(|module| {
                    VIRTUAL_TABLE_MODULES.contains(&module.to_ascii_lowercase().as_str())
                })
        }
        // The table is the first argument of these.
        ffi::SQLITE_READ
        | ffi::SQLITE_INSERT
        | ffi::SQLITE_UPDATE
        | ffi::SQLITE_DELETE
        | ffi::SQLITE_CREATE_TABLE
        | ffi::SQLITE_DROP_TABLE
        | ffi::SQLITE_CREATE_VIEW
        | ffi::SQLITE_DROP_VIEW
        | ffi::SQLITE_ANALYZE
        | ffi::SQLITE_DROP_VTABLE => !host_table(first),
        // ... and the second of these (the first names the index, trigger
        // or schema).
        ffi::SQLITE_CREATE_INDEX
        | ffi::SQLITE_DROP_INDEX
        | ffi::SQLITE_CREATE_TRIGGER
        | ffi::SQLITE_DROP_TRIGGER
        | ffi::SQLITE_ALTER_TABLE => !host_table(second),
        // SELECT, transactions, savepoints, REINDEX, recursive CTEs.
        _ => true,
    }
}

unsafe extern "C" fn authorize(
    db: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    if trusted().contains(&(db as usize)) {
        return ffi::SQLITE_OK;
    }
    // SAFETY: SQLite passes NUL-terminated strings or null, valid for the call.
    let text = |pointer: *const c_char| {
        (!pointer.is_null())
            .then(|| unsafe { CStr::from_ptr(pointer) }.to_str().ok())
            .flatten()
    };
    if decide(action, text(first), text(second)) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// Whether a SQLite error message is the authorizer's refusal.
pub fn is_refusal(message: &str) -> bool {
    [
        "not authorized",
        "authorization denied",
        "prohibited",
        "too many attached databases",
    ]
    .iter()
    .any(|refusal| message.contains(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, Executor};

    async fn guarded() -> (tempfile::TempDir, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("own.db"))
            .create_if_missing(true);
        let mut connection = SqliteConnection::connect_with(&options).await.unwrap();
        connection
            .execute(
                "CREATE TABLE t (v TEXT); CREATE TABLE spindle_outbox (v TEXT); \
                 CREATE TABLE _sqlx_migrations (version INTEGER)",
            )
            .await
            .unwrap();
        install(&mut connection, Duration::from_millis(200))
            .await
            .unwrap();
        (dir, connection)
    }

    async fn refused(connection: &mut SqliteConnection, statement: &str) -> bool {
        match connection
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())))
            .await
        {
            Err(sqlx::Error::Database(error)) => {
                is_refusal(error.message()) || panic!("{statement}: {}", error.message())
            }
            other => panic!("`{statement}` was not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn own_tables_work() {
        let (_dir, mut connection) = guarded().await;
        connection
            .execute("INSERT INTO t VALUES ('a'); SELECT * FROM t; PRAGMA table_info(t)")
            .await
            .unwrap();
        connection
            .execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT * FROM n")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_statement_that_never_ends_is_interrupted_and_the_next_one_runs() {
        let (_dir, mut connection) = guarded().await;
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                       SELECT count(*) FROM n";
        let started = Instant::now();
        match connection.execute(endless).await {
            Err(sqlx::Error::Database(error)) => assert_eq!(error.message(), INTERRUPTED),
            other => panic!("the endless statement was not interrupted: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        connection.execute("SELECT count(*) FROM t").await.unwrap();
    }

    #[tokio::test]
    async fn other_files_extensions_and_settings_are_refused() {
        let (dir, mut connection) = guarded().await;
        let other = dir.path().join("other.db");
        let into = dir.path().join("copy.db");
        for statement in [
            format!("ATTACH DATABASE '{}' AS o", other.display()),
            format!("VACUUM INTO '{}'", into.display()),
            "VACUUM".to_string(),
            "SELECT load_extension('/tmp/x')".to_string(),
            "PRAGMA database_list".to_string(),
            "PRAGMA journal_mode = DELETE".to_string(),
            "PRAGMA synchronous = OFF".to_string(),
            "PRAGMA foreign_keys = OFF".to_string(),
            "CREATE TEMP TABLE leak (v)".to_string(),
        ] {
            assert!(refused(&mut connection, &statement).await, "{statement}");
        }
        assert!(!other.exists() && !into.exists());
    }

    #[tokio::test]
    async fn host_tables_are_refused_to_guests_and_open_to_host_statements() {
        let (_dir, mut connection) = guarded().await;
        for statement in [
            "SELECT * FROM spindle_outbox",
            "INSERT INTO spindle_outbox VALUES ('x')",
            "DELETE FROM spindle_outbox",
            "DROP TABLE spindle_outbox",
            "SELECT * FROM _sqlx_migrations",
        ] {
            assert!(refused(&mut connection, statement).await, "{statement}");
        }
        let host = HostStatement::begin(&mut connection).await.unwrap();
        connection
            .execute(sqlx::query("INSERT INTO spindle_outbox VALUES ('x')").persistent(false))
            .await
            .unwrap();
        drop(host);
        assert!(refused(&mut connection, "INSERT INTO spindle_outbox VALUES ('x')").await);
    }
}
