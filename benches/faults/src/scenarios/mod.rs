//! The scenarios, one module each, and what they share: where the binary,
//! the demo and the work directory are, and how much load to apply.

mod crash;
mod hostile;
mod hot_deploy;
mod nats_restart;
mod overload;
mod postgres_cut;
mod replicas;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::demo::SECRET;
use crate::report::Outcome;

/// Every scenario, in the order a full run takes them.
pub const ALL: [&str; 7] = [
    "crash-during-sagas",
    "two-replicas",
    "nats-restarts",
    "postgres-cut",
    "hostile-guests",
    "overload",
    "hot-deploy",
];

/// Runs the scenario `name`.
pub async fn run(name: &str, context: &Context) -> anyhow::Result<Outcome> {
    match name {
        "crash-during-sagas" => crash::run(context).await,
        "two-replicas" => replicas::run(context).await,
        "nats-restarts" => nats_restart::run(context).await,
        "postgres-cut" => postgres_cut::run(context).await,
        "hostile-guests" => hostile::run(context).await,
        "overload" => overload::run(context).await,
        "hot-deploy" => hot_deploy::run(context).await,
        other => bail!("no scenario {other}"),
    }
}

/// The scenarios `only` names (all when empty), in run order.
pub fn chosen(only: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if let Some(unknown) = only.iter().find(|name| !ALL.contains(&name.as_str())) {
        bail!(
            "no scenario {unknown}; the scenarios are {}",
            ALL.join(", ")
        );
    }
    Ok(ALL
        .into_iter()
        .filter(|name| only.is_empty() || only.iter().any(|o| o == name))
        .collect())
}

/// `<unix seconds>-<pid>`: a name no other run has.
fn run_name() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format!("{seconds}-{}", std::process::id())
}

/// What `/ready` must show through a dependency's faults: 503 naming it
/// during each, 200 again soon after each ends.
pub struct Readiness {
    /// What one fault is called, e.g. "cut".
    pub fault: &'static str,
    /// The dependency `/ready` must name, e.g. "`bus`".
    pub named: &'static str,
    /// What ends a fault, e.g. "restart".
    pub end: &'static str,
    /// How soon after a fault ends `/ready` must be 200.
    pub within: Duration,
}

impl Readiness {
    /// Checks, into `outcome`, how long `/ready` took to notice each fault
    /// and to recover after it (`None`: it never did).
    pub fn check(
        &self,
        outcome: &mut Outcome,
        noticed: &[Option<Duration>],
        recovered: &[Option<Duration>],
    ) {
        let Readiness {
            fault,
            named,
            end,
            within,
        } = self;
        let missed = noticed.iter().filter(|n| n.is_none()).count();
        outcome.expect(
            format!("`/ready` answered 503 naming {named} during every {fault}"),
            missed == 0,
            || format!("{missed} of {} went unreported", noticed.len()),
        );
        outcome.expect(
            format!("`/ready` back to 200 within {within:?} of every {end}"),
            recovered
                .iter()
                .all(|r| r.is_some_and(|took| took <= *within)),
            || format!("recovery times: {}", times(recovered)),
        );
        outcome.figure(format!("{fault} to `/ready` 503, each"), times(noticed));
        outcome.figure(format!("{end} to `/ready` 200, each"), times(recovered));
        let back: Vec<Duration> = recovered.iter().flatten().copied().collect();
        outcome.figure(
            format!("{end} to `/ready` 200, median / max"),
            format!(
                "{:.0} ms / {:.0} ms",
                crash::median(&back).as_secs_f64() * 1000.0,
                back.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0
            ),
        );
    }
}

