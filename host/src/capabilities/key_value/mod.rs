//! Named key-value stores: `spin:key-value/key-value@3.0.0` here,
//! `fermyon:spin/key-value@2.0.0` in [`fermyon_v2`] and `wasi:keyvalue` in
//! [`wasi_keyvalue`], over the same backends, grants and errors.
//!
//! Granted by `key_value_stores = ["label", ...]` in a component; each label's
//! backend comes from `[key_value_store.<label>]` in the runtime config: an
//! SQLite file (`type = "spin"`) or a Redis server (`type = "redis"`).
//! `default` needs no entry: it is `<state_dir>/sqlite_key_value.db` with
//! Spin's own table layout, so an app's data carries over between Spin and
//! Spindle. Backends are opened once at start-up and shared by every
//! component granted the label, as in Spin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureReader, HasData, Linker, Resource, StreamProducer, StreamReader,
    StreamResult, VecBuffer,
};

use super::{HostSettings, View};
use crate::calls::{self, Calls};
use crate::engine;
use crate::manifest::{App, KeyValueStoreConfig, RuntimeConfig};

mod fermyon_v2;
mod stores;
mod wasi_keyvalue;

use stores::{RedisStore, SqliteStore, Store, open_sqlite};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-kv",
        imports: { default: trappable | tracing },
        with: { "spin:key-value/key-value.store": super::OpenStore },
    });
}

use bindings::spin::key_value::key_value::{self as wit, Error};

/// The label every app may grant without configuring it.
const DEFAULT_LABEL: &str = "default";

/// The `default` store's file in the state dir; the name Spin uses.
const DEFAULT_FILE: &str = "sqlite_key_value.db";

/// How long connecting to Redis, or one Redis command, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys read ahead of the guest by `get-keys`; bounds host memory per listing.
const KEYS_READ_AHEAD: usize = 256;

/// The most key bytes an interface that lists every key in one answer
/// (`fermyon:spin/key-value@2.0.0`, `wasi:keyvalue`) may make the host hold.
const MAX_LISTED_KEY_BYTES: usize = 64 << 20;

/// Where one label's data lives, once the runtime config and the defaults
/// are applied.
#[derive(Clone, PartialEq, Eq)]
pub enum Config {
    /// An SQLite file, shared with every other label mapped to it.
    Sqlite(PathBuf),
    /// A Redis server; the URL may carry a password, so it is never shown.
    Redis(String),
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            // The URL may carry a password.
            Self::Redis(_) => f.write_str("Redis(..)"),
        }
    }
}

impl Config {
    /// The backend of `label`: its `[key_value_store.<label>]` entry, or the
    /// state dir's default file for `default`; `None` for anything else.
    pub fn for_label(
        label: &str,
        runtime_config: &RuntimeConfig,
        state_dir: &Path,
    ) -> Option<Self> {
        match runtime_config.key_value_stores.get(label) {
            Some(KeyValueStoreConfig::Spin { path: Some(path) }) => {
                Some(Self::Sqlite(path.clone()))
            }
            Some(KeyValueStoreConfig::Spin { path: None }) => {
                Some(Self::Sqlite(state_dir.join(format!("{label}.db"))))
            }
            Some(KeyValueStoreConfig::Redis { url }) => Some(Self::Redis(url.clone())),
            None if label == DEFAULT_LABEL => Some(Self::Sqlite(state_dir.join(DEFAULT_FILE))),
            None => None,
        }
    }
}

/// The app's open stores and which components may use them.
pub struct AppState {
    /// The backend of every label some component is granted.
    stores: Arc<HashMap<String, Arc<dyn Store>>>,
    /// Per component: the labels its `key_value_stores` grants.
    grants: HashMap<String, Arc<HashSet<String>>>,
}

