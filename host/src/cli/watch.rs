//! `spindle watch`: serves the app as `spindle up` does and, when a
//! component's sources change, rebuilds only that component and hot-deploys
//! it into the running host through the deploy path (compile, check exports,
//! swap). The other components keep their instances and in-flight requests;
//! a build that fails, or a version the deploy refuses, leaves the running
//! version serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use glob::{MatchOptions, Pattern};
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::UpCommand;
use super::build::build_each;
use crate::manifest::{App, Component};
use crate::ops::Deployer;

/// Folders whose changes never set off a rebuild when a component names no
/// `watch` patterns: build output, toolchains and version control.
const NEVER_SOURCES: &[&str] = &[
    "target",
    "node_modules",
    "dist",
    ".spin",
    ".git",
    ".venv",
    "__pycache__",
];

/// Serves the app and rebuilds and redeploys each component whose sources change.
#[derive(Args, Debug)]
pub struct WatchCommand {
    #[command(flatten)]
    up: UpCommand,

    /// How long the sources must stay unchanged before a rebuild starts,
    /// so that one save of many files is one rebuild, e.g. `300ms`.
    #[arg(long, default_value = "300ms", value_parser = super::up::parse_timeout)]
    debounce: Duration,
}

impl WatchCommand {
    /// Builds every component, serves the app and watches until Ctrl-C or
    /// SIGTERM.
    pub fn run(mut self) -> anyhow::Result<()> {
        self.up.build = true;
        let debounce = self.debounce;
        self.up
            .run_then(move |app, deployer| start(app, deployer, debounce))
    }
}

/// What sets off one component's rebuild.
struct Sources {
    component: String,
    /// The folder the patterns are relative to: the build's workdir, or the
    /// app's folder.
    base: PathBuf,
    patterns: Vec<Pattern>,
    /// Without `watch` patterns, anything under `base` but [`NEVER_SOURCES`]
    /// and wasm files counts.
    everything: bool,
    /// The component's wasm, which its own build writes.
    output: PathBuf,
    /// Whether the component has build commands; one without is redeployed
    /// when its wasm file changes.
    builds: bool,
}

impl Sources {
    fn of(app: &App, component: &Component) -> anyhow::Result<Self> {
        let output = absolute(&component.source)?;
        let Some(build) = &component.build else {
            let base = output
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| app.base_dir.clone());
            let name = output.file_name().unwrap_or_default().to_string_lossy();
            return Ok(Self {
                component: component.id.clone(),
                base,
                patterns: vec![literal_pattern(&name)],
                everything: false,
                output,
                builds: false,
            });
        };
        let base = absolute(build.workdir.as_ref().unwrap_or(&app.base_dir))?;
        let patterns = build
            .watch
            .iter()
            .map(|text| {
                Pattern::new(text).with_context(|| {
                    format!(
                        "component `{}`: build.watch `{text}` is not a glob pattern",
                        component.id
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            component: component.id.clone(),
            base,
            everything: patterns.is_empty(),
            patterns,
            output,
            builds: true,
        })
    }

    /// Whether a change to `path` calls for this component's rebuild.
    fn matches(&self, path: &Path) -> bool {
        if self.builds && path == self.output {
            return false;
        }
        let Ok(relative) = path.strip_prefix(&self.base) else {
            return false;
        };
        if self.everything {
            let generated = relative
                .components()
                .any(|part| NEVER_SOURCES.contains(&part.as_os_str().to_string_lossy().as_ref()));
            return !generated && path.extension().is_none_or(|ext| ext != "wasm");
        }
        let options = MatchOptions {
            require_literal_separator: true,
            ..MatchOptions::new()
        };
        self.patterns
            .iter()
            .any(|pattern| pattern.matches_path_with(relative, options))
    }

    /// The folders to watch for this component, each with whether to watch
    /// below it too.
    fn folders(&self) -> Vec<(PathBuf, RecursiveMode)> {
        if self.everything {
            return vec![(self.base.clone(), RecursiveMode::Recursive)];
        }
        self.patterns
            .iter()
            .map(|pattern| folder_of(&self.base, pattern.as_str()))
            .collect()
    }

    /// What the startup line shows: the patterns, or the folder.
    fn describe(&self) -> String {
        if self.everything {
            return format!("{}/**", self.base.display());
        }
        let patterns: Vec<&str> = self.patterns.iter().map(Pattern::as_str).collect();
        format!("{} in {}", patterns.join(", "), self.base.display())
    }
}

/// The deepest folder a pattern's matches all lie in, and whether matches
/// can be further down: `src/**/*.rs` is `src`, recursively; `Cargo.toml`
/// is the base itself, on its own.
fn folder_of(base: &Path, pattern: &str) -> (PathBuf, RecursiveMode) {
    let parts: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty()).collect();
    let literal = parts
        .iter()
        .take_while(|part| !part.contains(['*', '?', '[']))
        .count();
    let folder_parts = literal.min(parts.len().saturating_sub(1));
    let folder = parts[..folder_parts]
        .iter()
        .fold(base.to_path_buf(), |folder, part| folder.join(part));
    let rest = &parts[folder_parts..];
    let mode = if rest.len() > 1 || rest.iter().any(|part| part.contains("**")) {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    (folder, mode)
}

/// A pattern matching exactly `name`, whatever characters it holds.
fn literal_pattern(name: &str) -> Pattern {
    Pattern::new(&Pattern::escape(name)).unwrap_or_default()
}

/// `path` made absolute and, where it exists, free of symbolic links, so
/// that it compares equal to the paths file events carry.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(real) = path.canonicalize() {
        return Ok(real);
    }
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    match (parent.map(Path::canonicalize), path.file_name()) {
        (Some(Ok(real_parent)), Some(name)) => Ok(real_parent.join(name)),
        _ => std::path::absolute(path)
            .with_context(|| format!("cannot make {} absolute", path.display())),
    }
}

