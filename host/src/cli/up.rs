//! `spindle up`: loads the app, compiles its components and serves them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bus::Bus;
use crate::capabilities::{AppCapabilities, HostSettings};
use crate::engine::{self, CompileCache, EpochTicker, LoadedComponent};
use crate::health::Probe;
use crate::listener::ConnectionLimits;
use crate::manifest::{self, App, RuntimeConfig};
use crate::ops::{self, Deployer, Readiness};
use crate::triggers;
use crate::triggers::http::HttpTrigger;
use crate::triggers::http::routes::Route;
use crate::triggers::nats::NatsTrigger;
use crate::triggers::redis::RedisTrigger;

/// Runs a Spin app.
#[derive(Args, Debug)]
pub struct UpCommand {
    /// The app's manifest, or a directory holding `spin.toml`.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub manifest: PathBuf,

    /// Address the HTTP trigger listens on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:3000", env = "SPINDLE_LISTEN")]
    pub listen: SocketAddr,

    /// Address of the operations listener (health, deploy); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:3001", env = "SPINDLE_OPS_LISTEN")]
    pub ops_listen: SocketAddr,

    /// How long a client may take to send a request's headers, on the app
    /// and ops listeners, before its connection is closed, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "SPINDLE_HEADER_TIMEOUT")]
    pub header_timeout: Duration,

    /// How long a kept-alive connection may stay open with no request in
    /// flight, on the app and ops listeners, e.g. `60s`. On HTTP/1, hyper
    /// also bounds the wait for the next request by `--header-timeout`.
    #[arg(long, default_value = "60s", value_parser = parse_timeout, env = "SPINDLE_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,

    /// Open connections each listener (app, ops) holds at most; more wait
    /// to be accepted.
    #[arg(long, default_value_t = 10_000, env = "SPINDLE_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Bearer token the deploy API requires; without one, deploys are refused.
    /// An empty value or the example Secret's placeholder stops start-up.
    #[arg(long, env = "SPINDLE_DEPLOY_TOKEN", hide_env_values = true)]
    pub deploy_token: Option<String>,

    /// Runtime config (TOML) naming the backends of stores, databases and the bus.
    #[arg(long)]
    pub runtime_config_file: Option<PathBuf>,

    /// Run the components' build commands first.
    #[arg(long)]
    pub build: bool,

    /// Run only this component (repeatable); routes of the others are absent.
    #[arg(short = 'c', long = "component-id")]
    pub components: Vec<String>,

    /// Set an app variable, `name=value` (repeatable); beats the manifest default.
    #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = parse_variable)]
    pub variables: Vec<(String, String)>,

    /// Where the app keeps its state (key-value and SQLite files, logs).
    /// Default: `.spin` beside the manifest.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,

    /// SQL run against the `default` SQLite database before serving; `@file`
    /// reads it from a file (repeatable, in order).
    #[arg(long = "sqlite", value_name = "SQL|@FILE")]
    pub sqlite: Vec<String>,

    /// Where compiled components are cached between runs.
    /// Default: `$XDG_CACHE_HOME/spindle` or `~/.cache/spindle`.
    #[arg(long, env = "SPINDLE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl UpCommand {
    /// Validates everything, binds, prints the routes and serves until
    /// Ctrl-C or SIGTERM.
    pub fn run(self) -> anyhow::Result<()> {
        self.run_then(|_, _| Ok(()))
    }