impl AppState {
    /// One readiness probe per store label in use.
    pub fn probes(&self) -> Vec<crate::health::Probe> {
        self.stores
            .iter()
            .map(|(label, store)| {
                let store = store.clone();
                crate::health::Probe::new(format!("key-value:{label}"), "key-value", move || {
                    let ping = store.ping();
                    Box::pin(async move { ping.await.map_err(|error| error.to_string()) })
                })
            })
            .collect()
    }

    /// Resolves the backend of every granted label and opens it; fails on a
    /// label with no backend or a backend that cannot be opened.
    pub async fn configure(
        app: &App,
        runtime_config: &RuntimeConfig,
        settings: &HostSettings,
    ) -> anyhow::Result<Self> {
        let mut configs = BTreeMap::new();
        let mut grants = HashMap::new();
        for component in app.components.values() {
            for label in &component.key_value_stores {
                let Some(config) = Config::for_label(label, runtime_config, &settings.state_dir)
                else {
                    bail!(
                        "component `{}` is granted key-value store `{label}`, which has no \
                         backend: add [key_value_store.{label}] to the runtime config \
                         (--runtime-config-file)",
                        component.id
                    );
                };
                configs.insert(label.clone(), config);
            }
            let labels = component.key_value_stores.iter().cloned().collect();
            grants.insert(component.id.clone(), Arc::new(labels));
        }

        // Labels mapped to the same file share one pool; the `store` column
        // keeps their keys apart.
        let mut pools: HashMap<PathBuf, SqlitePool> = HashMap::new();
        let mut stores: HashMap<String, Arc<dyn Store>> = HashMap::new();
        for (label, config) in configs {
            let store: Arc<dyn Store> = match config {
                Config::Sqlite(path) => {
                    let pool = match pools.get(&path) {
                        Some(pool) => pool.clone(),
                        None => {
                            let pool = open_sqlite(&path).await.with_context(|| {
                                format!("key-value store `{label}`: opening {}", path.display())
                            })?;
                            pools.insert(path, pool.clone());
                            pool
                        }
                    };
                    Arc::new(SqliteStore {
                        pool,
                        name: label.clone(),
                    })
                }
                Config::Redis(url) => {
                    Arc::new(RedisStore::connect(&url).await.with_context(|| {
                        format!("key-value store `{label}`: connecting to Redis")
                    })?)
                }
            };
            stores.insert(label, store);
        }
        Ok(Self {
            stores: Arc::new(stores),
            grants,
        })
    }

    /// The stores `component` may open.
    pub fn instance_state(&self, component: &str, calls: &Calls) -> InstanceState {
        InstanceState {
            granted: self.grants.get(component).cloned().unwrap_or_default(),
            stores: self.stores.clone(),
            calls: calls.clone(),
        }
    }
}

/// One instance's view: the labels it is granted and the app's stores.
pub struct InstanceState {
    granted: Arc<HashSet<String>>,
    stores: Arc<HashMap<String, Arc<dyn Store>>>,
    /// The running calls, whose spans are the parents of their operations'.
    calls: Calls,
}

impl InstanceState {
    /// The backend of `label`, if this component may open it.
    fn backend(&self, label: &str) -> Result<Arc<dyn Store>, Error> {
        if !self.granted.contains(label) {
            return Err(Error::AccessDenied);
        }
        self.stores.get(label).cloned().ok_or(Error::NoSuchStore)
    }

    /// Opens `label` for the guest, if this component may.
    fn open(&self, label: String) -> Result<OpenStore, Error> {
        let backend = self.backend(&label)?;
        Ok(OpenStore { label, backend })
    }
}