/// Starts watching `app`'s components; the watcher lives as long as the
/// host's runtime.
fn start(app: &App, deployer: &Arc<Deployer>, debounce: Duration) -> anyhow::Result<()> {
    let sources = app
        .components
        .values()
        .map(|component| Sources::of(app, component))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (changes, changed) = mpsc::unbounded_channel();
    let mut watcher = RecommendedWatcher::new(
        move |event: notify::Result<Event>| match event {
            Ok(event) if is_edit(&event.kind) => {
                let _ = changes.send(event.paths);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("watching the sources: {error}"),
        },
        // A linked toolchain or shared target folder is not a source.
        notify::Config::default().with_follow_symlinks(false),
    )
    .context("starting the file watcher")?;
    let manifest = absolute(&app.manifest_path)?;
    let mut folders: BTreeMap<PathBuf, RecursiveMode> = BTreeMap::new();
    if let Some(folder) = manifest.parent() {
        folders.insert(folder.to_path_buf(), RecursiveMode::NonRecursive);
    }
    for (folder, mode) in sources.iter().flat_map(Sources::folders) {
        let entry = folders.entry(folder).or_insert(mode);
        if mode == RecursiveMode::Recursive {
            *entry = mode;
        }
    }
    for (folder, mode) in folders {
        if let Err(error) = watcher.watch(&folder, mode) {
            eprintln!(
                "warning: cannot watch {} ({error}); changes there are missed",
                folder.display()
            );
        }
    }
    for source in &sources {
        eprintln!("Watching {}: {}", source.component, source.describe());
    }
    let rebuilder = Rebuilder {
        app: Arc::new(app.clone()),
        deployer: deployer.clone(),
        sources,
        manifest,
    };
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives in this task.
        let _watcher = watcher;
        rebuilder.run(changed, debounce).await;
    });
    Ok(())
}

/// Creations, writes, renames and removals; not reads or metadata changes
/// (a build opens every source, which must not set off another build).
fn is_edit(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        _ => false,
    }
}

/// Turns quiet-after-change moments into rebuilds and deploys.
struct Rebuilder {
    app: Arc<App>,
    deployer: Arc<Deployer>,
    sources: Vec<Sources>,
    /// `spin.toml`, whose changes are not applied while running.
    manifest: PathBuf,
}

