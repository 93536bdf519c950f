//! The wasmtime engine, the data each instance's store holds, the linker, and
//! component loading through an on-disk compile cache.
//!
//! One [`Engine`] serves every component. It uses the pooling allocator (with
//! copy-on-write memory images) when the machine lets it reserve the address
//! space, and epoch interruption so that a guest which never yields still
//! gives the executor back and can be stopped by its deadline.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// wasmtime 48 has its own error type; its `Context` also covers std errors,
// and `?` turns the result into `anyhow` at the function boundary.
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, GuestTaskId, InstancePre, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bus::{Message, TRACEPARENT_HEADER};
use crate::calls::{Begun, Call, Calls, HandledMessage};
use crate::capabilities::{
    self, AppCapabilities, key_value, messaging, outbound_http, postgres, redis, sql, sqlite,
    variables,
};
use crate::manifest;

/// How often the engine's epoch advances: the granularity of guest deadlines,
/// and how long a guest that never yields holds a worker thread before it
/// lets the other requests on that thread run.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Linear memory one instance may grow to unless its component says otherwise.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// Calls of one component running at once unless its manifest sets
/// `[component.x.tool.spindle] max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;

/// How long one request or message may take when the manifest sets no
/// `timeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one call of `component` may take; its database statements are
/// cut off after the same time.
pub fn call_timeout(component: &crate::manifest::Component) -> Duration {
    component.spindle.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)
}

/// Bytes of each pooled memory and table reset in place rather than
/// decommitted when a slot is returned (most guests stay below this).
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// Decommits gathered before one flush, so one TLB shootdown covers many.
const DECOMMIT_BATCH: usize = 16;

/// The most calls of `component` that run at once.
pub fn max_concurrency(component: &manifest::Component) -> u32 {
    component
        .spindle
        .max_concurrency
        .unwrap_or(DEFAULT_MAX_CONCURRENCY)
}

/// Instance slots the pooling allocator needs for `components`: one per call
/// that may run, twice over for instances still winding down as new ones
/// start. Sized from the limits, the pool never turns a call away.
pub fn instance_slots<'a>(components: impl IntoIterator<Item = &'a manifest::Component>) -> u32 {
    let calls: u32 = components.into_iter().map(max_concurrency).sum();
    calls.saturating_mul(2).max(16)
}