/// `120 ms, 340 ms, never, …`.
pub fn times(durations: &[Option<Duration>]) -> String {
    durations
        .iter()
        .map(|took| match took {
            Some(took) => format!("{:.0} ms", took.as_secs_f64() * 1000.0),
            None => "never".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What every scenario starts from.
pub struct Context {
    spindle: PathBuf,
    root: PathBuf,
    /// Cargo's target directory.
    target: PathBuf,
    work: PathBuf,
    /// The compile cache, shared by every run.
    cache: PathBuf,
    quick: bool,
}

impl Context {
    /// Checks that the binary and the demo's guests are built, makes a work
    /// directory of this run's own (`<target>/faults/<time>-<pid>/`: logs
    /// stay there after the run, and runs at the same time keep apart) with
    /// the demo's manifest in it, and starts the local services that are
    /// down.
    pub fn prepare(
        spindle: &Path,
        root: &Path,
        target: &Path,
        quick: bool,
    ) -> anyhow::Result<Self> {
        let root = root
            .canonicalize()
            .with_context(|| format!("the repository root {}", root.display()))?;
        let spindle = root.join(spindle);
        if !spindle.is_file() {
            bail!(
                "{} is not built (cargo build --release -p spindle)",
                spindle.display()
            );
        }
        let target = root.join(target);
        let context = Self {
            spindle,
            work: target.join("faults").join(run_name()),
            cache: target.join("faults/cache"),
            target,
            root,
            quick,
        };
        for guest in ["orders", "saga", "limits", "hello"] {
            let wasm = context.guest_wasm(guest);
            if !wasm.is_file() {
                bail!(
                    "{} is not built (cargo build --release --target wasm32-wasip2 --workspace)",
                    wasm.display()
                );
            }
        }
        std::fs::create_dir_all(&context.work)
            .with_context(|| format!("creating {}", context.work.display()))?;
        context.write_demo_manifest()?;
        crate::services::ensure_running(&context.root)?;
        Ok(context)
    }

    /// The `spindle` binary under test.
    pub fn spindle(&self) -> &Path {
        &self.spindle
    }

    /// Where scenarios keep their files and the hosts' logs.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// `full`, or a tenth of it (at least 1) with `--quick`.
    pub fn scale(&self, full: usize) -> usize {
        if self.quick { (full / 10).max(1) } else { full }
    }

    /// A guest crate's built component, e.g. `limits` →
    /// `target/wasm32-wasip2/release/limits.wasm`.
    pub fn guest_wasm(&self, name: &str) -> PathBuf {
        self.target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")))
    }

    /// `spindle up` arguments for the demo app (the repository's spin.toml)
    /// with its secret, a state directory of `replica`'s own and the shared
    /// compile cache.
    pub fn demo_args(&self, replica: &str) -> Vec<String> {
        let mut args = self.app_args(&self.work.join("demo-spin.toml"), replica);
        args.push("--variable".into());
        args.push(format!("jwt_secret={SECRET}"));
        args
    }

    /// The repository's spin.toml with the guests and migrations at their
    /// absolute paths (the target directory may be elsewhere).
    fn write_demo_manifest(&self) -> anyhow::Result<()> {
        let manifest = std::fs::read_to_string(self.root.join("spin.toml"))
            .context("reading the demo's spin.toml")?
            .replace(
                "source = \"target/",
                &format!("source = \"{}/", self.target.display()),
            )
            .replace(
                "migrations = \"migrations/",
                &format!("migrations = \"{}/migrations/", self.root.display()),
            );
        let path = self.work.join("demo-spin.toml");
        std::fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes a scenario's own app manifest into the work directory.
    pub fn write_manifest(&self, name: &str, manifest: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(format!("{name}-spin.toml"));
        std::fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `spindle up` arguments for the app of `manifest`, with a state
    /// directory of `name`'s own and the shared compile cache.
    pub fn app_args(&self, manifest: &Path, name: &str) -> Vec<String> {
        vec![
            "-f".into(),
            manifest.display().to_string(),
            "--state-dir".into(),
            self.work
                .join(format!("{name}-state"))
                .display()
                .to_string(),
            "--cache-dir".into(),
            self.cache.display().to_string(),
        ]
    }
}
