//! The component's variables, as strings: `spin:variables/variables@3.0.0`
//! here, `fermyon:spin/variables@2.0.0` in [`fermyon_v2`] and
//! `wasi:config/store` in [`wasi_config`].
//!
//! Granted by `[component.x.variables]`, whose values are templates over the
//! app's `[variables]`. App variables come from, lowest first: the manifest
//! default, the runtime config's `[[variables_provider]]`s (the first listed
//! wins), `.env` beside the manifest, `SPIN_VARIABLE_<NAME>` in the
//! environment, `--variable name=value`. All are resolved once at start-up:
//! a required variable without a value stops `up` before anything binds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use wasmtime::component::{Accessor, HasData, Linker};

use super::HostSettings;
use crate::engine;
use crate::manifest::{self, App, VariablesProvider};

mod fermyon_v2;
mod wasi_config;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-variables",
        imports: { default: trappable | tracing },
    });
}

use bindings::spin::variables::variables::{self as wit, Error};

/// Environment variables read as app variables: `SPIN_VARIABLE_API_KEY`
/// sets `api_key`, as in Spin.
const ENV_PREFIX: &str = "SPIN_VARIABLE";

/// Resolved variables of every component, built once at start-up.
pub struct AppState {
    /// App variable values after all providers; secrets included.
    app_values: HashMap<String, String>,
    /// Per component: its variable names and rendered values.
    components: HashMap<String, Arc<HashMap<String, String>>>,
}

impl AppState {
    /// Resolves app variables from every provider and renders each
    /// component's templates; fails on a required variable with no value.
    pub fn configure(
        app: &App,
        providers: &[VariablesProvider],
        settings: &HostSettings,
    ) -> anyhow::Result<Self> {
        // Lowest first: later sources overwrite earlier ones.
        let mut provided = BTreeMap::new();
        for VariablesProvider::Env {
            prefix,
            dotenv_path,
        } in providers.iter().rev()
        {
            let prefix = prefix.as_deref().unwrap_or(ENV_PREFIX);
            if let Some(path) = dotenv_path {
                provided.extend(dotenv_values(path, prefix)?);
            }
            provided.extend(env_values(std::env::vars(), prefix));
        }
        let default_dotenv = app.base_dir.join(".env");
        if default_dotenv.exists() {
            provided.extend(dotenv_values(&default_dotenv, ENV_PREFIX)?);
        }
        provided.extend(env_values(std::env::vars(), ENV_PREFIX));
        provided.extend(settings.cli_variables.iter().cloned());

        let mut app_values = HashMap::new();
        for (name, variable) in &app.variables {
            match provided.get(name).or(variable.default.as_ref()) {
                Some(value) => {
                    app_values.insert(name.clone(), value.clone());
                }
                None if variable.required => bail!(
                    "variable `{name}` is required but has no value; set it with \
                     `--variable {name}=...`, {ENV_PREFIX}_{} or a .env file beside {}",
                    name.to_uppercase(),
                    app.manifest_path.display()
                ),
                None => {}
            }
        }
        let mut state = Self {
            app_values,
            components: HashMap::new(),
        };
        for component in app.components.values() {
            let rendered = component
                .variables
                .iter()
                .map(|(name, template)| Ok((name.clone(), state.render(template)?)))
                .collect::<anyhow::Result<HashMap<_, _>>>()
                .with_context(|| format!("[component.{}] variables", component.id))?;
            state
                .components
                .insert(component.id.clone(), Arc::new(rendered));
        }
        Ok(state)
    }

    /// Fills `{{ name }}` placeholders in `template` with app variable values.
    pub fn render(&self, template: &str) -> anyhow::Result<String> {
        let mut rendered = template.to_string();
        for name in manifest::template_references(template)? {
            let Some(value) = self.app_values.get(&name) else {
                bail!("`{template}` uses variable `{name}`, which has no value");
            };
            rendered = replace_placeholder(&rendered, &name, value);
        }
        Ok(rendered)
    }

    /// The variables `component` may read.
    pub fn instance_state(&self, component: &str) -> InstanceState {
        InstanceState {
            values: self.components.get(component).cloned().unwrap_or_default(),
        }
    }
}

/// One instance's view: the rendered variables of its component.
#[derive(Default)]
pub struct InstanceState {
    values: Arc<HashMap<String, String>>,
}

/// Links the interfaces; guests read through [`InstanceState`].
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Variables>(linker, |state| &mut state.variables)?;
    fermyon_v2::add_to_linker(linker)?;
    wasi_config::add_to_linker(linker)
}

