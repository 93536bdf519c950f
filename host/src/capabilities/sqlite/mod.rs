//! `spin:sqlite/sqlite@3.1.0`: SQLite databases by label; the WASI 0.2
//! versions of Spin 2 and 3 (`fermyon:spin/sqlite@2.0.0`,
//! `spin:sqlite/sqlite@3.0.0`) translate onto it in [`fermyon_v2`] and
//! [`spin_v3_0`].
//!
//! Granted by `sqlite_databases = ["label", ...]` in a component; a label's
//! file comes from `[sqlite_database.<label>]` in the runtime config, and
//! `default` needs no entry (`<state_dir>/sqlite_db.db`, as in Spin). Each
//! `connection` the guest opens holds one pooled connection, so that
//! `last-insert-rowid` and `changes` describe that connection's own
//! statements. `--sqlite` statements run against `default` at start-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Sqlite};
use tokio::sync::Mutex;
use tracing::Instrument;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use super::{HostSettings, View};
use crate::engine;
use crate::manifest::{App, RuntimeConfig, SqliteDatabaseConfig};

mod fermyon_v2;
mod spin_v3_0;
mod statements;

use statements::{counters, execute, open, open_pool};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-sqlite",
        // The WIT's synchronous functions (`open`, `execute`, ...) still wait
        // on the database, so their host side is async too; the engine runs
        // every call on the async executor.
        imports: { default: async | trappable | tracing },
        with: { "spin:sqlite/sqlite.connection": super::Connection },
    });
}

use bindings::spin::sqlite::sqlite::{self as wit, Error, QueryResult, RowResult, Value};

/// The label every app may grant without configuring it.
const DEFAULT_LABEL: &str = "default";

/// The `default` database's file in the state dir; the name Spin uses.
const DEFAULT_FILE: &str = "sqlite_db.db";

/// Connections per database file; each open guest `connection` holds one.
const MAX_CONNECTIONS: u32 = 16;

/// How long `open` waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a single query's rows may take in host memory.
const MAX_RESULT_BYTES: usize = 64 << 20;

/// The file behind one database label, once the runtime config and the
/// defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The database file; labels naming the same file share it.
    pub path: PathBuf,
}

impl Config {
    /// The file of `label`: its `[sqlite_database.<label>]` entry, or the
    /// state dir's default file for `default`; `None` for anything else.
    pub fn for_label(
        label: &str,
        runtime_config: &RuntimeConfig,
        state_dir: &Path,
    ) -> Option<Self> {
        let path = match runtime_config.sqlite_databases.get(label) {
            Some(SqliteDatabaseConfig::Spin { path: Some(path) }) => path.clone(),
            Some(SqliteDatabaseConfig::Spin { path: None }) => {
                state_dir.join(format!("{label}.db"))
            }
            None if label == DEFAULT_LABEL => state_dir.join(DEFAULT_FILE),
            None => return None,
        };
        Some(Self { path })
    }
}

/// The app's databases and which components may use them.
pub struct AppState {
    /// A pool for every label some component is granted.
    databases: Arc<HashMap<String, SqlitePool>>,
    /// Per component: the labels its `sqlite_databases` grants.
    grants: HashMap<String, Arc<HashSet<String>>>,
}