/// Every key of `store` in one list, for the interfaces that answer that
/// way; a listing past [`MAX_LISTED_KEY_BYTES`] is an error rather than an
/// unbounded allocation.
async fn list_all_keys(store: &OpenStore) -> wasmtime::Result<Result<Vec<String>, Error>> {
    let (sender, mut receiver) = mpsc::channel(KEYS_READ_AHEAD);
    let listing = tokio::spawn(store.backend.get_keys(sender));
    let mut keys = Vec::new();
    let mut bytes = 0;
    while let Some(key) = receiver.recv().await {
        bytes += key.len();
        if bytes > MAX_LISTED_KEY_BYTES {
            // Dropping the receiver ends the listing.
            return Ok(Err(Error::Other(format!(
                "the store's keys exceed {} MiB; list them with spin:key-value@3.0.0's stream",
                MAX_LISTED_KEY_BYTES >> 20
            ))));
        }
        keys.push(key);
    }
    let listed = listing
        .await
        .map_err(|error| wasmtime::format_err!("listing keys: {error}"))?;
    Ok(listed.map(|()| keys).map_err(to_guest_error))
}

/// Links the interface; guests reach their stores through [`InstanceState`]
/// and hold them as resources in the instance's table.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, KeyValue>(linker, |state| View {
        table: &mut state.table,
        state: &mut state.key_value,
    })?;
    fermyon_v2::add_to_linker(linker)?;
    wasi_keyvalue::add_to_linker(linker)
}

struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = View<'a, InstanceState>;
}

/// A store the guest opened: the host side of the `store` resource.
#[derive(Clone)]
pub struct OpenStore {
    label: String,
    backend: Arc<dyn Store>,
}

impl wit::Host for View<'_, InstanceState> {}

/// The open store behind `handle` and the span of the guest call using it.
fn store_and_span<T>(
    accessor: &Accessor<T, KeyValue>,
    handle: &Resource<OpenStore>,
) -> wasmtime::Result<(OpenStore, tracing::Span)> {
    accessor.with(|mut access| {
        let task = calls::root_task(&mut access);
        let view = access.get();
        Ok((view.resource(handle)?, view.state.calls.of(task).span))
    })
}

impl wit::HostStore for View<'_, InstanceState> {
    fn drop(&mut self, handle: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl<T> wit::HostStoreWithStore<T> for KeyValue {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        let _span = tracing::debug_span!("key_value.open", store = %label).entered();
        accessor.with(|mut access| {
            let view = access.get();
            match view.state.open(label) {
                Ok(store) => Ok(Ok(view.table.push(store)?)),
                Err(error) => Ok(Err(error)),
            }
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        handle: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (store, call) = store_and_span(accessor, &handle)?;
        let span = crate::capability_span!(call, "key_value.get", otel.name = "key-value get", store = %store.label);
        let result = store.backend.get(&key).instrument(span).await;
        Ok(result.map_err(to_guest_error))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        handle: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (store, call) = store_and_span(accessor, &handle)?;
        let span = crate::capability_span!(call, "key_value.set", otel.name = "key-value set", store = %store.label);
        let result = store.backend.set(&key, &value).instrument(span).await;
        Ok(result.map_err(to_guest_error))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        handle: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (store, call) = store_and_span(accessor, &handle)?;
        let span = crate::capability_span!(call, "key_value.delete", otel.name = "key-value delete", store = %store.label);
        let result = store.backend.delete(&key).instrument(span).await;
        Ok(result.map_err(to_guest_error))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        handle: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let (store, call) = store_and_span(accessor, &handle)?;
        let span = crate::capability_span!(call, "key_value.exists", otel.name = "key-value exists", store = %store.label);
        let result = store.backend.exists(&key).instrument(span).await;
        Ok(result.map_err(to_guest_error))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        handle: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let (store, call) = store_and_span(accessor, &handle)?;
        let span = crate::capability_span!(call, "key_value.get_keys", otel.name = "key-value get-keys", store = %store.label);
        // The listing runs as its own task, so it outlives this call and
        // keeps reading while the guest consumes the stream; the bounded
        // channel stops it from running ahead. A guest that drops the stream
        // closes the channel, which ends the listing.
        let (keys_tx, keys_rx) = mpsc::channel(KEYS_READ_AHEAD);
        let (result_tx, result_rx) = oneshot::channel();
        let listing = store.backend.get_keys(keys_tx);
        tokio::spawn(
            async move {
                let _ = result_tx.send(listing.await.map_err(to_guest_error));
            }
            .instrument(span),
        );
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, ChannelProducer(keys_rx))?;
            let result = FutureReader::new(&mut access, result_rx)?;
            Ok((keys, result))
        })
    }
}