struct Variables;

impl HasData for Variables {
    type Data<'a> = &'a mut InstanceState;
}

impl InstanceState {
    /// The value of the component variable `name`, in the words of the
    /// interface's errors.
    fn lookup(&self, name: &str) -> Result<String, Error> {
        if manifest::check_variable_name(name).is_err() {
            return Err(Error::InvalidName(format!(
                "`{name}` is not a valid variable name (lower_snake_case)"
            )));
        }
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("no variable `{name}` for this component")))
    }
}

impl wit::Host for InstanceState {}

impl<T> wit::HostWithStore<T> for Variables {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, Error>> {
        let _span = tracing::debug_span!("variables.get", variable = %name).entered();
        Ok(accessor.with(|mut access| access.get().lookup(&name)))
    }
}

fn replace_placeholder(text: &str, name: &str, value: &str) -> String {
    // Templates allow any spacing inside the braces: `{{x}}`, `{{ x }}`.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let inner = rest[start + 2..start + len].trim();
        out.push_str(&rest[..start]);
        if inner == name {
            out.push_str(value);
        } else {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `<PREFIX>_*` pairs from an environment, as app variable names.
fn env_values(
    vars: impl Iterator<Item = (String, String)>,
    prefix: &str,
) -> BTreeMap<String, String> {
    vars.filter_map(|(key, value)| {
        let name = key.strip_prefix(prefix)?.strip_prefix('_')?.to_lowercase();
        Some((name, value))
    })
    .collect()
}

/// A dotenv file's `<PREFIX>_*` lines, as app variable names.
fn dotenv_values(path: &Path, prefix: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let entries = dotenvy::from_path_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(env_values(entries.into_iter(), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn app(text: &str) -> App {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n{text}\n\
             [component.c]\nsource = \"c.wasm\"\n[component.c.variables]\n\
             greeting = \"hello {{{{ name }}}}!\"\n"
        );
        manifest::parse(&manifest, Path::new("/nonexistent/spin.toml")).expect("valid manifest")
    }

    fn settings(variables: &[(&str, &str)]) -> HostSettings {
        HostSettings {
            cli_variables: variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..HostSettings::default()
        }
    }

    #[test]
    fn component_templates_render_the_manifest_default() {
        let state = AppState::configure(
            &app("[variables]\nname = { default = \"world\" }"),
            &[],
            &settings(&[]),
        )
        .expect("configure");
        let values = state.instance_state("c").values;
        assert_eq!(
            values.get("greeting").map(String::as_str),
            Some("hello world!")
        );
    }

    #[test]
    fn command_line_beats_the_default() {
        let state = AppState::configure(
            &app("[variables]\nname = { default = \"world\" }"),
            &[],
            &settings(&[("name", "spindle")]),
        )
        .expect("configure");
        let values = state.instance_state("c").values;
        assert_eq!(
            values.get("greeting").map(String::as_str),
            Some("hello spindle!")
        );
    }

    #[test]
    fn missing_required_variable_stops_start_up_naming_it() {
        let error = AppState::configure(
            &app("[variables]\nname = { required = true }"),
            &[],
            &settings(&[]),
        )
        .err()
        .expect("must fail");
        assert!(error.to_string().contains("`name` is required"), "{error}");
    }

    #[test]
    fn environment_names_map_to_lower_snake_case() {
        let vars = [
            ("SPIN_VARIABLE_API_KEY".to_string(), "k".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let values = env_values(vars.into_iter(), ENV_PREFIX);
        assert_eq!(
            values.into_iter().collect::<Vec<_>>(),
            vec![("api_key".to_string(), "k".to_string())]
        );
    }

    #[test]
    fn a_provider_reads_its_own_prefix_and_its_dotenv_file_below_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dotenv = dir.path().join("app.env");
        std::fs::write(&dotenv, "APPVARS_NAME=from-provider-file\n").expect("write");
        let provider = VariablesProvider::Env {
            prefix: Some("APPVARS".into()),
            dotenv_path: Some(dotenv),
        };
        let state = AppState::configure(
            &app("[variables]\nname = { default = \"world\" }"),
            &[provider],
            &settings(&[]),
        )
        .expect("configure");
        let values = state.instance_state("c").values;
        assert_eq!(
            values.get("greeting").map(String::as_str),
            Some("hello from-provider-file!")
        );
    }

    #[test]
    fn placeholders_allow_any_spacing() {
        assert_eq!(
            replace_placeholder("{{x}}-{{ x }}-{{ y }}", "x", "1"),
            "1-1-{{ y }}"
        );
    }
}