impl AppState {
    /// Opens the database of every granted label, then runs the `--sqlite`
    /// statements against `default`; fails on a label with no database, a
    /// file that cannot be opened or a statement that fails.
    pub async fn configure(
        app: &App,
        runtime_config: &RuntimeConfig,
        settings: &HostSettings,
    ) -> anyhow::Result<Self> {
        let state_dir = &settings.state_dir;
        let mut configs = BTreeMap::new();
        let mut grants = HashMap::new();
        for component in app.components.values() {
            for label in &component.sqlite_databases {
                let Some(config) = Config::for_label(label, runtime_config, state_dir) else {
                    bail!(
                        "component `{}` is granted SQLite database `{label}`, which has no \
                         file: add [sqlite_database.{label}] to the runtime config \
                         (--runtime-config-file)",
                        component.id
                    );
                };
                configs.insert(label.clone(), config);
            }
            let labels = component.sqlite_databases.iter().cloned().collect();
            grants.insert(component.id.clone(), Arc::new(labels));
        }
        if !settings.sqlite_statements.is_empty() {
            let config = Config::for_label(DEFAULT_LABEL, runtime_config, state_dir)
                .context("the default database always has a file")?;
            configs.insert(DEFAULT_LABEL.to_owned(), config);
        }

        // Labels may share a file and so a pool: a statement may run as
        // long as the longest call of any component granted one.
        let statement_limit = app
            .components
            .values()
            .filter(|component| !component.sqlite_databases.is_empty())
            .map(crate::engine::call_timeout)
            .max()
            .unwrap_or(crate::engine::DEFAULT_CALL_TIMEOUT);
        let mut pools: HashMap<PathBuf, SqlitePool> = HashMap::new();
        let mut databases = HashMap::new();
        for (label, Config { path }) in configs {
            let pool = match pools.get(&path) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = open_pool(&path, statement_limit).await.with_context(|| {
                        format!("SQLite database `{label}`: opening {}", path.display())
                    })?;
                    pools.insert(path, pool.clone());
                    pool
                }
            };
            databases.insert(label, pool);
        }

        if let Some(pool) = databases.get(DEFAULT_LABEL) {
            for (index, sql) in settings.sqlite_statements.iter().enumerate() {
                // `raw_sql` runs every statement of a multi-statement file.
                sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                    .execute(pool)
                    .await
                    .with_context(|| {
                        format!(
                            "--sqlite statement {} failed against the default database",
                            index + 1
                        )
                    })?;
            }
        }
        Ok(Self {
            databases: Arc::new(databases),
            grants,
        })
    }

    /// The databases `component` may open.
    pub fn instance_state(&self, component: &str) -> InstanceState {
        InstanceState {
            granted: self.grants.get(component).cloned().unwrap_or_default(),
            databases: self.databases.clone(),
        }
    }
}

/// One instance's view: the labels it is granted and the app's databases.
pub struct InstanceState {
    granted: Arc<HashSet<String>>,
    databases: Arc<HashMap<String, SqlitePool>>,
}

impl InstanceState {
    /// The pool of `database`, if this component may open it.
    fn pool(&self, database: &str) -> Result<SqlitePool, Error> {
        if !self.granted.contains(database) {
            return Err(Error::AccessDenied);
        }
        self.databases
            .get(database)
            .cloned()
            .ok_or(Error::NoSuchDatabase)
    }
}

/// Links the interface; guests reach their databases through
/// [`InstanceState`] and hold connections as resources in the instance's table.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, SqliteData>(linker, view)?;
    spin_v3_0::add_to_linker(linker)?;
    fermyon_v2::add_to_linker(linker)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.sqlite,
    }
}

/// Conversions between this version's types and those of an earlier one
/// with the same shape (`$version` is the path of its bindings' interface).
macro_rules! convert_from_v3_1 {
    ($version:path) => {
        use $crate::capabilities::sqlite::bindings::spin::sqlite::sqlite as v3_1;
        use $version as version;

        fn parameter(value: version::Value) -> v3_1::Value {
            match value {
                version::Value::Integer(value) => v3_1::Value::Integer(value),
                version::Value::Real(value) => v3_1::Value::Real(value),
                version::Value::Text(value) => v3_1::Value::Text(value),
                version::Value::Blob(value) => v3_1::Value::Blob(value),
                version::Value::Null => v3_1::Value::Null,
            }
        }

        fn value(value: v3_1::Value) -> version::Value {
            match value {
                v3_1::Value::Integer(value) => version::Value::Integer(value),
                v3_1::Value::Real(value) => version::Value::Real(value),
                v3_1::Value::Text(value) => version::Value::Text(value),
                v3_1::Value::Blob(value) => version::Value::Blob(value),
                v3_1::Value::Null => version::Value::Null,
            }
        }

        fn error(error: v3_1::Error) -> version::Error {
            match error {
                v3_1::Error::NoSuchDatabase => version::Error::NoSuchDatabase,
                v3_1::Error::AccessDenied => version::Error::AccessDenied,
                v3_1::Error::InvalidConnection => version::Error::InvalidConnection,
                v3_1::Error::DatabaseFull => version::Error::DatabaseFull,
                v3_1::Error::Io(message) => version::Error::Io(message),
            }
        }

        fn query_result(result: v3_1::QueryResult) -> version::QueryResult {
            version::QueryResult {
                columns: result.columns,
                rows: result
                    .rows
                    .into_iter()
                    .map(|row| version::RowResult {
                        values: row.values.into_iter().map(value).collect(),
                    })
                    .collect(),
            }
        }

        fn outcome<T, U>(
            result: wasmtime::Result<Result<T, v3_1::Error>>,
            translate: impl FnOnce(T) -> U,
        ) -> wasmtime::Result<Result<U, version::Error>> {
            Ok(result?.map(translate).map_err(error))
        }
    };
}
use convert_from_v3_1;

