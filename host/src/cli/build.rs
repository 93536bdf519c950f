//! `spindle build`: runs each component's `[component.x.build]` commands,
//! independent components at the same time, one progress line each.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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

/// Runs the build commands of `only` (all components when empty), up to the
/// CPU count at a time. Every started build runs to its end even when another
/// fails, so one run reports every broken component; results and compiler
/// output are printed in manifest order.
pub fn build_components(app: &App, only: &[String]) -> anyhow::Result<()> {
    let outcomes = run_jobs(&jobs(app, only)?, workers());
    report(&outcomes)
}

/// Builds like [`build_components`], printing the same report, and says
/// which components built: their ids in manifest order, each with whether
/// its build succeeded. Components without a build section are left out.
pub(super) fn build_each(app: &App, only: &[String]) -> anyhow::Result<Vec<(String, bool)>> {
    let outcomes = run_jobs(&jobs(app, only)?, workers());
    // The report has printed every failure; the caller gets them one by one.
    let _ = report(&outcomes);
    Ok(outcomes
        .into_iter()
        .map(|outcome| (outcome.component, outcome.result.is_ok()))
        .collect())
}

/// As many builds at once as the machine has CPUs.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One component's build: its commands, run in order in `workdir`.
struct Job {
    component: String,
    commands: Vec<String>,
    workdir: PathBuf,
}

/// How one component's build ended.
struct Outcome {
    component: String,
    elapsed: Duration,
    result: Result<(), Failure>,
}

/// The command that failed and what it printed.
struct Failure {
    command: String,
    /// `None` when the command could not be started at all.
    status: Option<ExitStatus>,
    /// The command's stdout then stderr, or why it could not start.
    output: String,
}

/// The components to build, in manifest order; components without a build
/// section are skipped (their Wasm file comes from elsewhere).
fn jobs(app: &App, only: &[String]) -> anyhow::Result<Vec<Job>> {
    for id in only {
        if !app.components.contains_key(id) {
            bail!("no component `{id}` in {}", app.manifest_path.display());
        }
    }
    let mut jobs = Vec::new();
    for component in app.components.values() {
        if !only.is_empty() && !only.contains(&component.id) {
            continue;
        }
        let Some(build) = &component.build else {
            tracing::info!(component = %component.id, "no build command; skipping");
            continue;
        };
        jobs.push(Job {
            component: component.id.clone(),
            commands: build.commands.clone(),
            workdir: build
                .workdir
                .clone()
                .unwrap_or_else(|| app.base_dir.clone()),
        });
    }
    Ok(jobs)
}

/// Runs `jobs` on up to `workers` threads, each taking the next job in
/// manifest order; returns the outcomes in the same order as `jobs`.
fn run_jobs(jobs: &[Job], workers: usize) -> Vec<Outcome> {
    let progress = MultiProgress::new();
    // Bars are added up front so the lines stay in manifest order on screen.
    let bars: Vec<ProgressBar> = jobs
        .iter()
        .map(|job| {
            let bar = progress.add(ProgressBar::new_spinner().with_style(spinner_style()));
            bar.set_message(format!("{}: waiting", job.component));
            bar
        })
        .collect();
    let next = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Option<Outcome>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    let outcome = run_job(job, &bars[index]);
                    if let Ok(mut slot) = outcomes[index].lock() {
                        *slot = Some(outcome);
                    }
                }
            });
        }
    });
    outcomes
        .into_iter()
        .zip(jobs)
        .map(|(slot, job)| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| Outcome {
                component: job.component.clone(),
                elapsed: Duration::ZERO,
                result: Err(Failure {
                    command: job.commands.join(" && "),
                    status: None,
                    output: "the build thread stopped before reporting".to_owned(),
                }),
            })
        })
        .collect()
}

