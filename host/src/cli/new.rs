//! `spindle new TEMPLATE NAME` (a new app in its own folder) and
//! `spindle add TEMPLATE NAME` (a component added to an existing app).
//!
//! Both check everything first and write nothing half: files go into a
//! staging folder next to their destination, which is renamed into place
//! only once complete; `add` replaces `spin.toml` by a rename too, after the
//! extended manifest has loaded cleanly.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::templates::{self, Placeholders, Placement, Template};
use crate::manifest;

/// Creates a new app from a template.
#[derive(Args, Debug)]
pub struct NewCommand {
    /// The template (see `--list`).
    #[arg(required_unless_present = "list")]
    pub template: Option<String>,

    /// The app's name, also its first component's id (kebab-case).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,

    /// The folder to create; default: `./NAME`. It must not exist, or be
    /// an empty folder.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,

    /// Lists the templates and exits.
    #[arg(long)]
    pub list: bool,
}

/// Adds a component, made from a template, to an existing app.
#[derive(Args, Debug)]
pub struct AddCommand {
    /// The template (see `spindle new --list`).
    pub template: String,

    /// The component's id (kebab-case), also its folder next to the manifest.
    pub name: String,

    /// The app's manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub manifest: PathBuf,
}

impl NewCommand {
    /// Writes the app, or lists the templates.
    pub fn run(self) -> anyhow::Result<()> {
        if self.list {
            for template in templates::all()? {
                println!("{:<14} {}", template.name, template.description);
            }
            return Ok(());
        }
        let (Some(template), Some(name)) = (self.template, self.name) else {
            bail!("give a TEMPLATE and a NAME (see `spindle new --list`)");
        };
        let output = self.output.unwrap_or_else(|| PathBuf::from(&name));
        create_app(&templates::find(&template)?, &name, &output)?;
        println!(
            "Created {} from {template}: `cd {}`, then `spindle build` and `spindle up`",
            output.display(),
            output.display()
        );
        Ok(())
    }
}

impl AddCommand {
    /// Writes the component and extends the manifest.
    pub fn run(self) -> anyhow::Result<()> {
        add_component(
            &templates::find(&self.template)?,
            &self.name,
            &self.manifest,
        )?;
        println!(
            "Added component `{}` ({}) to {}",
            self.name,
            self.template,
            self.manifest.display()
        );
        Ok(())
    }
}

/// Creates `output` holding a `spin.toml` and the template's component.
pub fn create_app(template: &Template, name: &str, output: &Path) -> anyhow::Result<()> {
    let placeholders = Placeholders::new(name, Placement::AppRoot)?;
    if output.exists() {
        let empty = output.is_dir()
            && std::fs::read_dir(output)
                .with_context(|| format!("reading {}", output.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists; choose another NAME or --output",
                output.display()
            );
        }
    }
    let mut files = template.files(&placeholders)?;
    let manifest = format!(
        "spin_manifest_version = 2\n\n[application]\nname = \"{name}\"\nversion = \"0.1.0\"\ndescription = \"{}\"\n\n{}",
        template.description.replace('"', "'"),
        template.manifest_fragment(&placeholders)
    );
    files.push((PathBuf::from("spin.toml"), manifest.into_bytes()));
    write_folder(output, &files, |staging| {
        manifest::load(&staging.join("spin.toml"))
            .map(drop)
            .context("the template made a manifest that does not load (a bug in the template)")
    })
}

