//! Spindle's fault suite. Runs the real `spindle` binary through the faults
//! an operator meets — the host killed mid-saga, a second replica, the
//! broker restarted, the database cut off, hostile guests, overload, hot
//! deploys under load — on the local PostgreSQL, a private NATS JetStream and
//! Redis, checks what must hold afterwards and writes `RELIABILITY.md`.
//!
//! It exits non-zero when any invariant was violated or a scenario could not
//! run. `benches/run --faults` builds what it needs and runs it.

mod demo;
mod host;
mod report;
mod scenarios;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use report::{Outcome, Report};

#[derive(Parser)]
#[command(about = "Runs Spindle's fault scenarios and writes RELIABILITY.md")]
struct Options {
    /// The `spindle` binary under test (relative to the root).
    #[arg(long, default_value = "target/release/spindle")]
    spindle: PathBuf,
    /// The repository root: the demo's spin.toml and its migrations.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Cargo's target directory (relative to the root), where the guests
    /// were built for wasm32-wasip2.
    #[arg(long, env = "CARGO_TARGET_DIR", default_value = "target")]
    target_dir: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "benches/RELIABILITY.md")]
    out: PathBuf,
    /// Runs only these scenarios (by name; repeatable).
    #[arg(long = "only", value_name = "SCENARIO")]
    only: Vec<String>,
    /// A tenth of the load and faults: checks the harness, not the platform.
    #[arg(long)]
    quick: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("faults: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the chosen scenarios and writes the report; true when all held.
async fn run(options: Options) -> anyhow::Result<bool> {
    let context = scenarios::Context::prepare(
        &options.spindle,
        &options.root,
        &options.target_dir,
        options.quick,
    )?;
    let chosen = scenarios::chosen(&options.only)?;
    let mut report = Report::new(options.quick);
    for name in chosen {
        eprintln!("== {name}");
        let started = Instant::now();
        let outcome = match scenarios::run(name, &context).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::could_not_run(name, &error),
        };
        let outcome = outcome.took(started.elapsed());
        eprintln!("   {}", outcome.summary());
        report.add(outcome);
    }
    std::fs::write(&options.out, report.markdown())
        .map_err(|error| anyhow::anyhow!("writing {}: {error}", options.out.display()))?;
    eprintln!("{}", report.summary_line());
    Ok(report.all_held())
}