struct SqliteData;

impl HasData for SqliteData {
    type Data<'a> = View<'a, InstanceState>;
}

/// A connection the guest opened: the host side of the `connection` resource.
#[derive(Clone)]
pub struct Connection {
    /// The label it was opened with, for the spans.
    database: Arc<str>,
    /// Shared with calls in flight; the lock orders statements on it.
    session: Arc<Mutex<Session>>,
}

/// One pooled connection and what the guest has done on it.
struct Session {
    connection: PoolConnection<Sqlite>,
    /// Whether the guest ran a statement yet: before that, the pooled
    /// connection's counters belong to an earlier user and must read as 0.
    has_run: bool,
}

/// The synchronous calls, shared by every interface version.
impl View<'_, InstanceState> {
    async fn open_connection(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let span = tracing::debug_span!("sqlite.open", database = %database);
        let pool = self.state.pool(&database);
        match open(pool, database).instrument(span).await {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(error)),
        }
    }

    async fn execute_collected(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let connection = self.resource(&handle)?;
        let span = tracing::debug_span!("sqlite.execute", database = %connection.database);
        let result = execute(&connection.session, statement, parameters)
            .instrument(span)
            .await;
        Ok(result.map(|(columns, rows)| QueryResult { columns, rows }))
    }

    async fn last_insert_rowid_of(
        &mut self,
        handle: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let connection = self.resource(&handle)?;
        let span =
            tracing::debug_span!("sqlite.last_insert_rowid", database = %connection.database);
        let (rowid, _) = counters(&connection.session).instrument(span).await?;
        Ok(rowid)
    }

    async fn changes_of(&mut self, handle: Resource<Connection>) -> wasmtime::Result<u64> {
        let connection = self.resource(&handle)?;
        let span = tracing::debug_span!("sqlite.changes", database = %connection.database);
        let (_, changes) = counters(&connection.session).instrument(span).await?;
        Ok(changes)
    }

    fn close(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        self.open_connection(database).await
    }

    async fn execute(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        self.execute_collected(handle, statement, parameters).await
    }

    async fn last_insert_rowid(&mut self, handle: Resource<Connection>) -> wasmtime::Result<i64> {
        self.last_insert_rowid_of(handle).await
    }

    async fn changes(&mut self, handle: Resource<Connection>) -> wasmtime::Result<u64> {
        self.changes_of(handle).await
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.close(handle)
    }
}

impl<T> wit::HostConnectionWithStore<T> for SqliteData {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let span = tracing::debug_span!("sqlite.open", database = %database);
        let pool = accessor.with(|mut access| access.get().state.pool(&database));
        match open(pool, database).instrument(span).await {
            Ok(connection) => {
                accessor.with(|mut access| Ok(Ok(access.get().table.push(connection)?)))
            }
            Err(error) => Ok(Err(error)),
        }
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<String>,
                StreamReader<RowResult>,
                FutureReader<Result<(), Error>>,
            ),
            Error,
        >,
    > {
        let connection = accessor.with(|mut access| access.get().resource(&handle))?;
        let span = tracing::debug_span!("sqlite.execute", database = %connection.database);
        // The statement runs to completion before the rows go out, so the
        // connection is free again when this returns: a guest may query it
        // while still reading these rows, and its counters are already
        // up to date. Errors therefore come back here, never on the future.
        let (columns, rows) = match execute(&connection.session, statement, parameters)
            .instrument(span)
            .await
        {
            Ok(result) => result,
            Err(error) => return Ok(Err(error)),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let finished: Result<(), Error> = Ok(());
            let done =
                FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(finished) })?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let connection = accessor.with(|mut access| access.get().resource(&handle))?;
        let span =
            tracing::debug_span!("sqlite.last_insert_rowid", database = %connection.database);
        let (rowid, _) = counters(&connection.session).instrument(span).await?;
        Ok(rowid)
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        handle: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        let connection = accessor.with(|mut access| access.get().resource(&handle))?;
        let span = tracing::debug_span!("sqlite.changes", database = %connection.database);
        let (_, changes) = counters(&connection.session).instrument(span).await?;
        Ok(changes)
    }
}

