//! `spindle build`: runs each component's `[component.x.build]` command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::manifest::{self, App};

/// Builds the app's components with the commands their manifest gives.
#[derive(Args, Debug)]
pub struct BuildCommand {
    /// The app's manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub manifest: PathBuf,

    /// Build only this component (repeatable); default: all of them.
    #[arg(short = 'c', long = "component-id")]
    pub components: Vec<String>,
}

impl BuildCommand {
    /// Loads the manifest and builds the chosen components.
    pub fn run(self) -> anyhow::Result<()> {
        let app = manifest::load(&self.manifest)?;
        build_components(&app, &self.components)
    }
}

/// Runs the build commands of `only` (all components when empty), in manifest
/// order, stopping at the first failure with that component's compiler output.
pub fn build_components(app: &App, only: &[String]) -> anyhow::Result<()> {
    for id in only {
        if !app.components.contains_key(id) {
            bail!("no component `{id}` in {}", app.manifest_path.display());
        }
    }
    for component in app.components.values() {
        if !only.is_empty() && !only.contains(&component.id) {
            continue;
        }
        let Some(build) = &component.build else {
            tracing::info!(component = %component.id, "no build command; skipping");
            continue;
        };
        let workdir = build
            .workdir
            .clone()
            .unwrap_or_else(|| app.base_dir.clone());
        for command in &build.commands {
            run_build_command(&component.id, command, &workdir)?;
        }
    }
    Ok(())
}

fn run_build_command(
    component: &str,
    command: &str,
    workdir: &std::path::Path,
) -> anyhow::Result<()> {
    let progress = ProgressBar::new_spinner()
        .with_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .context("progress template")?,
        )
        .with_message(format!("Building {component}: {command}"));
    progress.enable_steady_tick(Duration::from_millis(120));
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(workdir)
        .output()
        .with_context(|| {
            format!(
                "component `{component}`: could not run `{command}` in {}",
                workdir.display()
            )
        })?;
    progress.finish_and_clear();
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!(
            "component `{component}`: build command `{command}` failed ({})",
            output.status
        );
    }
    eprintln!("Finished building {component}");
    Ok(())
}