    /// Like [`UpCommand::run`], calling `started` with the app and its
    /// deployer once every trigger is ready, before serving. It runs on the
    /// host's async runtime, so it may spawn tasks that live as long as the
    /// host.
    pub(super) fn run_then(
        self,
        started: impl FnOnce(&App, &Arc<Deployer>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let app = manifest::load(&manifest_file(&self.manifest))?.select(&self.components)?;
        let runtime_config = match &self.runtime_config_file {
            Some(path) => manifest::load_runtime_config(path)?,
            None => RuntimeConfig::default(),
        };
        check_variables(&app, &self.variables)?;
        ops::check_token(self.deploy_token.as_deref())?;
        let selected: Vec<&manifest::Component> = app.components.values().collect();
        if self.build {
            super::build::build_components(&app, &self.components)?;
        }
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| app.base_dir.join(".spin"));
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating the state dir {}", state_dir.display()))?;
        let settings = HostSettings {
            state_dir,
            cli_variables: self.variables.clone(),
            sqlite_statements: sqlite_statements(&self.sqlite)?,
        };

        let engine = engine::new_engine(engine::instance_slots(selected.iter().copied()))?;
        let linker = engine::new_linker(&engine)?;
        let cache = CompileCache::new(self.cache_dir.clone().unwrap_or_else(default_cache_dir));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        // The components load on a thread of their own while the runtime
        // connects the bus and opens the databases: neither needs the other,
        // and a warm start spends about as long on each.
        let (components, configured) = std::thread::scope(|scope| {
            let loading = scope.spawn(|| {
                let components = selected
                    .iter()
                    .map(|component| LoadedComponent::load(&engine, &linker, &cache, component))
                    .collect::<anyhow::Result<Vec<_>>>();
                engine::return_freed_memory();
                components
            });
            let configured = runtime.block_on(async {
                let bus = Bus::connect(runtime_config.messaging.as_ref()).await?;
                let capabilities =
                    AppCapabilities::configure(&app, &runtime_config, &settings, &bus).await?;
                anyhow::Ok((bus, Arc::new(capabilities)))
            });
            let components = loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (components, configured)
        });
        let components = components?;
        let (bus, capabilities) = configured?;

        runtime.block_on(async {
            let _ticker = EpochTicker::start(&engine);
            let admissions = triggers::admissions(&components);
            let trigger = Arc::new(HttpTrigger::new(
                &app,
                &engine,
                &capabilities,
                &components,
                &admissions,
            )?);
            // `http://self` and `http://<id>.spin.internal` are served by the trigger.
            capabilities.outbound_http.set_local_dispatch(&trigger);
            let nats = Arc::new(
                NatsTrigger::subscribe(
                    &app,
                    &engine,
                    &capabilities,
                    &components,
                    &admissions,
                    &bus,
                )
                .await?,
            );
            let redis = Arc::new(RedisTrigger::new(
                &app,
                &engine,
                &capabilities,
                &components,
                &admissions,
            )?);
            let mut subscriptions = nats.subscriptions();
            subscriptions.extend(redis.subscriptions());
            let redis_channels = redis.subscribe().await?;
            let listener = TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("listening on {}", self.listen))?;
            let ops_listener = TcpListener::bind(self.ops_listen)
                .await
                .with_context(|| format!("--ops-listen {}", self.ops_listen))?;
            print_routes(listener.local_addr()?, trigger.routes());
            print_subscriptions(&subscriptions);
            println!("Operations on http://{}", ops_listener.local_addr()?);

            let deployer = Arc::new(Deployer::new(
                engine.clone(),
                linker,
                cache,
                (trigger.clone(), nats.clone(), redis.clone()),
                selected.iter().map(|component| (*component).clone()),
                self.deploy_token.clone(),
            ));
            started(&app, &deployer)?;
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            let mut probes = capabilities.probes();
            probes.push(bus.probe());
            probes.extend(components.iter().map(component_probe));
            let ops = ops::Ops {
                deployer,
                readiness: Arc::new(Readiness::new(probes)),
                admissions: admissions.clone(),
            };
            let limits = ConnectionLimits {
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections as usize,
            };
            let ops = tokio::spawn(ops::serve(
                ops_listener,
                ops,
                limits,
                stop_requested(stopped.clone()),
            ));
            let consuming = {
                let nats = nats.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { nats.run(stopped).await })
            };
            let redis_consuming: Vec<_> = redis_channels
                .into_iter()
                .map(|channel| tokio::spawn(channel.run(stopped.clone())))
                .collect();
            trigger
                .serve(listener, limits, stop_requested(stopped))
                .await?;
            consuming.await.context("the NATS trigger task")?;
            for channel in redis_consuming {
                channel.await.context("a Redis trigger task")?;
            }
            ops.await.context("the ops listener task")??;
            Ok(())
        })
    }
}

/// A loaded component is ready: it compiled, linked and has its trigger.
fn component_probe(component: &LoadedComponent) -> Probe {
    Probe::new(
        format!("component:{}", component.config.id),
        "component",
        || Box::pin(async { Ok(()) }),
    )
}

/// `--sqlite` values: SQL text, or `@path` to read it from a file.
fn sqlite_statements(values: &[String]) -> anyhow::Result<Vec<String>> {
    values
        .iter()
        .map(|value| match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--sqlite @{path}: cannot read the file")),
            None => Ok(value.clone()),
        })
        .collect()
}

/// `-f` takes a file or a directory holding `spin.toml`, like `spin up`.
fn manifest_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("spin.toml")
    } else {
        path.to_path_buf()
    }
}

fn parse_variable(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

/// A `--variable` the app does not declare is almost always a typo.
fn check_variables(app: &App, variables: &[(String, String)]) -> anyhow::Result<()> {
    for (name, _) in variables {
        if !app.variables.contains_key(name) {
            bail!(
                "--variable {name}: {} declares no variable `{name}`",
                app.manifest_path.display()
            );
        }
    }
    Ok(())
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("spindle")
}

/// Prints what `spin up` prints, so scripts written for Spin keep working.
fn print_routes(address: SocketAddr, routes: &[Route]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Serving http://{address}");
    let _ = writeln!(out, "Available Routes:");
    for route in routes {
        let wildcard = if route.is_wildcard() {
            " (wildcard)"
        } else {
            ""
        };
        let prefix = route.prefix().trim_end_matches('/');
        let _ = writeln!(
            out,
            "  {}: http://{address}{prefix}{wildcard}",
            route.component
        );
    }
    let _ = out.flush();
}

/// Lists the message subscriptions after the routes, in the same style.
fn print_subscriptions(subscriptions: &[(String, String)]) {
    if subscriptions.is_empty() {
        return;
    }
    println!("Subscriptions:");
    for (component, subject) in subscriptions {
        println!("  {component}: {subject}");
    }
}

/// Resolves once shutdown was requested on `stopped`.
async fn stop_requested(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A positive duration flag (`10s`, `500ms`), in the manifest's syntax.
pub(super) fn parse_timeout(text: &str) -> Result<Duration, String> {
    match manifest::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be longer than 0s".into()),
        Err(error) => Err(error.to_string()),
    }
}
