//! The app and component templates of `spindle new` and `spindle add`.
//!
//! Each folder of `templates/` at the repository root is one template,
//! embedded in the binary: `template.toml` (its description, and whether it
//! needs the `spindle:platform` WIT), `manifest.toml` (the component's
//! triggers and table for `spin.toml`) and `content/` (the component's
//! files). Placeholders are plain `{{key}}` tokens (see [`Placeholders`]);
//! anything else in double braces, such as a manifest's `{{ variable }}`, is
//! left alone. Rendering is pure: files are written by the caller.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use include_dir::{Dir, DirEntry, include_dir};
use serde::Deserialize;

use crate::manifest::check_component_id;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// The `spindle:platform` WIT, written into components that import or export
/// it, so they build anywhere without a path back into this repository.
const PLATFORM_WIT: &str = include_str!("../../../wit/platform.wit");

/// `template.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateMeta {
    description: String,
    #[serde(default)]
    platform_wit: bool,
}

/// One embedded template.
pub struct Template {
    /// Its name, the folder's: `http-rust`.
    pub name: &'static str,
    /// What it makes, one line.
    pub description: String,
    platform_wit: bool,
    manifest: &'static str,
    content: Option<&'static Dir<'static>>,
}

/// Every embedded template, sorted by name.
pub fn all() -> anyhow::Result<Vec<Template>> {
    let mut templates = Vec::new();
    for dir in TEMPLATES.dirs() {
        let name = dir
            .path()
            .to_str()
            .ok_or_else(|| anyhow!("template folder {:?} is not UTF-8", dir.path()))?;
        let text = |file: &str| {
            dir.get_file(dir.path().join(file))
                .and_then(|f| f.contents_utf8())
                .ok_or_else(|| anyhow!("template `{name}` has no UTF-8 {file}"))
        };
        let meta: TemplateMeta = toml::from_str(text("template.toml")?)
            .with_context(|| format!("template `{name}`: template.toml"))?;
        templates.push(Template {
            name,
            description: meta.description,
            platform_wit: meta.platform_wit,
            manifest: text("manifest.toml")?,
            content: dir.get_dir(dir.path().join("content")),
        });
    }
    templates.sort_by_key(|template| template.name);
    Ok(templates)
}