/// Creates the host's engine with `instance_slots` pooled instances: the
/// pooling allocator when the machine allows it, on demand otherwise.
pub fn new_engine(instance_slots: u32) -> anyhow::Result<Engine> {
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
        instance_slots,
    )));
    match Engine::new(&config) {
        Ok(engine) => {
            tracing::debug!("using the pooling instance allocator");
            Ok(engine)
        }
        Err(error) => {
            // Typically a `ulimit -v` or a container that refuses the large
            // virtual reservation the pool needs; correctness is unaffected.
            tracing::warn!("pooling allocator unavailable ({error:#}); allocating on demand");
            Ok(Engine::new(&base_config()).context("creating the wasmtime engine")?)
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .epoch_interruption(true)
        .memory_init_cow(true);
    config
}

fn pooling_config(instances: u32) -> PoolingAllocationConfig {
    let mut pooling = PoolingAllocationConfig::default();
    // A Rust wasip2 component holds a handful of core instances (the program
    // and the adapter shims) and up to two memories and tables.
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size(DEFAULT_MEMORY_LIMIT as usize)
        // Returning a slot resets it. Done with `madvise` (the default) every
        // instance pays page faults and cross-CPU TLB flushes; a profile of
        // the NATS trigger (a fresh instance per message) spent ~40% in the
        // kernel that way. Instead, reset the pages a guest dirtied in place
        // (PAGEMAP_SCAN, Linux 6.7+; ignored elsewhere), keep the first
        // pages of each memory and table resident, and batch what is still
        // decommitted.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .decommit_batch_size(DECOMMIT_BATCH);
    pooling
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("spindle-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning a thread at start-up");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one component instance's store holds: one field per capability.
pub struct InstanceState {
    /// Resources (streams, requests, handles) the guest holds.
    pub(crate) table: ResourceTable,
    /// WASI 0.2 and 0.3 command-line, clock, random and filesystem state.
    wasi: WasiCtx,
    /// `wasi:http` state shared by the 0.2 and 0.3 bindings.
    http: WasiHttpCtx,
    /// The instance's memory and table limits.
    limits: StoreLimits,
    /// `spin:variables`.
    pub(crate) variables: variables::InstanceState,
    /// `spin:key-value`.
    pub(crate) key_value: key_value::InstanceState,
    /// `spin:sqlite`.
    pub(crate) sqlite: sqlite::InstanceState,
    /// `spin:postgres`.
    pub(crate) postgres: postgres::InstanceState,
    /// `spin:redis`.
    pub(crate) redis: redis::InstanceState,
    /// `spin:mqtt`, `fermyon:spin/mqtt`.
    pub(crate) mqtt: capabilities::mqtt::InstanceState,
    /// `spin:mysql`, `fermyon:spin/mysql`.
    pub(crate) mysql: capabilities::mysql::InstanceState,
    /// `spindle:platform/sql`.
    pub(crate) sql: sql::InstanceState,
    /// `spindle:platform/messaging`.
    pub(crate) messaging: messaging::InstanceState,
    /// Outbound `wasi:http` policy and service chaining.
    pub(crate) outbound_http: outbound_http::InstanceState,
    /// The calls running in the instance, as the capabilities trace them.
    calls: Calls,
}

impl InstanceState {
    /// Fresh state for one instance of `component`.
    pub fn new(component: &manifest::Component, capabilities: &AppCapabilities) -> Self {
        let id = component.id.as_str();
        let mut wasi = WasiCtxBuilder::new();
        match capabilities.stdio.streams(id) {
            Some((stdout, stderr)) => {
                wasi.stdout(stdout).stderr(stderr);
            }
            None => {
                wasi.inherit_stdout().inherit_stderr();
            }
        }
        for (key, value) in &component.environment {
            wasi.env(key, value);
        }
        capabilities.files.preopen(id, &mut wasi);
        capabilities.sockets.configure_wasi(id, &mut wasi);
        let calls = Calls::default();
        let memory_limit = component
            .spindle
            .memory_limit
            .unwrap_or(DEFAULT_MEMORY_LIMIT);
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit as usize)
                .build(),
            variables: capabilities.variables.instance_state(id),
            key_value: capabilities.key_value.instance_state(id, &calls),
            sqlite: capabilities.sqlite.instance_state(id),
            postgres: capabilities.postgres.instance_state(id),
            redis: capabilities.redis.instance_state(id),
            mqtt: capabilities.mqtt.instance_state(id),
            mysql: capabilities.mysql.instance_state(id),
            sql: capabilities.sql.instance_state(id, &calls),
            messaging: capabilities.messaging.instance_state(id, &calls),
            outbound_http: capabilities.outbound_http.instance_state(id),
            calls,
        }
    }

    /// Traces the capability calls made from now on under `span` (the
    /// component call started last in this instance), where the call they
    /// come from is not known.
    pub fn trace_under(&mut self, span: tracing::Span) {
        self.outbound_http.call_span = span.clone();
        self.calls.set_latest(Call {
            span,
            message: None,
        });
    }

    /// Records export call `task`, started to handle `message`: its
    /// capability calls are traced under `span`, and it may answer the
    /// message's reply subject.
    pub fn begin_message(
        &mut self,
        task: GuestTaskId,
        message: &Message,
        span: tracing::Span,
    ) -> Begun {
        // wasi:http has no way to name the task: its requests go under the
        // latest call.
        self.outbound_http.call_span = span.clone();
        let handled = HandledMessage {
            reply_to: message.reply_to.clone(),
            traceparent: message.header(TRACEPARENT_HEADER).map(str::to_owned),
        };
        self.calls.begin(
            task,
            Call {
                span,
                message: Some(Arc::new(handled)),
            },
        )
    }

    /// Forgets export call `task`, begun as `begun`: it returned.
    pub fn end_message(&mut self, task: GuestTaskId, begun: Begun) {
        self.calls.end(task, begun);
    }

    /// The `wasi:http` view the HTTP trigger hands to wasmtime-wasi-http.
    pub fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpView::http(self)
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}

/// Creates a store for one instance, with its limits and epoch behaviour set.
pub fn new_store(
    engine: &Engine,
    component: &manifest::Component,
    capabilities: &AppCapabilities,
) -> Store<InstanceState> {
    let mut store = Store::new(engine, InstanceState::new(component, capabilities));
    store.limiter(|state| &mut state.limits);
    // Yield to the executor at every tick: a busy guest shares its thread, and
    // its caller's deadline gets a chance to fire. Tokio's own yield sends the
    // task to the back of the run queue; a plain self-wake (wasmtime's default
    // yield) lands in the worker's LIFO slot and runs the guest again before
    // the requests queued on that thread, which then wait many ticks.
    store.epoch_deadline_callback(|_| {
        Ok(wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    // A new store's deadline is epoch 0, already past: without this the
    // guest would yield at its first check, before doing any work.
    store.set_epoch_deadline(1);
    store
}

/// The linker every component is instantiated with: WASI 0.2 and 0.3 side by
/// side (spin-sdk 7 guests import both), `wasi:http` in both versions, and
/// the capabilities.
pub fn new_linker(engine: &Engine) -> anyhow::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).context("linking WASI 0.2")?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).context("linking WASI 0.3")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .context("linking wasi:http 0.2")?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).context("linking wasi:http 0.3")?;
    capabilities::add_to_linker(&mut linker).context("linking the capabilities")?;
    Ok(linker)
}

