//! How long a fresh instance of the hello component takes, from its
//! `InstancePre`, with the engine, linker and capabilities `spindle up` uses.
//!
//! Three numbers, so that a regression points at its cause:
//! - `instantiate`: `ServicePre::instantiate_async` alone, on a ready store
//!   (the pooling allocator's slot, copy-on-write memory, the guest's init);
//! - `new_store`: building the store and its per-instance capability state;
//! - `request_instance`: both plus dropping the store, what the HTTP trigger
//!   pays for each instance it starts.
//!
//! Needs the guest built first (`benches/run` does it):
//! `cargo build --release --target wasm32-wasip2 -p hello`. The wasm is looked
//! up in `$SPINDLE_BENCH_HELLO_WASM`, else under `$CARGO_TARGET_DIR`, else
//! under the workspace's `target/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use criterion::{Criterion, criterion_group, criterion_main};
use spindle::bus::Bus;
use spindle::capabilities::{AppCapabilities, HostSettings};
use spindle::engine::{self, CompileCache, LoadedComponent};
use spindle::manifest::{self, RuntimeConfig};
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// Stores made ahead of one timed batch; well under the pool's 1,000 slots.
const BATCH: u64 = 100;

/// Everything `spindle up` prepares before its first request.
struct Prepared {
    engine: wasmtime::Engine,
    capabilities: Arc<AppCapabilities>,
    loaded: LoadedComponent,
    service: ServicePre<engine::InstanceState>,
    runtime: tokio::runtime::Runtime,
    _state_dir: tempfile::TempDir,
}

fn hello_wasm() -> PathBuf {
    if let Some(path) = std::env::var_os("SPINDLE_BENCH_HELLO_WASM") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/release/hello.wasm")
}

fn prepare() -> anyhow::Result<Prepared> {
    let wasm = hello_wasm();
    anyhow::ensure!(
        wasm.exists(),
        "{} does not exist; build it with \
         `cargo build --release --target wasm32-wasip2 -p hello`",
        wasm.display()
    );
    let state_dir = tempfile::tempdir().context("creating a state dir")?;
    let text = format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"bench\"\n\
         [[trigger.http]]\nroute = \"/hello/...\"\ncomponent = \"hello\"\n\
         [component.hello]\nsource = {:?}\n",
        wasm.display().to_string()
    );
    let app = manifest::parse(&text, &state_dir.path().join("spin.toml"))?;
    let runtime_config = RuntimeConfig::default();
    let settings = HostSettings {
        state_dir: state_dir.path().to_path_buf(),
        cli_variables: Vec::new(),
        sqlite_statements: Vec::new(),
    };

    let engine = engine::new_engine(engine::instance_slots(app.components.values()))?;
    let linker = engine::new_linker(&engine)?;
    let cache = CompileCache::new(state_dir.path().join("cache"));
    let component = &app.components["hello"];
    let loaded = LoadedComponent::load(&engine, &linker, &cache, component)?;
    let service = ServicePre::new(loaded.pre.clone()).map_err(|error| {
        anyhow::anyhow!("the hello component does not export wasi:http/handler@0.3: {error}")
    })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let capabilities = runtime.block_on(async {
        let bus = Bus::connect(None).await?;
        AppCapabilities::configure(&app, &runtime_config, &settings, &bus).await
    })?;
    Ok(Prepared {
        engine,
        capabilities: Arc::new(capabilities),
        loaded,
        service,
        runtime,
        _state_dir: state_dir,
    })
}

fn instantiation(c: &mut Criterion) {
    let prepared = prepare().expect("preparing the hello component");
    let Prepared {
        engine,
        capabilities,
        loaded,
        service,
        runtime,
        ..
    } = &prepared;
    let component = &*loaded.config;
    let new_store = || engine::new_store(engine, component, capabilities);

    let mut group = c.benchmark_group("hello");
    group.measurement_time(Duration::from_secs(5));

    // Only `instantiate_async` is timed: the stores are made before and
    // dropped after each batch.
    group.bench_function("instantiate", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(BATCH);
                    left -= batch;
                    let mut stores: Vec<_> = (0..batch).map(|_| new_store()).collect();
                    let start = Instant::now();
                    for store in &mut stores {
                        service
                            .instantiate_async(store)
                            .await
                            .expect("instantiating hello");
                    }
                    elapsed += start.elapsed();
                }
                elapsed
            })
        })
    });

    group.bench_function("new_store", |b| b.iter(new_store));

    group.bench_function("request_instance", |b| {
        b.to_async(runtime).iter(|| async {
            let mut store = new_store();
            service
                .instantiate_async(&mut store)
                .await
                .expect("instantiating hello");
        })
    });
    group.finish();
}

criterion_group!(benches, instantiation);
criterion_main!(benches);