/// The template called `name`, or an error listing the ones there are.
pub fn find(name: &str) -> anyhow::Result<Template> {
    let mut templates = all()?;
    match templates.iter().position(|template| template.name == name) {
        Some(index) => Ok(templates.swap_remove(index)),
        None => bail!(
            "no template `{name}`; the templates are: {}",
            templates
                .iter()
                .map(|template| template.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Where the component goes: the app's root (`spindle new`) or a subfolder
/// of an existing app (`spindle add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The component's files at the app's root, serving every route.
    AppRoot,
    /// The component's files in `<name>/`, serving `/<name>/...`.
    Subfolder,
}

/// The values the `{{key}}` placeholders take.
pub struct Placeholders {
    name: String,
    placement: Placement,
}

impl Placeholders {
    /// Checks `name` with the manifest's rule for component ids (it is also
    /// the folder, the crate or package, and the route's first segment).
    pub fn new(name: &str, placement: Placement) -> anyhow::Result<Self> {
        check_component_id(name).map_err(|error| anyhow!("{error}"))?;
        Ok(Self {
            name: name.to_owned(),
            placement,
        })
    }

    /// Replaces every known placeholder in `text`.
    pub fn render(&self, text: &str) -> String {
        let snake = self.name.replace('-', "_");
        let (route, dir, workdir) = match self.placement {
            Placement::AppRoot => ("/...".to_owned(), String::new(), String::new()),
            Placement::Subfolder => (
                format!("/{}/...", self.name),
                format!("{}/", self.name),
                format!("workdir = \"{}\"", self.name),
            ),
        };
        // An empty `{{workdir}}` takes its line with it.
        let text = if workdir.is_empty() {
            text.replace("{{workdir}}\n", "")
        } else {
            text.to_owned()
        };
        text.replace("{{name}}", &self.name)
            .replace("{{name_snake}}", &snake)
            .replace("{{route}}", &route)
            .replace("{{dir}}", &dir)
            .replace("{{workdir}}", &workdir)
    }
}

impl Template {
    /// The component's files, rendered, as paths relative to the
    /// component's folder.
    pub fn files(&self, placeholders: &Placeholders) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
        let mut files = Vec::new();
        if let Some(content) = self.content {
            collect(content, content.path(), placeholders, &mut files)?;
        }
        if self.platform_wit {
            files.push((PathBuf::from("wit/platform.wit"), PLATFORM_WIT.into()));
        }
        Ok(files)
    }

    /// The component's triggers and `[component.<name>]` table, rendered.
    pub fn manifest_fragment(&self, placeholders: &Placeholders) -> String {
        placeholders.render(self.manifest)
    }
}

/// Appends the rendered files under `dir` (paths relative to `root`).
fn collect(
    dir: &Dir<'static>,
    root: &Path,
    placeholders: &Placeholders,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> anyhow::Result<()> {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(sub) => collect(sub, root, placeholders, files)?,
            DirEntry::File(file) => {
                let relative = file
                    .path()
                    .strip_prefix(root)
                    .with_context(|| format!("template file {:?}", file.path()))?;
                // Every template file is text; one that is not UTF-8 is
                // copied as it is rather than mangled.
                let bytes = match file.contents_utf8() {
                    Some(text) => placeholders.render(text).into_bytes(),
                    None => file.contents().to_vec(),
                };
                files.push((relative.to_path_buf(), bytes));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_templates_are_all_embedded() {
        let names: Vec<_> = all().unwrap().iter().map(|t| t.name).collect();
        for expected in [
            "http-py",
            "http-rust",
            "http-ts",
            "nats-rust",
            "service-rust",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn every_template_renders_a_manifest_that_loads_for_both_placements() {
        for template in all().unwrap() {
            for placement in [Placement::AppRoot, Placement::Subfolder] {
                let placeholders = Placeholders::new("my-app", placement).unwrap();
                let text = format!(
                    "spin_manifest_version = 2\n[application]\nname = \"my-app\"\n\n{}",
                    template.manifest_fragment(&placeholders)
                );
                assert!(!text.contains("{{name"), "{}: {text}", template.name);
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("spin.toml");
                std::fs::write(&path, &text).unwrap();
                let app = crate::manifest::load(&path)
                    .unwrap_or_else(|e| panic!("{} ({placement:?}): {e:#}\n{text}", template.name));
                assert!(app.components.contains_key("my-app"), "{}", template.name);
                let files = template.files(&placeholders).unwrap();
                assert!(!files.is_empty(), "{} has no files", template.name);
            }
        }
    }

    #[test]
    fn names_follow_the_component_id_rule() {
        for bad in ["My-App", "1app", "my_app", "my--app", "", "-app", "app/x"] {
            let error = Placeholders::new(bad, Placement::AppRoot)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(error.to_string().contains("kebab-case"), "{error}");
        }
    }

    #[test]
    fn placeholders_differ_by_placement() {
        let root = Placeholders::new("hello-world", Placement::AppRoot).unwrap();
        let sub = Placeholders::new("hello-world", Placement::Subfolder).unwrap();
        let text = "{{name}} {{name_snake}} {{route}} [{{dir}}] [{{workdir}}] {{ kept }}";
        assert_eq!(
            root.render(text),
            "hello-world hello_world /... [] [] {{ kept }}"
        );
        assert_eq!(
            sub.render(text),
            "hello-world hello_world /hello-world/... [hello-world/] [workdir = \"hello-world\"] {{ kept }}"
        );
    }
}
