//! Spin's `files`: read-only files and directories in the component's
//! `wasi:filesystem`.
//!
//! Granted by `[component.x] files = [...]`: a glob pattern (relative to the
//! manifest's folder) places each matching file at the same relative path
//! under `/`; `{ source = "dir", destination = "/path" }` mounts a folder
//! there, and a single file may be placed the same way. `exclude_files`
//! globs take files out of the patterns' matches. The files are gathered at
//! start-up into one folder per component under the state dir (hard links
//! where the filesystem allows, copies elsewhere), mounted read-only as the
//! guest's `/`: a file the manifest does not name is never reachable, and
//! nothing can be written.

use std::collections::HashMap;
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::HostSettings;
use crate::manifest::{App, Component, FileMount};

/// Every component's files, gathered at start-up.
#[derive(Default)]
pub struct AppState {
    /// Per component: the folder mounted, read-only, as the guest's `/`.
    roots: HashMap<String, Arc<PathBuf>>,
}

impl AppState {
    /// Gathers each component's files; fails naming the entry that matches
    /// nothing usable (a missing source, a file outside the app's folder).
    pub fn configure(app: &App, settings: &HostSettings) -> anyhow::Result<Self> {
        let mut roots = HashMap::new();
        for component in app.components.values() {
            if component.files.is_empty() {
                continue;
            }
            let root = settings.state_dir.join("files").join(&component.id);
            gather(app, component, &root)
                .with_context(|| format!("[component.{}] files", component.id))?;
            roots.insert(component.id.clone(), Arc::new(root));
        }
        Ok(Self { roots })
    }

    /// Mounts `component`'s files in the instance's WASI context.
    pub fn preopen(&self, component: &str, wasi: &mut WasiCtxBuilder) {
        let Some(root) = self.roots.get(component) else {
            return;
        };
        // Gathered at start-up; a folder removed since fails the guest's
        // reads, not the request.
        if let Err(error) = wasi.preopened_dir(root.as_path(), "/", FsPerms::ReadOnly) {
            tracing::warn!(%component, root = %root.display(), "cannot mount files: {error:#}");
        }
    }
}

/// Places every file the component's `files` name under `root`, at the
/// path the guest will see it at.
fn gather(app: &App, component: &Component, root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let excluded = excluded_files(app, component)?;
    for entry in &component.files {
        match entry {
            FileMount::Pattern(pattern) => {
                for file in matching_files(&app.base_dir, pattern)? {
                    if excluded.contains(&file) {
                        continue;
                    }
                    let relative = file.strip_prefix(&app.base_dir).with_context(|| {
                        format!(
                            "`{pattern}` matches {}, outside the app's folder",
                            file.display()
                        )
                    })?;
                    place(&file, &root.join(relative))?;
                }
            }
            FileMount::Placement {
                source,
                destination,
            } => {
                let target = root.join(guest_relative(destination)?);
                if source.is_file() {
                    place(source, &target)?;
                } else if source.is_dir() {
                    for file in matching_files(source, "**/*")? {
                        let relative = file.strip_prefix(source).unwrap_or(&file);
                        place(&file, &target.join(relative))?;
                    }
                } else {
                    bail!("source {} does not exist", source.display());
                }
            }
        }
    }
    Ok(())
}

/// Files (not folders) matching `pattern`, relative to `base_dir`.
fn matching_files(base_dir: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let full = base_dir.join(pattern);
    let full = full.to_str().context("the pattern's path is not UTF-8")?;
    let paths = glob::glob(full).with_context(|| format!("`{pattern}` is not a glob pattern"))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.with_context(|| format!("reading the files `{pattern}` matches"))?;
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The files `exclude_files` takes out of the patterns' matches.
fn excluded_files(app: &App, component: &Component) -> anyhow::Result<Vec<PathBuf>> {
    let mut excluded = Vec::new();
    for pattern in &component.exclude_files {
        excluded.extend(
            matching_files(&app.base_dir, pattern)
                .with_context(|| format!("exclude_files `{pattern}`"))?,
        );
    }
    Ok(excluded)
}

/// `/a/b.txt` as `a/b.txt`; a destination that climbs out (`..`) is refused.
fn guest_relative(destination: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(destination);
    if path.components().any(|part| part == PathPart::ParentDir) {
        bail!("destination \"{destination}\" must not contain `..`");
    }
    Ok(path
        .components()
        .filter(|part| matches!(part, PathPart::Normal(_)))
        .collect())
}

/// Puts `file` at `target`: a hard link where the filesystem allows one, a
/// copy elsewhere.
fn place(file: &Path, target: &Path) -> anyhow::Result<()> {
    if let Some(folder) = target.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    if std::fs::hard_link(file, target).is_err() {
        std::fs::copy(file, target)
            .with_context(|| format!("copying {} to {}", file.display(), target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(dir: &Path, files: &str) -> App {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [component.c]\nsource = \"c.wasm\"\n{files}\n"
        );
        crate::manifest::parse(&manifest, &dir.join("spin.toml")).expect("valid manifest")
    }

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn patterns_keep_their_paths_and_exclusions_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "static/index.html", "index");
        write(dir.path(), "static/css/site.css", "css");
        write(dir.path(), "static/secret.txt", "secret");
        write(dir.path(), "notes.txt", "notes");
        let app = app_with(
            dir.path(),
            "files = [\"static/**/*\"]\nexclude_files = [\"static/secret.txt\"]",
        );
        let root = dir.path().join("staged");
        gather(&app, &app.components["c"], &root).unwrap();
        let read = |file: &str| std::fs::read_to_string(root.join(file)).ok();
        assert_eq!(read("static/index.html").as_deref(), Some("index"));
        assert_eq!(read("static/css/site.css").as_deref(), Some("css"));
        assert_eq!(read("static/secret.txt"), None);
        assert_eq!(read("notes.txt"), None);
    }

    #[test]
    fn folders_and_files_are_placed_at_their_destination() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "assets/logo.svg", "svg");
        write(dir.path(), "assets/js/app.js", "js");
        write(dir.path(), "config/app.json", "{}");
        let app = app_with(
            dir.path(),
            "files = [{ source = \"assets\", destination = \"/\" }, \
             { source = \"config/app.json\", destination = \"/etc/app.json\" }]",
        );
        let root = dir.path().join("staged");
        gather(&app, &app.components["c"], &root).unwrap();
        let read = |file: &str| std::fs::read_to_string(root.join(file)).ok();
        assert_eq!(read("logo.svg").as_deref(), Some("svg"));
        assert_eq!(read("js/app.js").as_deref(), Some("js"));
        assert_eq!(read("etc/app.json").as_deref(), Some("{}"));
    }

    #[test]
    fn a_missing_source_or_a_climbing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", "a");
        for files in [
            "files = [{ source = \"missing\", destination = \"/m\" }]",
            "files = [{ source = \"a.txt\", destination = \"/../a.txt\" }]",
        ] {
            let app = app_with(dir.path(), files);
            let root = dir.path().join("staged");
            assert!(
                gather(&app, &app.components["c"], &root).is_err(),
                "{files}"
            );
        }
    }
}