/// Writes the template's component into `<manifest dir>/<name>/` and appends
/// its triggers and table to the manifest.
pub fn add_component(template: &Template, name: &str, manifest_path: &Path) -> anyhow::Result<()> {
    let placeholders = Placeholders::new(name, Placement::Subfolder)?;
    let app = manifest::load(manifest_path)?;
    if app.components.contains_key(name) {
        bail!(
            "{} already has a component `{name}`; choose another NAME",
            manifest_path.display()
        );
    }
    let folder = app.base_dir.join(name);
    if folder.exists() {
        bail!("{} already exists; choose another NAME", folder.display());
    }
    let old = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let separator = if old.ends_with('\n') { "\n" } else { "\n\n" };
    let extended = format!(
        "{old}{separator}{}",
        template.manifest_fragment(&placeholders)
    );
    // The extended manifest is checked where it will live, so its relative
    // paths resolve the same; a clash (a route, a subject) stops here.
    let staged_manifest = staging_path(manifest_path);
    std::fs::write(&staged_manifest, &extended)
        .with_context(|| format!("writing {}", staged_manifest.display()))?;
    let checked = manifest::load(&staged_manifest)
        .with_context(|| format!("adding `{name}` would break {}", manifest_path.display()))
        .and_then(|_| write_folder(&folder, &template.files(&placeholders)?, |_| Ok(())));
    if let Err(error) = checked {
        let _ = std::fs::remove_file(&staged_manifest);
        return Err(error);
    }
    if let Err(error) = std::fs::rename(&staged_manifest, manifest_path) {
        let _ = std::fs::remove_file(&staged_manifest);
        let _ = std::fs::remove_dir_all(&folder);
        return Err(error).with_context(|| format!("replacing {}", manifest_path.display()));
    }
    Ok(())
}

/// A sibling of `path` for staging it: `.NAME.spindle-<pid>`.
fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "new".into(), |name| name.to_string_lossy());
    path.with_file_name(format!(".{name}.spindle-{}", std::process::id()))
}

/// Writes `files` into a staging folder beside `target`, runs `check` on it,
/// then renames it to `target` (which may be an empty folder). On any
/// failure the staging folder is removed and `target` left as it was.
fn write_folder(
    target: &Path,
    files: &[(PathBuf, Vec<u8>)],
    check: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("{} is not a folder", parent.display());
    }
    let staging = staging_path(target);
    let written = (|| {
        for (relative, bytes) in files {
            let path = staging.join(relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        check(&staging)?;
        // rename(2) replaces an empty folder and refuses a non-empty one.
        std::fs::rename(&staging, target)
            .with_context(|| format!("moving the new files to {}", target.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        templates::find("http-rust").unwrap()
    }

    #[test]
    fn new_writes_an_app_that_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hello-app");
        create_app(&template(), "hello-app", &out).unwrap();
        let app = manifest::load(&out.join("spin.toml")).unwrap();
        assert!(app.components.contains_key("hello-app"));
        let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
        assert!(lib.contains("Hello from hello-app!"), "{lib}");
        let cargo = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"hello-app\""), "{cargo}");
    }

    #[test]
    fn new_refuses_a_folder_that_is_not_empty_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("taken");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("keep.txt"), "mine").unwrap();
        let error = create_app(&template(), "taken", &out).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the existing folder remains");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    }

    #[test]
    fn add_appends_a_component_in_a_subfolder_and_refuses_a_second_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("app");
        create_app(&template(), "app", &out).unwrap();
        let manifest_path = out.join("spin.toml");
        add_component(
            &templates::find("nats-rust").unwrap(),
            "worker",
            &manifest_path,
        )
        .unwrap();
        let app = manifest::load(&manifest_path).unwrap();
        assert!(app.components.contains_key("app"));
        let worker = &app.components["worker"];
        assert_eq!(
            worker.build.as_ref().unwrap().workdir.as_deref(),
            Some(out.join("worker").as_path())
        );
        assert!(out.join("worker/wit/platform.wit").is_file());

        let before = std::fs::read_to_string(&manifest_path).unwrap();
        for name in ["worker", "app"] {
            let error = add_component(&template(), name, &manifest_path).unwrap_err();
            assert!(error.to_string().contains("already"), "{error}");
        }
        let error = add_component(&template(), "Bad_Name", &manifest_path).unwrap_err();
        assert!(error.to_string().contains("kebab-case"), "{error}");
        assert_eq!(std::fs::read_to_string(&manifest_path).unwrap(), before);
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().contains(".spindle-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