/// A component compiled and linked, ready to instantiate.
pub struct LoadedComponent {
    /// The component's manifest entry.
    pub config: Arc<manifest::Component>,
    /// Imports resolved once, so instantiation is only allocation and init.
    pub pre: InstancePre<InstanceState>,
}

impl LoadedComponent {
    /// Compiles (or loads from `cache`) and links `component`.
    pub fn load(
        engine: &Engine,
        linker: &Linker<InstanceState>,
        cache: &CompileCache,
        component: &manifest::Component,
    ) -> anyhow::Result<Self> {
        let compiled = cache.load(engine, component)?;
        Self::link(linker, compiled, component)
    }

    /// Compiles (or loads from `cache`) `wasm` as a new version of
    /// `component`, and links it: what a hot deploy checks before swapping.
    pub fn from_wasm(
        engine: &Engine,
        linker: &Linker<InstanceState>,
        cache: &CompileCache,
        component: &manifest::Component,
        wasm: &[u8],
    ) -> anyhow::Result<Self> {
        let compiled = cache.compile(engine, &component.id, wasm)?;
        Self::link(linker, compiled, component)
    }

    fn link(
        linker: &Linker<InstanceState>,
        compiled: Component,
        component: &manifest::Component,
    ) -> anyhow::Result<Self> {
        let pre = linker.instantiate_pre(&compiled).with_context(|| {
            format!(
                "component `{}` imports an interface spindle does not provide",
                component.id
            )
        })?;
        Ok(Self {
            config: Arc::new(component.clone()),
            pre,
        })
    }
}

/// Gives the memory a compile freed back to the system. Cranelift's working
/// memory is freed when a compile ends, but glibc keeps freed chunks that
/// are not at the top of their heap: `spindle up` of the demo app with an
/// empty compile cache idled at 200 MiB instead of 68 MiB without this.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only walks the allocator's own state,
        // under its locks; any pad is valid.
        unsafe { malloc_trim(0) };
    }
}

/// Precompiled components on disk, keyed by the wasm's content and the
/// engine's compatibility hash, so that a restart does not recompile.
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The compiled form of `component`'s wasm file, from the cache or
    /// freshly compiled.
    pub fn load(
        &self,
        engine: &Engine,
        component: &manifest::Component,
    ) -> anyhow::Result<Component> {
        let wasm = read_wasm(component)?;
        self.compile(engine, &component.id, &wasm)
            .map_err(|error| error.context(format!("compiling {}", component.source.display())))
    }

    /// The compiled form of `wasm`, from the cache or freshly compiled.
    pub fn compile(&self, engine: &Engine, id: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        let entry = self.dir.join(format!("{}.cwasm", cache_key(engine, wasm)));
        if entry.exists() {
            // SAFETY: `entry` was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name),
            // into a directory only this cache writes.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(compiled) => {
                    tracing::info!(component = %id, "loaded from compile cache");
                    return Ok(compiled);
                }
                Err(error) => {
                    tracing::warn!(component = %id, "unusable cache entry, recompiling: {error:#}")
                }
            }
        }
        let component = crate::componentize::to_component(wasm)
            .map_err(|error| error.context(format!("component `{id}`")))?;
        let compiled = engine
            .precompile_component(&component)
            .with_context(|| format!("component `{id}` is not a valid component"))?;
        self.store(&entry, &compiled)
            .with_context(|| format!("writing the compile cache in {}", self.dir.display()))?;
        tracing::info!(component = %id, "compiled and cached");
        // SAFETY: as above; the bytes were produced by this engine just now.
        let compiled = unsafe { Component::deserialize_file(engine, &entry) }
            .with_context(|| format!("component `{id}`: loading its compiled form"))?;
        Ok(compiled)
    }

    fn store(&self, entry: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write aside and rename, so a concurrent host never maps half a file.
        let partial = entry.with_extension(format!("{}.partial", std::process::id()));
        std::fs::write(&partial, compiled)?;
        std::fs::rename(&partial, entry)
    }
}

fn read_wasm(component: &manifest::Component) -> anyhow::Result<Vec<u8>> {
    let path = &component.source;
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let hint = match &component.build {
                Some(build) => format!(
                    "`spindle build` makes it (runs `{}`)",
                    build.commands.join(" && ")
                ),
                None => format!(
                    "give it a [component.{}.build] command and run `spindle build`",
                    component.id
                ),
            };
            anyhow::bail!(
                "component `{}`: wasm file {} does not exist; {hint}",
                component.id,
                path.display()
            )
        }
        Err(error) => Err(anyhow::Error::from(error).context(format!(
            "component `{}`: reading {}",
            component.id,
            path.display()
        ))),
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(wasm);
    if let Some(salt) = crate::componentize::cache_salt(wasm) {
        hasher.0.update(salt);
    }
    hasher
        .0
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Feeds `std::hash::Hash` data into SHA-256, so the key is stable across
/// processes (unlike `DefaultHasher`'s seeded output).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