fn spinner_style() -> ProgressStyle {
    // The template is a constant; it only fails to parse if edited wrongly,
    // which the unit tests would show.
    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Runs one component's commands in order, stopping at the first failure.
fn run_job(job: &Job, bar: &ProgressBar) -> Outcome {
    let started = Instant::now();
    bar.reset_elapsed();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut result = Ok(());
    for command in &job.commands {
        bar.set_message(format!("{}: {command}", job.component));
        result = run_command(command, &job.workdir);
        if result.is_err() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let verdict = if result.is_ok() { "done" } else { "FAILED" };
    bar.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.finish_with_message(format!(
        "{} {}: {verdict} in {:.1}s",
        if result.is_ok() { "✓" } else { "✗" },
        job.component,
        elapsed.as_secs_f64()
    ));
    Outcome {
        component: job.component.clone(),
        elapsed,
        result,
    }
}

fn run_command(command: &str, workdir: &Path) -> Result<(), Failure> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(workdir)
        .output()
        .map_err(|error| Failure {
            command: command.to_owned(),
            status: None,
            output: format!("could not run it in {}: {error}", workdir.display()),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Failure {
        command: command.to_owned(),
        status: Some(output.status),
        output: text,
    })
}

/// Prints each failed component's compiler output (manifest order) and fails
/// naming every failed component.
fn report(outcomes: &[Outcome]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for outcome in outcomes {
        match &outcome.result {
            Ok(()) => eprintln!(
                "Finished building {} in {:.1}s",
                outcome.component,
                outcome.elapsed.as_secs_f64()
            ),
            Err(failure) => {
                eprint!("{}", failure_text(&outcome.component, failure));
                failed.push(format!("`{}`", outcome.component));
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    bail!("build failed for component(s) {}", failed.join(", "))
}

/// The block printed for one failed build: which component and command,
/// then everything the command printed.
fn failure_text(component: &str, failure: &Failure) -> String {
    let how = failure
        .status
        .map_or_else(|| "did not start".to_owned(), |status| status.to_string());
    let mut text = format!(
        "error: component `{component}`: build command `{}` failed ({how}):\n{}",
        failure.command, failure.output
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_in(dir: &Path, components: &[(&str, &str)]) -> App {
        let mut text = String::from("spin_manifest_version = 2\n[application]\nname = \"b\"\n");
        for (id, _) in components {
            text.push_str(&format!(
                "[[trigger.http]]\nroute = \"/{id}\"\ncomponent = \"{id}\"\n"
            ));
        }
        for (id, command) in components {
            text.push_str(&format!(
                "[component.{id}]\nsource = \"{id}.wasm\"\n[component.{id}.build]\ncommand = '''{command}'''\n"
            ));
        }
        manifest::parse(&text, &dir.join("spin.toml")).expect("test manifest parses")
    }

    /// Each command marks itself started and waits (at most ~10 s) for the
    /// other's mark: both succeed only if they ran at the same time.
    #[test]
    fn independent_builds_run_at_the_same_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wait_for = |me: &str, other: &str| {
            format!(
                "touch {me}.started; i=0; while [ ! -f {other}.started ]; do \
                 i=$((i+1)); [ $i -gt 200 ] && echo gave up >&2 && exit 1; sleep 0.05; done"
            )
        };
        let app = app_in(
            dir.path(),
            &[
                ("one", &wait_for("one", "two")),
                ("two", &wait_for("two", "one")),
            ],
        );
        let outcomes = run_jobs(&jobs(&app, &[]).expect("jobs"), 2);
        for outcome in &outcomes {
            if let Err(failure) = &outcome.result {
                panic!("{}", failure_text(&outcome.component, failure));
            }
        }
        assert!(report(&outcomes).is_ok());
    }

    #[test]
    fn every_failed_component_is_named_with_its_output_in_manifest_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_in(
            dir.path(),
            &[
                (
                    "alpha",
                    "echo alpha compiler says no; echo 'error[E0308]: mismatched' >&2; exit 3",
                ),
                ("beta", "touch beta.built"),
                ("gamma", "echo gamma broke >&2; false"),
            ],
        );
        let outcomes = run_jobs(&jobs(&app, &[]).expect("jobs"), 1);
        let order: Vec<&str> = outcomes.iter().map(|o| o.component.as_str()).collect();
        assert_eq!(order, ["alpha", "beta", "gamma"]);
        // A failure does not stop the other builds.
        assert!(dir.path().join("beta.built").is_file());
        let Err(alpha) = &outcomes[0].result else {
            panic!("alpha should fail")
        };
        let text = failure_text("alpha", alpha);
        assert!(text.contains("component `alpha`"), "{text}");
        assert!(text.contains("alpha compiler says no"), "{text}");
        assert!(text.contains("error[E0308]: mismatched"), "{text}");
        let error = report(&outcomes).expect_err("the build fails").to_string();
        assert_eq!(error, "build failed for component(s) `alpha`, `gamma`");
    }

    #[test]
    fn only_builds_the_chosen_component_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_in(
            dir.path(),
            &[("a", "touch a.built"), ("b", "touch b.built")],
        );
        build_components(&app, &["b".to_owned()]).expect("build b");
        assert!(dir.path().join("b.built").is_file());
        assert!(!dir.path().join("a.built").exists());
        let error = build_components(&app, &["nope".to_owned()]).expect_err("unknown id");
        assert!(error.to_string().contains("no component `nope`"), "{error}");
    }
}