/// Feeds a guest `stream<T>` from a channel, a batch at a time.
struct ChannelProducer<T>(mpsc::Receiver<T>);

impl<D, T> StreamProducer<D> for ChannelProducer<T>
where
    T: Send + Sync + 'static,
{
    type Item = T;
    type Buffer = VecBuffer<T>;

    fn poll_produce<'a>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, T, VecBuffer<T>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        // A zero-length read asks whether items are ready; a channel cannot
        // say without taking one, so answer "ready" and let the next read wait.
        let capacity = match destination.remaining(&mut store) {
            Some(0) => return Poll::Ready(Ok(StreamResult::Completed)),
            Some(capacity) => capacity.min(KEYS_READ_AHEAD),
            None => KEYS_READ_AHEAD,
        };
        let mut batch = Vec::new();
        match self.0.poll_recv_many(cx, &mut batch, capacity) {
            // Zero items from a ready receiver means every sender is gone.
            Poll::Ready(0) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Ready(_) => {
                destination.set_buffer(batch.into());
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a backend failed with; the detail stays in the host's log.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The one place backend errors become the interface's `error`: a short
/// message naming the kind of failure, never an address or a path.
fn to_guest_error(error: BackendError) -> Error {
    tracing::warn!("key-value backend failed: {error}");
    let message = match &error {
        BackendError::Sqlite(sqlx::Error::Database(database)) => {
            format!("database error: {}", database.message())
        }
        BackendError::Sqlite(sqlx::Error::PoolTimedOut) => "the store is busy".to_owned(),
        BackendError::Sqlite(_) => "the store failed".to_owned(),
        BackendError::Redis(redis) if redis.is_timeout() => "the store timed out".to_owned(),
        BackendError::Redis(redis)
            if redis.is_io_error()
                || redis.is_connection_dropped()
                || redis.is_connection_refusal() =>
        {
            "the store is unreachable".to_owned()
        }
        // A server reply such as `WRONGTYPE ...`: the server's own words.
        BackendError::Redis(redis) => match (redis.code(), redis.detail()) {
            (Some(code), Some(detail)) => format!("store error: {code} {detail}"),
            (Some(code), None) => format!("store error: {code}"),
            _ => "the store failed".to_owned(),
        },
    };
    Error::Other(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_config(text: &str) -> RuntimeConfig {
        crate::manifest::parse_runtime_config(text, Path::new("/etc/spindle/runtime.toml"))
            .expect("valid runtime config")
    }

    fn app(grants: &str) -> App {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [component.c]\nsource = \"c.wasm\"\nkey_value_stores = {grants}\n"
        );
        crate::manifest::parse(&manifest, Path::new("/nonexistent/spin.toml"))
            .expect("valid manifest")
    }

    async fn sqlite_store(dir: &Path, label: &str) -> SqliteStore {
        SqliteStore {
            pool: open_sqlite(&dir.join("kv.db")).await.expect("open sqlite"),
            name: label.to_owned(),
        }
    }

    async fn all_keys(store: &dyn Store) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(1);
        let listing = tokio::spawn(store.get_keys(tx));
        let mut keys = Vec::new();
        while let Some(key) = rx.recv().await {
            keys.push(key);
        }
        listing.await.expect("listing task").expect("listing");
        keys.sort();
        keys
    }

    #[test]
    fn default_label_is_spins_file_in_the_state_dir() {
        let config = Config::for_label("default", &RuntimeConfig::default(), Path::new("/state"));
        assert_eq!(
            config,
            Some(Config::Sqlite(PathBuf::from("/state/sqlite_key_value.db")))
        );
    }

    #[test]
    fn runtime_config_picks_each_labels_backend() {
        let config = runtime_config(
            "[key_value_store.default]\ntype = \"spin\"\npath = \"kv/app.db\"\n\
             [key_value_store.plain]\ntype = \"spin\"\n\
             [key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://localhost\"\n",
        );
        let state = Path::new("/state");
        assert_eq!(
            Config::for_label("default", &config, state),
            Some(Config::Sqlite(PathBuf::from("/etc/spindle/kv/app.db")))
        );
        assert_eq!(
            Config::for_label("plain", &config, state),
            Some(Config::Sqlite(PathBuf::from("/state/plain.db")))
        );
        assert_eq!(
            Config::for_label("cache", &config, state),
            Some(Config::Redis("redis://localhost".into()))
        );
        assert_eq!(Config::for_label("other", &config, state), None);
    }

    #[tokio::test]
    async fn granted_label_without_backend_stops_start_up_naming_component_and_label() {
        let settings = HostSettings {
            state_dir: tempfile::tempdir().expect("temp dir").keep(),
            ..HostSettings::default()
        };
        let error = AppState::configure(&app("[\"cache\"]"), &RuntimeConfig::default(), &settings)
            .await
            .err()
            .expect("must fail");
        let message = error.to_string();
        assert!(message.contains("component `c`"), "{message}");
        assert!(message.contains("`cache`"), "{message}");
    }

    #[tokio::test]
    async fn only_granted_labels_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = HostSettings {
            state_dir: dir.path().to_path_buf(),
            ..HostSettings::default()
        };
        let state =
            AppState::configure(&app("[\"default\"]"), &RuntimeConfig::default(), &settings)
                .await
                .expect("configure");
        let instance = state.instance_state("c", &Calls::default());
        assert!(instance.backend("default").is_ok());
        assert!(matches!(
            instance.backend("other"),
            Err(Error::AccessDenied)
        ));
        assert!(matches!(
            state
                .instance_state("unknown", &Calls::default())
                .backend("default"),
            Err(Error::AccessDenied)
        ));
        assert!(dir.path().join(DEFAULT_FILE).is_file());
    }

    #[tokio::test]
    async fn sqlite_store_sets_gets_and_deletes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(dir.path(), "default").await;
        assert_eq!(store.get("k").await.expect("get"), None);
        assert!(!store.exists("k").await.expect("exists"));
        store.set("k", b"one").await.expect("set");
        store.set("k", b"two").await.expect("overwrite");
        assert_eq!(store.get("k").await.expect("get"), Some(b"two".to_vec()));
        assert!(store.exists("k").await.expect("exists"));
        store.delete("k").await.expect("delete");
        store
            .delete("k")
            .await
            .expect("deleting an absent key succeeds");
        assert_eq!(store.get("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn labels_sharing_a_file_keep_their_keys_apart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = sqlite_store(dir.path(), "first").await;
        let second = SqliteStore {
            pool: first.pool.clone(),
            name: "second".into(),
        };
        first.set("a", b"1").await.expect("set");
        first.set("b", b"2").await.expect("set");
        second.set("c", b"3").await.expect("set");
        assert_eq!(all_keys(&first).await, ["a", "b"]);
        assert_eq!(all_keys(&second).await, ["c"]);
        assert_eq!(second.get("a").await.expect("get"), None);
    }

    #[tokio::test]
    async fn listing_stops_when_the_reader_goes_away() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(dir.path(), "default").await;
        for i in 0..10 {
            store.set(&format!("k{i}"), b"v").await.expect("set");
        }
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        store
            .get_keys(tx)
            .await
            .expect("an abandoned listing is not an error");
    }

    #[test]
    fn guest_errors_carry_no_paths() {
        let error = BackendError::Sqlite(sqlx::Error::Io(std::io::Error::other(
            "/secret/path/kv.db: permission denied",
        )));
        let Error::Other(message) = to_guest_error(error) else {
            panic!("expected Error::Other");
        };
        assert!(!message.contains("/secret"), "{message}");
    }
}