/// The one place database errors become the interface's `error`. SQLite's
/// own messages name the problem (syntax, constraint, locking) and never a
/// path; anything else is reduced to its kind, with the detail in the log.
fn to_guest_error(error: sqlx::Error) -> Error {
    match error {
        sqlx::Error::Database(database) => {
            // SQLITE_FULL (13): the disk or the database's size limit.
            if database.code().as_deref() == Some("13") {
                return Error::DatabaseFull;
            }
            if super::sqlite_guard::is_refusal(database.message()) {
                return Error::AccessDenied;
            }
            if database.message() == super::sqlite_guard::INTERRUPTED {
                return Error::Io(super::sqlite_guard::TIMED_OUT.to_owned());
            }
            Error::Io(database.message().to_owned())
        }
        sqlx::Error::PoolTimedOut => {
            tracing::warn!("no free SQLite connection within {ACQUIRE_TIMEOUT:?}");
            Error::Io("too many open connections to this database".to_owned())
        }
        other => {
            tracing::warn!("SQLite failed: {other}");
            Error::Io("the database failed".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(grants: &str) -> App {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [component.c]\nsource = \"c.wasm\"\nsqlite_databases = {grants}\n"
        );
        crate::manifest::parse(&manifest, Path::new("/nonexistent/spin.toml"))
            .expect("valid manifest")
    }

    fn settings(dir: &Path, statements: &[&str]) -> HostSettings {
        HostSettings {
            state_dir: dir.to_path_buf(),
            sqlite_statements: statements.iter().map(|s| s.to_string()).collect(),
            ..HostSettings::default()
        }
    }

    async fn session(dir: &Path) -> Mutex<Session> {
        let pool = open_pool(&dir.join("db.sqlite"), Duration::from_secs(30))
            .await
            .expect("open");
        let connection = open(Ok(pool), "default".into()).await.expect("open");
        Arc::into_inner(connection.session).expect("sole owner")
    }

    async fn run(session: &Mutex<Session>, sql: &str, parameters: Vec<Value>) -> Vec<RowResult> {
        match execute(session, sql.to_owned(), parameters).await {
            Ok((_, rows)) => rows,
            Err(error) => panic!("{sql}: {error:?}"),
        }
    }

    #[test]
    fn default_database_is_spins_file_in_the_state_dir() {
        assert_eq!(
            Config::for_label("default", &RuntimeConfig::default(), Path::new("/state")),
            Some(Config {
                path: PathBuf::from("/state/sqlite_db.db")
            })
        );
        assert_eq!(
            Config::for_label("other", &RuntimeConfig::default(), Path::new("/state")),
            None
        );
    }

    #[tokio::test]
    async fn granted_label_without_file_stops_start_up_naming_component_and_label() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = AppState::configure(
            &app("[\"orders\"]"),
            &RuntimeConfig::default(),
            &settings(dir.path(), &[]),
        )
        .await
        .err()
        .expect("must fail");
        let message = error.to_string();
        assert!(message.contains("component `c`"), "{message}");
        assert!(message.contains("`orders`"), "{message}");
    }

    #[tokio::test]
    async fn configured_but_ungranted_label_is_denied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime_config = crate::manifest::parse_runtime_config(
            "[sqlite_database.other]\ntype = \"spin\"\n",
            &dir.path().join("runtime.toml"),
        )
        .expect("runtime config");
        let state = AppState::configure(
            &app("[\"default\"]"),
            &runtime_config,
            &settings(dir.path(), &[]),
        )
        .await
        .expect("configure");
        let instance = state.instance_state("c");
        assert!(instance.pool("default").is_ok());
        assert!(matches!(instance.pool("other"), Err(Error::AccessDenied)));
    }

    #[tokio::test]
    async fn failing_start_up_statement_stops_start_up_with_the_sql_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = AppState::configure(
            &app("[]"),
            &RuntimeConfig::default(),
            &settings(
                dir.path(),
                &["CREATE TABLE t (x)", "INSERT INTO missing VALUES (1)"],
            ),
        )
        .await
        .err()
        .expect("must fail");
        let message = format!("{error:#}");
        assert!(message.contains("--sqlite statement 2"), "{message}");
        assert!(message.contains("no such table: missing"), "{message}");
    }

    #[tokio::test]
    async fn values_round_trip_by_their_own_type() {
        let dir = tempfile::tempdir().expect("temp dir");
        let session = session(dir.path()).await;
        run(&session, "CREATE TABLE t (a, b, c, d, e)", vec![]).await;
        let row = vec![
            Value::Integer(-7),
            Value::Real(2.5),
            Value::Text("héllo".into()),
            Value::Blob(vec![0, 1, 255]),
            Value::Null,
        ];
        run(
            &session,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            row.clone(),
        )
        .await;
        run(
            &session,
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
            row.clone(),
        )
        .await;
        run(
            &session,
            "INSERT INTO t VALUES ($1, $2, $3, $4, $5)",
            row.clone(),
        )
        .await;
        let (columns, rows) = execute(&session, "SELECT * FROM t".into(), vec![])
            .await
            .expect("select");
        assert_eq!(columns, ["a", "b", "c", "d", "e"]);
        assert_eq!(rows.len(), 3);
        for got in rows {
            // `Value` has no `PartialEq` on the host side; its Debug text does.
            assert_eq!(format!("{:?}", got.values), format!("{row:?}"));
        }
    }

    #[tokio::test]
    async fn columns_are_named_even_without_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let session = session(dir.path()).await;
        run(&session, "CREATE TABLE t (id INTEGER, name TEXT)", vec![]).await;
        let (columns, rows) = execute(&session, "SELECT name, id AS n FROM t".into(), vec![])
            .await
            .expect("select");
        assert_eq!(columns, ["name", "n"]);
        assert!(rows.is_empty());
    }

    #[tokio::test]
    async fn counters_describe_this_connections_last_statement() {
        let dir = tempfile::tempdir().expect("temp dir");
        let session = session(dir.path()).await;
        assert_eq!(counters(&session).await.expect("counters"), (0, 0));
        run(&session, "CREATE TABLE t (x)", vec![]).await;
        run(&session, "INSERT INTO t VALUES (1), (2), (3)", vec![]).await;
        assert_eq!(counters(&session).await.expect("counters"), (3, 3));
        run(&session, "UPDATE t SET x = 0 WHERE x > 1", vec![]).await;
        assert_eq!(counters(&session).await.expect("counters"), (3, 2));
    }

    #[tokio::test]
    async fn transaction_left_open_is_rolled_back_when_the_connection_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = open_pool(&dir.path().join("db.sqlite"), Duration::from_secs(30))
            .await
            .expect("open");
        let first = open(Ok(pool.clone()), "default".into())
            .await
            .expect("open");
        run(&first.session, "CREATE TABLE t (x)", vec![]).await;
        run(&first.session, "BEGIN", vec![]).await;
        run(&first.session, "INSERT INTO t VALUES (1)", vec![]).await;
        drop(first);

        // Were the transaction still open, it would hold the write lock and
        // this insert would time out.
        let second = open(Ok(pool), "default".into()).await.expect("open");
        run(&second.session, "INSERT INTO t VALUES (2)", vec![]).await;
        let rows = run(&second.session, "SELECT x FROM t", vec![]).await;
        assert_eq!(
            format!("{rows:?}"),
            "[RowResult { values: [Value::Integer(2)] }]"
        );
    }

    #[tokio::test]
    async fn bad_sql_is_a_guest_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let session = session(dir.path()).await;
        let error = execute(&session, "SELEC 1".into(), vec![]).await.err();
        assert!(
            matches!(&error, Some(Error::Io(message)) if message.contains("syntax error")),
            "{error:?}"
        );
    }
}