impl Rebuilder {
    /// Waits for a change, then for `debounce` of quiet, then rebuilds what
    /// changed; edits made during a build are picked up after it.
    async fn run(self, mut changed: mpsc::UnboundedReceiver<Vec<PathBuf>>, debounce: Duration) {
        while let Some(paths) = changed.recv().await {
            let mut components = self.owners(&paths);
            loop {
                match tokio::time::timeout(debounce, changed.recv()).await {
                    Ok(Some(paths)) => components.extend(self.owners(&paths)),
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            if !components.is_empty() {
                self.rebuild(components).await;
            }
        }
    }

    /// The components a change to `paths` calls to rebuild.
    fn owners(&self, paths: &[PathBuf]) -> BTreeSet<String> {
        if paths.contains(&self.manifest) {
            eprintln!(
                "{} changed: restart `spindle watch` to apply it",
                self.manifest.display()
            );
        }
        self.sources
            .iter()
            .filter(|source| paths.iter().any(|path| source.matches(path)))
            .map(|source| source.component.clone())
            .collect()
    }

    /// Builds `components` (those with a build, at once), then deploys each
    /// one that built.
    async fn rebuild(&self, components: BTreeSet<String>) {
        let started = Instant::now();
        let to_build: Vec<String> = self
            .sources
            .iter()
            .filter(|source| source.builds && components.contains(&source.component))
            .map(|source| source.component.clone())
            .collect();
        eprintln!(
            "Changed: {}",
            components.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let mut ready: Vec<String> = components
            .iter()
            .filter(|id| !to_build.contains(id))
            .cloned()
            .collect();
        if !to_build.is_empty() {
            let app = self.app.clone();
            let built = tokio::task::spawn_blocking(move || build_each(&app, &to_build)).await;
            match built {
                Ok(Ok(outcomes)) => {
                    for (id, succeeded) in outcomes {
                        if succeeded {
                            ready.push(id);
                        } else {
                            eprintln!(
                                "{id}: the build failed (output above); the running version keeps serving"
                            );
                        }
                    }
                }
                Ok(Err(error)) => eprintln!("error: rebuilding: {error:#}"),
                Err(error) => eprintln!("error: the build task stopped: {error}"),
            }
        }
        for id in ready {
            self.deploy(&id, started).await;
        }
    }

    /// Swaps the freshly built wasm of `id` in, or says why it stays as it was.
    async fn deploy(&self, id: &str, started: Instant) {
        let Some(component) = self.app.components.get(id) else {
            return;
        };
        let (deployer, name, source) = (
            self.deployer.clone(),
            id.to_owned(),
            component.source.clone(),
        );
        // Reading the wasm and compiling it both block: off the workers.
        let deployed = tokio::task::spawn_blocking(move || {
            let wasm = std::fs::read(&source)
                .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
            deployer
                .deploy(&name, &wasm)
                .map_err(|error| error.to_string())
        });
        match deployed.await {
            Ok(Ok(_)) => eprintln!(
                "Rebuilt and deployed {id} in {:.1}s",
                started.elapsed().as_secs_f64()
            ),
            Ok(Err(error)) => eprintln!(
                "{id}: the new version was refused: {error}; the running version keeps serving"
            ),
            Err(error) => eprintln!("error: the deploy of {id} stopped: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(base: &Path, patterns: &[&str]) -> Sources {
        Sources {
            component: "web".into(),
            base: base.to_path_buf(),
            everything: patterns.is_empty(),
            patterns: patterns
                .iter()
                .map(|p| Pattern::new(p).expect("pattern"))
                .collect(),
            output: base.join("target/wasm32-wasip2/release/web.wasm"),
            builds: true,
        }
    }

    #[test]
    fn watch_patterns_match_relative_to_the_workdir() {
        let base = Path::new("/app/web");
        let web = sources(base, &["src/**/*.rs", "Cargo.toml"]);
        assert!(web.matches(&base.join("src/lib.rs")));
        assert!(web.matches(&base.join("src/deep/mod.rs")));
        assert!(web.matches(&base.join("Cargo.toml")));
        assert!(!web.matches(&base.join("src/notes.txt")));
        assert!(!web.matches(&base.join("other/Cargo.toml")));
        assert!(!web.matches(Path::new("/app/api/src/lib.rs")));
    }

    #[test]
    fn without_patterns_everything_but_build_output_counts() {
        let base = Path::new("/app/web");
        let web = sources(base, &[]);
        assert!(web.matches(&base.join("src/index.ts")));
        assert!(web.matches(&base.join("package.json")));
        assert!(!web.matches(&base.join("node_modules/x/index.js")));
        assert!(!web.matches(&base.join("target/debug/build.log")));
        assert!(!web.matches(&base.join("web.wasm")));
    }

    #[test]
    fn a_component_never_rebuilds_for_its_own_output() {
        let base = Path::new("/app/web");
        let web = sources(base, &["**/*"]);
        assert!(!web.matches(&base.join("target/wasm32-wasip2/release/web.wasm")));
        assert!(web.matches(&base.join("src/lib.rs")));
    }

    #[test]
    fn each_pattern_is_watched_from_its_deepest_literal_folder() {
        let base = Path::new("/app");
        let folder = |pattern| folder_of(base, pattern);
        assert_eq!(
            folder("src/**/*.rs"),
            (base.join("src"), RecursiveMode::Recursive)
        );
        assert_eq!(
            folder("Cargo.toml"),
            (base.to_path_buf(), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            folder("assets/*.css"),
            (base.join("assets"), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            folder("*/src/*.py"),
            (base.to_path_buf(), RecursiveMode::Recursive)
        );
        assert_eq!(
            folder("static/img/logo.png"),
            (base.join("static/img"), RecursiveMode::NonRecursive)
        );
    }
}
