//! From the raw serde types to a valid [`App`]: checks Spin's v2 rules that
//! serde cannot express (names, templates, routes, cross references) and
//! resolves relative paths against the manifest's directory.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::syntax::{
    check_component_id, check_route, check_variable_name, parse_duration, parse_size,
    template_references,
};
use super::{
    App, BuildConfig, Component, DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVER, FileMount, HttpRoute,
    HttpTrigger, NatsTrigger, RedisTrigger, SpindleSettings, Variable, escape_controls, raw,
    toml_error,
};
use crate::bus::{is_literal_subject, is_subject_pattern};

const SUPPORTED_TRIGGERS: [&str; 3] = ["http", "nats", "redis"];

/// Builds one-line errors that start with the manifest path.
struct Errors<'a> {
    path: &'a Path,
}

impl Errors<'_> {
    fn at(&self, location: impl Display, problem: impl Display) -> anyhow::Error {
        self.line(format!("{location}: {problem}"))
    }

    /// `path: message`, on one line whatever the file's keys and values hold.
    fn line(&self, message: impl Display) -> anyhow::Error {
        anyhow!(
            "{}",
            escape_controls(&format!("{}: {message}", self.path.display()))
        )
    }
}

pub(super) fn parse(text: &str, manifest_path: &Path) -> anyhow::Result<App> {
    let errors = Errors {
        path: manifest_path,
    };
    let probe: raw::Probe =
        toml::from_str(text).map_err(|e| toml_error(manifest_path, text, &e))?;
    check_version(&errors, probe.spin_manifest_version.as_ref())?;
    if let Some(kind) = probe
        .trigger
        .keys()
        .find(|kind| !SUPPORTED_TRIGGERS.contains(&kind.as_str()))
    {
        return Err(errors.at(
            format!("[[trigger.{kind}]]"),
            format!("trigger type `{kind}` is not supported by spindle"),
        ));
    }
    let manifest: raw::Manifest =
        toml::from_str(text).map_err(|e| toml_error(manifest_path, text, &e))?;

    let base_dir = match manifest_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let application = manifest.application;
    if application.name.trim().is_empty() {
        return Err(errors.at("[application] name", "must not be empty"));
    }
    let http_base = http_base(&errors, &application.trigger)?;
    let variables = variables(&errors, manifest.variables)?;
    let components = manifest
        .component
        .into_iter()
        .map(|(id, component)| {
            let component =
                component_from_raw(&errors, &base_dir, &variables, id.clone(), component)?;
            Ok((id, component))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let http_triggers = http_triggers(&errors, &components, manifest.trigger.http)?;
    let nats_triggers = nats_triggers(&errors, &components, manifest.trigger.nats)?;
    let redis_triggers = redis_triggers(
        &errors,
        &components,
        application.trigger.get("redis"),
        manifest.trigger.redis,
    )?;

    Ok(App {
        manifest_path: manifest_path.to_path_buf(),
        base_dir,
        name: application.name,
        version: application.version,
        description: application.description,
        http_base,
        variables,
        components,
        http_triggers,
        nats_triggers,
        redis_triggers,
    })
}

fn check_version(errors: &Errors, version: Option<&toml::Value>) -> anyhow::Result<()> {
    match version {
        Some(toml::Value::Integer(2)) => Ok(()),
        Some(other) => Err(errors.at(
            "spin_manifest_version",
            format!("version {other} is not supported; only version 2 is supported"),
        )),
        None => Err(errors.at(
            "spin_manifest_version",
            "missing; only version 2 is supported (add `spin_manifest_version = 2`)",
        )),
    }
}

/// `[application.trigger.http] base`. Other keys in trigger settings are
/// allowed, like in trigger entries.
fn http_base(errors: &Errors, settings: &BTreeMap<String, toml::Table>) -> anyhow::Result<String> {
    if let Some(kind) = settings
        .keys()
        .find(|kind| !SUPPORTED_TRIGGERS.contains(&kind.as_str()))
    {
        return Err(errors.at(
            format!("[application.trigger.{kind}]"),
            format!("trigger type `{kind}` is not supported by spindle"),
        ));
    }
    let location = "[application.trigger.http] base";
    match settings.get("http").and_then(|http| http.get("base")) {
        None => Ok("/".to_owned()),
        Some(toml::Value::String(base)) if base.starts_with('/') => Ok(base.clone()),
        Some(toml::Value::String(base)) => {
            Err(errors.at(location, format!("\"{base}\" must start with '/'")))
        }
        Some(other) => Err(errors.at(location, format!("expected a string, found {other}"))),
    }
}

fn variables(
    errors: &Errors,
    raw: BTreeMap<String, raw::Variable>,
) -> anyhow::Result<BTreeMap<String, Variable>> {
    raw.into_iter()
        .map(|(name, variable)| {
            let location = format!("[variables] {name}");
            check_variable_name(&name).map_err(|e| errors.at(&location, e))?;
            match (&variable.default, variable.required) {
                (Some(_), true) => {
                    return Err(errors.at(
                        &location,
                        "has both `default` and `required = true`; give exactly one",
                    ));
                }
                (None, false) => {
                    return Err(errors.at(
                        &location,
                        "needs either `default = \"...\"` or `required = true`",
                    ));
                }
                _ => {}
            }
            let variable = Variable {
                default: variable.default,
                required: variable.required,
                secret: variable.secret,
            };
            Ok((name, variable))
        })
        .collect()
}

fn component_from_raw(
    errors: &Errors,
    base_dir: &Path,
    app_variables: &BTreeMap<String, Variable>,
    id: String,
    raw: raw::Component,
) -> anyhow::Result<Component> {
    let table = format!("[component.{id}]");
    let at = |key: &str| format!("{table} {key}");
    check_component_id(&id).map_err(|e| errors.at(&table, e))?;

    let source = match raw.source {
        raw::Source::Path(source) if source.trim().is_empty() => {
            return Err(errors.at(at("source"), "must not be empty"));
        }
        raw::Source::Path(source) => base_dir.join(source),
        raw::Source::Remote(_) => {
            return Err(errors.at(
                at("source"),
                format!("remote sources are not supported by spindle yet; build component `{id}` locally and give its path"),
            ));
        }
    };
    if raw.allowed_http_hosts.is_some() {
        return Err(errors.at(
            at("allowed_http_hosts"),
            "is deprecated; use `allowed_outbound_hosts` (e.g. \"https://example.com\")",
        ));
    }
    if !raw.dependencies.is_empty() {
        return Err(errors.at(
            at("dependencies"),
            "component dependencies are not supported by spindle yet",
        ));
    }
    if !raw.ai_models.is_empty() {
        return Err(errors.at(at("ai_models"), "AI models are not supported by spindle"));
    }

    let check_templates = |key: &str, value: &str| -> anyhow::Result<()> {
        let names = template_references(value).map_err(|e| errors.at(at(key), e))?;
        match names.iter().find(|name| !app_variables.contains_key(*name)) {
            Some(name) => Err(errors.at(
                at(key),
                format!("\"{value}\" uses `{{{{ {name} }}}}`, but `{name}` is not defined in [variables]"),
            )),
            None => Ok(()),
        }
    };
    for (name, value) in &raw.variables {
        let key = format!("variables.{name}");
        check_variable_name(name).map_err(|e| errors.at(at(&key), e))?;
        check_templates(&key, value)?;
    }
    for host in &raw.allowed_outbound_hosts {
        check_templates("allowed_outbound_hosts", host)?;
        if !host.contains("://") {
            return Err(errors.at(
                at("allowed_outbound_hosts"),
                format!("\"{host}\" needs a scheme, e.g. \"https://{host}\""),
            ));
        }
    }

    let files = raw
        .files
        .into_iter()
        .map(|file| match file {
            raw::FileMount::Pattern(pattern) => Ok(FileMount::Pattern(pattern)),
            raw::FileMount::Placement(placement) if !placement.destination.starts_with('/') => {
                Err(errors.at(
                    at("files"),
                    format!(
                        "destination \"{}\" must be an absolute path",
                        placement.destination
                    ),
                ))
            }
            raw::FileMount::Placement(placement) => Ok(FileMount::Placement {
                source: base_dir.join(placement.source),
                destination: placement.destination,
            }),
        })
        .collect::<anyhow::Result<_>>()?;

    let build = raw.build.map(|build| BuildConfig {
        commands: match build.command {
            raw::Command::One(command) => vec![command],
            raw::Command::Many(commands) => commands,
        },
        workdir: build.workdir.map(|dir| base_dir.join(dir)),
        watch: build.watch,
    });
    let spindle = match raw.tool.spindle {
        Some(settings) => spindle_settings(errors, base_dir, &table, settings)?,
        None => SpindleSettings::default(),
    };

    Ok(Component {
        id,
        source,
        description: raw.description,
        variables: raw.variables,
        environment: raw.environment,
        allowed_outbound_hosts: raw.allowed_outbound_hosts,
        key_value_stores: raw.key_value_stores,
        sqlite_databases: raw.sqlite_databases,
        files,
        exclude_files: raw.exclude_files,
        build,
        spindle,
    })
}

fn spindle_settings(
    errors: &Errors,
    base_dir: &Path,
    component_table: &str,
    raw: raw::Spindle,
) -> anyhow::Result<SpindleSettings> {
    let at = |key: &str| format!("{component_table} tool.spindle.{key}");
    if raw.max_concurrency == Some(0) {
        return Err(errors.at(at("max_concurrency"), "must be at least 1"));
    }
    let timeout = raw
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| errors.at(at("timeout"), e))?;
    let memory_limit = raw
        .memory_limit
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|e| errors.at(at("memory_limit"), e))?;
    let max_request_body = raw
        .max_request_body
        .map(|size| match size {
            // A plain number goes through the same parser, which refuses
            // zero and negative values with the same message.
            raw::Size::Bytes(bytes) => parse_size(&bytes.to_string()),
            raw::Size::Text(text) => parse_size(&text),
        })
        .transpose()
        .map_err(|e| errors.at(at("max_request_body"), e))?;
    if raw
        .database
        .as_deref()
        .is_some_and(|label| label.trim().is_empty())
    {
        return Err(errors.at(at("database"), "must not be empty"));
    }
    if raw.migrations.is_some() && raw.database.is_none() {
        return Err(errors.at(
            at("migrations"),
            "needs `database` to say which database they migrate",
        ));
    }
    if let Some(subject) = raw.allowed_publish.iter().find(|s| !is_subject_pattern(s)) {
        return Err(errors.at(
            at("allowed_publish"),
            format!("\"{subject}\" is not a NATS subject (dot-separated tokens, no spaces; '*' and a final '>' allowed)"),
        ));
    }
    super::check_outbound_policies(&raw.outbound_http)
        .map_err(|problem| errors.at(at("outbound_http"), problem))?;
    Ok(SpindleSettings {
        max_concurrency: raw.max_concurrency,
        timeout,
        memory_limit,
        max_request_body,
        database: raw.database,
        migrations: raw.migrations.map(|dir| base_dir.join(dir)),
        allowed_publish: raw.allowed_publish,
        outbound_http: raw.outbound_http,
    })
}

fn http_triggers(
    errors: &Errors,
    components: &BTreeMap<String, Component>,
    raw: Vec<raw::HttpTrigger>,
) -> anyhow::Result<Vec<HttpTrigger>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut triggers = Vec::with_capacity(raw.len());
    for (index, trigger) in raw.into_iter().enumerate() {
        let entry = format!("`[[trigger.http]]` #{}", index + 1);
        let missing = |key: &str| {
            let mut problem = format!("missing `{key}`");
            if !trigger.other.is_empty() {
                let others: Vec<String> = trigger.other.keys().map(|k| format!("`{k}`")).collect();
                problem.push_str(&format!(" (unknown field {})", others.join(", ")));
            }
            errors.at(&entry, problem)
        };
        let route = match &trigger.route {
            None => return Err(missing("route")),
            Some(raw::Route::Private { private: true }) => HttpRoute::Private,
            Some(raw::Route::Private { private: false }) => {
                return Err(errors.at(
                    format!("{entry} route"),
                    "`{ private = false }` is not a route; give a path such as \"/hello\"",
                ));
            }
            Some(raw::Route::Path(route)) => {
                check_route(route).map_err(|e| errors.at(&entry, e))?;
                HttpRoute::Route(route.clone())
            }
        };
        let named = match &route {
            HttpRoute::Route(route) => format!("`[[trigger.http]]` route \"{route}\""),
            HttpRoute::Private => format!("{entry} (private route)"),
        };
        let component = match &trigger.component {
            None => return Err(missing("component")),
            Some(raw::ComponentRef::Inline(_)) => {
                return Err(errors.at(
                    format!("{named} component"),
                    "inline components are not supported; define [component.<id>] and name it here",
                ));
            }
            Some(raw::ComponentRef::Id(id)) if !components.contains_key(id) => {
                return Err(errors.line(format!(
                    "{named} names component `{id}`, which is not defined"
                )));
            }
            Some(raw::ComponentRef::Id(id)) => id.clone(),
        };
        if let HttpRoute::Route(route) = &route
            && let Some(first) = seen.insert(route.clone(), component.clone())
        {
            return Err(errors.line(format!(
                "{named} is given twice, for components `{first}` and `{component}`"
            )));
        }
        triggers.push(HttpTrigger {
            route,
            component,
            executor: trigger.executor,
        });
    }
    Ok(triggers)
}

/// The component a trigger entry names, which must be defined.
fn component_ref(
    errors: &Errors,
    components: &BTreeMap<String, Component>,
    entry: &str,
    raw: Option<raw::ComponentRef>,
) -> anyhow::Result<String> {
    match raw {
        None => Err(errors.at(entry, "missing `component`")),
        Some(raw::ComponentRef::Inline(_)) => Err(errors.at(
            format!("{entry} component"),
            "inline components are not supported; define [component.<id>] and name it here",
        )),
        Some(raw::ComponentRef::Id(id)) if !components.contains_key(&id) => Err(errors.at(
            entry,
            format!("names component `{id}`, which is not defined"),
        )),
        Some(raw::ComponentRef::Id(id)) => Ok(id),
    }
}

fn redis_triggers(
    errors: &Errors,
    components: &BTreeMap<String, Component>,
    settings: Option<&toml::Table>,
    raw: Vec<raw::RedisTrigger>,
) -> anyhow::Result<Vec<RedisTrigger>> {
    let default_address = match settings.and_then(|settings| settings.get("address")) {
        None => None,
        Some(toml::Value::String(address)) => Some(address.clone()),
        Some(_) => {
            return Err(errors.at(
                "[application.trigger.redis] address",
                "expected a string such as \"redis://localhost:6379\"",
            ));
        }
    };
    let mut triggers = Vec::with_capacity(raw.len());
    for (index, trigger) in raw.into_iter().enumerate() {
        let entry = format!("`[[trigger.redis]]` #{}", index + 1);
        let Some(address) = trigger.address.or_else(|| default_address.clone()) else {
            return Err(errors.at(
                &entry,
                "missing `address` (or [application.trigger.redis] address)",
            ));
        };
        // The address is not echoed: it may carry a password.
        if !(address.starts_with("redis://") || address.starts_with("rediss://")) {
            return Err(errors.at(
                format!("{entry} address"),
                "must start with redis:// or rediss://",
            ));
        }
        let channel = match trigger.channel {
            Some(channel) if !channel.is_empty() => channel,
            _ => return Err(errors.at(&entry, "missing `channel`")),
        };
        let component = component_ref(errors, components, &entry, trigger.component)?;
        triggers.push(RedisTrigger {
            component,
            address,
            channel,
        });
    }
    Ok(triggers)
}

fn nats_triggers(
    errors: &Errors,
    components: &BTreeMap<String, Component>,
    raw: Vec<raw::NatsTrigger>,
) -> anyhow::Result<Vec<NatsTrigger>> {
    let mut triggers = Vec::with_capacity(raw.len());
    for (index, trigger) in raw.into_iter().enumerate() {
        let entry = format!("`[[trigger.nats]]` #{}", index + 1);
        let at = |key: &str| format!("{entry} {key}");
        let subject = match trigger.subject {
            None => return Err(errors.at(&entry, "missing `subject`")),
            Some(subject) if !is_subject_pattern(&subject) => {
                return Err(errors.at(
                    at("subject"),
                    format!("\"{subject}\" is not a NATS subject (dot-separated tokens, no spaces; '*' and a final '>' allowed)"),
                ));
            }
            Some(subject) => subject,
        };
        let component = component_ref(errors, components, &entry, trigger.component)?;
        let name_like = |key: &str, value: &Option<String>| match value {
            Some(name)
                if name.is_empty()
                    || name
                        .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>')) =>
            {
                Err(errors.at(
                    at(key),
                    format!("\"{name}\" must be a non-empty name without spaces, '.', '*' or '>'"),
                ))
            }
            _ => Ok(()),
        };
        name_like("queue_group", &trigger.queue_group)?;
        name_like("durable", &trigger.durable)?;
        let max_deliver = trigger.max_deliver.unwrap_or(DEFAULT_MAX_DELIVER);
        if max_deliver == 0 {
            return Err(errors.at(at("max_deliver"), "must be at least 1"));
        }
        let ack_wait = match trigger.ack_wait.as_deref().map(parse_duration).transpose() {
            Ok(ack_wait) => ack_wait.unwrap_or(DEFAULT_ACK_WAIT),
            Err(error) => return Err(errors.at(at("ack_wait"), error)),
        };
        let dead_letter_subject = trigger
            .dead_letter_subject
            .unwrap_or_else(|| format!("spindle.dead-letter.{component}"));
        if !is_literal_subject(&dead_letter_subject) {
            return Err(errors.at(
                at("dead_letter_subject"),
                format!("\"{dead_letter_subject}\" must be a subject without wildcards"),
            ));
        }
        triggers.push(NatsTrigger {
            component,
            subject,
            queue_group: trigger.queue_group,
            durable: trigger.durable,
            max_deliver,
            ack_wait,
            dead_letter_subject,
        });
    }
    Ok(triggers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{OutboundPolicy, parse};
    use super::*;

    const PATH: &str = "apps/demo/spin.toml";

    const FULL: &str = r#"
spin_manifest_version = 2

[application]
name = "demo"
version = "1.2.3"
authors = ["Ada <ada@example.com>"]
description = "A demo app"
targets = ["spin-up:3.3"]

[application.trigger.http]
base = "/api"

[application.tool.other]
anything = true

[variables]
api_host = { default = "example.com" }
api_token = { required = true, secret = true }

[[trigger.http]]
route = "/hello/..."
component = "hello"
executor = { type = "spin" }

[[trigger.http]]
route = { private = true }
component = "worker"

[[trigger.http]]
route = "/users/:id"
component = "worker"
some_future_key = 1

[[trigger.nats]]
subject = "orders.*"
component = "worker"
queue_group = "workers"

[component.hello]
description = "Says hello"
source = "target/hello.wasm"
files = ["static/**/*", { source = "assets", destination = "/assets" }]
exclude_files = ["static/secret.txt"]
allowed_outbound_hosts = ["https://{{ api_host }}", "postgres://localhost:5432"]
key_value_stores = ["default"]
sqlite_databases = ["default"]
environment = { RUST_LOG = "info" }
variables = { token = "Bearer {{api_token}}", greeting = "hi" }

[component.hello.build]
command = "cargo build --target wasm32-wasip2 --release"
workdir = "hello"
watch = ["src/**/*.rs"]

[component.hello.tool.spindle]
max_concurrency = 8
timeout = "30s"
memory_limit = "64MiB"
max_request_body = "1MiB"
database = "orders"
migrations = "migrations"
allowed_publish = ["orders.created", "audit.>"]

[[component.hello.tool.spindle.outbound_http]]
host = "*.example.com"
timeout = "2s"
retries = 1

[component.hello.tool.other-tool]
whatever = "ignored"

[component.worker]
source = "/abs/worker.wasm"

[component.worker.build]
command = ["make one", "make two"]
"#;

    fn parse_ok(text: &str) -> App {
        match parse(text, Path::new(PATH)) {
            Ok(app) => app,
            Err(e) => panic!("expected the manifest to parse, got: {e}"),
        }
    }

    /// Parses and returns the error, checking that it is one line and names the file.
    fn parse_err(text: &str) -> String {
        let message = match parse(text, Path::new(PATH)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        };
        assert!(!message.contains('\n'), "error is not one line: {message}");
        assert!(
            message.contains(PATH),
            "error does not name the file: {message}"
        );
        message
    }

    fn assert_contains(message: &str, expected: &str) {
        assert!(
            message.contains(expected),
            "expected {expected:?} in: {message}"
        );
    }

    /// A minimal valid manifest followed by `extra`.
    fn with(extra: &str) -> String {
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"demo\"\n[component.hello]\nsource = \"hello.wasm\"\n{extra}"
        )
    }

    #[test]
    fn full_manifest_parses_with_every_field() {
        let app = parse_ok(FULL);
        assert_eq!(app.manifest_path, PathBuf::from(PATH));
        assert_eq!(app.base_dir, PathBuf::from("apps/demo"));
        assert_eq!(app.name, "demo");
        assert_eq!(app.version.as_deref(), Some("1.2.3"));
        assert_eq!(app.description.as_deref(), Some("A demo app"));
        assert_eq!(app.http_base, "/api");
        assert_eq!(
            app.variables["api_host"],
            Variable {
                default: Some("example.com".into()),
                required: false,
                secret: false
            }
        );
        assert_eq!(
            app.variables["api_token"],
            Variable {
                default: None,
                required: true,
                secret: true
            }
        );

        let hello = &app.components["hello"];
        assert_eq!(hello.id, "hello");
        assert_eq!(hello.source, PathBuf::from("apps/demo/target/hello.wasm"));
        assert_eq!(hello.description.as_deref(), Some("Says hello"));
        assert_eq!(hello.variables["token"], "Bearer {{api_token}}");
        assert_eq!(hello.variables["greeting"], "hi");
        assert_eq!(hello.environment["RUST_LOG"], "info");
        assert_eq!(
            hello.allowed_outbound_hosts,
            ["https://{{ api_host }}", "postgres://localhost:5432"]
        );
        assert_eq!(hello.key_value_stores, ["default"]);
        assert_eq!(hello.sqlite_databases, ["default"]);
        assert_eq!(
            hello.files,
            [
                FileMount::Pattern("static/**/*".into()),
                FileMount::Placement {
                    source: PathBuf::from("apps/demo/assets"),
                    destination: "/assets".into()
                },
            ]
        );
        assert_eq!(hello.exclude_files, ["static/secret.txt"]);
        assert_eq!(
            hello.build,
            Some(BuildConfig {
                commands: vec!["cargo build --target wasm32-wasip2 --release".into()],
                workdir: Some(PathBuf::from("apps/demo/hello")),
                watch: vec!["src/**/*.rs".into()],
            })
        );
        assert_eq!(
            hello.spindle,
            SpindleSettings {
                max_concurrency: Some(8),
                timeout: Some(Duration::from_secs(30)),
                memory_limit: Some(64 << 20),
                max_request_body: Some(1 << 20),
                database: Some("orders".into()),
                migrations: Some(PathBuf::from("apps/demo/migrations")),
                allowed_publish: vec!["orders.created".into(), "audit.>".into()],
                outbound_http: vec![OutboundPolicy {
                    host: "*.example.com".into(),
                    timeout: Some(Duration::from_secs(2)),
                    retries: Some(1),
                    breaker_failures: None,
                    breaker_cooldown: None,
                }],
            }
        );

        let worker = &app.components["worker"];
        assert_eq!(worker.source, PathBuf::from("/abs/worker.wasm"));
        assert_eq!(worker.spindle, SpindleSettings::default());
        assert_eq!(
            worker.build.as_ref().map(|b| b.commands.clone()),
            Some(vec!["make one".into(), "make two".into()])
        );

        assert_eq!(app.http_triggers.len(), 3);
        assert_eq!(
            app.http_triggers[0].route,
            HttpRoute::Route("/hello/...".into())
        );
        assert_eq!(app.http_triggers[0].component, "hello");
        assert_eq!(
            app.http_triggers[0]
                .executor
                .as_ref()
                .and_then(|e| e.get("type")),
            Some(&toml::Value::String("spin".into()))
        );
        assert_eq!(app.http_triggers[1].route, HttpRoute::Private);
        assert_eq!(app.http_triggers[1].component, "worker");
        assert_eq!(
            app.http_triggers[2].route,
            HttpRoute::Route("/users/:id".into())
        );

        assert_eq!(
            app.nats_triggers,
            vec![NatsTrigger {
                component: "worker".into(),
                subject: "orders.*".into(),
                queue_group: Some("workers".into()),
                durable: None,
                max_deliver: DEFAULT_MAX_DELIVER,
                ack_wait: DEFAULT_ACK_WAIT,
                dead_letter_subject: "spindle.dead-letter.worker".into(),
            }]
        );
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let app = parse_ok(&with(""));
        assert_eq!(app.http_base, "/");
        assert!(app.variables.is_empty() && app.http_triggers.is_empty());
        assert!(app.nats_triggers.is_empty());
    }

    #[test]
    fn manifest_without_directory_resolves_against_current_dir() {
        let app = match parse(&with(""), Path::new("spin.toml")) {
            Ok(app) => app,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            app.components["hello"].source,
            PathBuf::from("./hello.wasm")
        );
    }

    #[test]
    fn load_reports_a_missing_file_with_its_path() {
        let message = match super::super::load(Path::new("/nonexistent/spin.toml")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert_contains(&message, "/nonexistent/spin.toml: cannot read the manifest");
    }

    #[test]
    fn toml_syntax_error_has_line_and_column() {
        let message = parse_err("spin_manifest_version = 2\n[application\n");
        assert_contains(&message, &format!("{PATH}:2:"));
    }

    #[test]
    fn newlines_in_keys_and_values_are_escaped_so_errors_stay_one_line() {
        // Found by manifest::proptests: these errors ran over two lines.
        let message = parse_err(&with(
            "[[trigger.nats]]\nsubject = \"a\\n\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&message, r#"subject: "a\n" is not a NATS subject"#);
        let message = parse_err(&with("[component.\"a\\nb\"]\nsource = \"a.wasm\"\n"));
        assert_contains(
            &message,
            r"[component.a\nb]: `a\nb` is not a valid component id",
        );
        let message = parse_err(&with(
            "[[trigger.http]]\nroute = \"/\"\ncomponent = \"a\\nb\"\n",
        ));
        assert_contains(&message, r"names component `a\nb`, which is not defined");
    }

    #[test]
    fn version_1_is_rejected() {
        let message = parse_err("spin_manifest_version = \"1\"\nname = \"old\"\n");
        assert_contains(&message, "only version 2 is supported");
        let message = parse_err("spin_manifest_version = 1\n");
        assert_contains(&message, "only version 2 is supported");
    }

    #[test]
    fn missing_version_is_rejected() {
        let message = parse_err("[application]\nname = \"x\"\n");
        assert_contains(&message, "spin_manifest_version");
        assert_contains(&message, "only version 2 is supported");
    }

    #[test]
    fn unknown_top_level_key_is_rejected_with_its_name_and_line() {
        let message = parse_err(&with("[frobnicate]\nx = 1\n"));
        assert_contains(&message, "unknown field `frobnicate`");
    }

    #[test]
    fn unknown_application_key_is_rejected_with_its_name() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"demo\"\nnmae = \"typo\"\n",
        );
        assert_contains(&message, &format!("{PATH}:4:1: unknown field `nmae`"));
    }

    #[test]
    fn missing_application_name_is_rejected() {
        let message = parse_err("spin_manifest_version = 2\n[application]\nversion = \"1\"\n");
        assert_contains(&message, "missing field `name`");
    }

    #[test]
    fn unknown_component_key_is_rejected_with_its_name() {
        let message = parse_err(&with("sorce = \"x.wasm\"\n"));
        assert_contains(&message, "unknown field `sorce`");
        assert_contains(&message, &format!("{PATH}:6:1"));
    }

    #[test]
    fn unknown_key_in_variable_is_rejected() {
        let message = parse_err(&with(
            "[variables]\nx = { default = \"a\", secert = true }\n",
        ));
        assert_contains(&message, "unknown field `secert`");
    }

    #[test]
    fn unknown_key_in_build_is_rejected() {
        let message = parse_err(&with(
            "[component.hello.build]\ncommand = \"make\"\ncwd = \".\"\n",
        ));
        assert_contains(&message, "unknown field `cwd`");
    }

    #[test]
    fn unknown_spindle_setting_is_rejected_but_other_tools_are_ignored() {
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nmax_concurency = 3\n[component.hello.tool.other]\nx = 1\n",
        ));
        assert_contains(&message, "unknown field `max_concurency`");
        parse_ok(&with("[component.hello.tool.other]\nx = 1\n"));
    }

    #[test]
    fn allowed_http_hosts_is_rejected_with_the_replacement() {
        let message = parse_err(&with("allowed_http_hosts = [\"example.com\"]\n"));
        assert_contains(&message, "[component.hello] allowed_http_hosts");
        assert_contains(&message, "allowed_outbound_hosts");
    }

    #[test]
    fn remote_source_is_rejected_naming_the_component() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"d\"\n[component.remote-one]\nsource = { url = \"https://x/y.wasm\", digest = \"sha256:00\" }\n",
        );
        assert_contains(&message, "[component.remote-one] source");
        assert_contains(&message, "remote sources are not supported by spindle yet");
        assert_contains(&message, "`remote-one`");
    }

    #[test]
    fn registry_source_is_rejected() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"d\"\n[component.reg]\nsource = { registry = \"ghcr.io\", package = \"a:b\", version = \"1.0.0\" }\n",
        );
        assert_contains(&message, "remote sources are not supported by spindle yet");
    }

    #[test]
    fn missing_source_is_rejected() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"d\"\n[component.hello]\ndescription = \"x\"\n",
        );
        assert_contains(&message, "missing field `source`");
    }

    #[test]
    fn non_kebab_component_id_is_rejected() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"d\"\n[component.Hello_World]\nsource = \"x.wasm\"\n",
        );
        assert_contains(&message, "[component.Hello_World]");
        assert_contains(&message, "kebab-case");
    }

    #[test]
    fn non_snake_app_variable_is_rejected() {
        let message = parse_err(&with("[variables]\napi-key = { default = \"x\" }\n"));
        assert_contains(&message, "`api-key` is not a valid variable name");
    }

    #[test]
    fn non_snake_component_variable_is_rejected() {
        let message = parse_err(&with("variables = { Greeting = \"hi\" }\n"));
        assert_contains(&message, "[component.hello] variables.Greeting");
        assert_contains(&message, "lower_snake_case");
    }

    #[test]
    fn variable_with_neither_default_nor_required_is_rejected() {
        let message = parse_err(&with("[variables]\nx = { secret = true }\n"));
        assert_contains(&message, "[variables] x");
        assert_contains(&message, "`required = true`");
    }

    #[test]
    fn variable_with_default_and_required_is_rejected() {
        let message = parse_err(&with(
            "[variables]\nx = { default = \"a\", required = true }\n",
        ));
        assert_contains(&message, "has both `default` and `required = true`");
    }

    #[test]
    fn template_naming_an_undefined_variable_is_rejected() {
        let message = parse_err(&with("variables = { token = \"{{ missing_var }}\" }\n"));
        assert_contains(&message, "[component.hello] variables.token");
        assert_contains(&message, "`missing_var` is not defined in [variables]");
    }

    #[test]
    fn unterminated_template_is_rejected() {
        let message = parse_err(&with(
            "allowed_outbound_hosts = [\"https://{{ host\"]\n[variables]\nhost = { default = \"h\" }\n",
        ));
        assert_contains(&message, "allowed_outbound_hosts");
        assert_contains(&message, "unterminated `{{`");
    }

    #[test]
    fn outbound_host_template_naming_an_undefined_variable_is_rejected() {
        let message = parse_err(&with("allowed_outbound_hosts = [\"https://{{ nope }}\"]\n"));
        assert_contains(&message, "`nope` is not defined");
    }

    #[test]
    fn outbound_host_without_scheme_is_rejected() {
        let message = parse_err(&with("allowed_outbound_hosts = [\"example.com\"]\n"));
        assert_contains(&message, "\"example.com\" needs a scheme");
    }

    #[test]
    fn component_dependencies_are_rejected() {
        let message = parse_err(&with("dependencies = { \"a:b/c\" = \"1.0.0\" }\n"));
        assert_contains(&message, "component dependencies are not supported");
    }

    #[test]
    fn relative_file_destination_is_rejected() {
        let message = parse_err(&with("files = [{ source = \"a\", destination = \"b\" }]\n"));
        assert_contains(&message, "destination \"b\" must be an absolute path");
    }

    #[test]
    fn redis_triggers_take_the_application_address_and_name_what_is_missing() {
        let app = parse(
            &with(
                "[application.trigger.redis]\naddress = \"redis://localhost:6379\"\n\
                 [[trigger.redis]]\nchannel = \"news\"\ncomponent = \"hello\"\n",
            ),
            Path::new(PATH),
        )
        .expect("valid");
        assert_eq!(app.redis_triggers[0].address, "redis://localhost:6379");
        assert_eq!(app.redis_triggers[0].channel, "news");
        let missing = parse_err(&with(
            "[[trigger.redis]]\nchannel = \"news\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&missing, "missing `address`");
        let scheme = parse_err(&with(
            "[[trigger.redis]]\naddress = \"http://x\"\nchannel = \"c\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&scheme, "must start with redis://");
        let channel = parse_err(&with(
            "[[trigger.redis]]\naddress = \"redis://x\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&channel, "missing `channel`");
    }

    #[test]
    fn bad_spindle_timeout_is_rejected() {
        let message = parse_err(&with("[component.hello.tool.spindle]\ntimeout = \"30\"\n"));
        assert_contains(&message, "[component.hello] tool.spindle.timeout");
        assert_contains(&message, "\"30\" is not a valid duration");
    }

    #[test]
    fn bad_spindle_memory_limit_is_rejected() {
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nmemory_limit = \"64MB\"\n",
        ));
        assert_contains(&message, "tool.spindle.memory_limit");
        assert_contains(&message, "\"64MB\" is not a valid size");
    }

    #[test]
    fn max_request_body_takes_a_size_or_a_number_of_bytes() {
        let app = parse_ok(&with(
            "[component.hello.tool.spindle]\nmax_request_body = 65536\n",
        ));
        assert_eq!(
            app.components["hello"].spindle.max_request_body,
            Some(65536)
        );
        let app = parse_ok(&with(
            "[component.hello.tool.spindle]\nmax_request_body = \"16MiB\"\n",
        ));
        assert_eq!(
            app.components["hello"].spindle.max_request_body,
            Some(16 << 20)
        );
    }

    #[test]
    fn bad_max_request_body_is_rejected_naming_the_key() {
        for (value, problem) in [
            ("\"16MB\"", "\"16MB\" is not a valid size"),
            ("0", "\"0\" is not a valid size"),
            ("-1", "\"-1\" is not a valid size"),
        ] {
            let message = parse_err(&with(&format!(
                "[component.hello.tool.spindle]\nmax_request_body = {value}\n"
            )));
            assert_contains(&message, "[component.hello] tool.spindle.max_request_body");
            assert_contains(&message, problem);
        }
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nmax_request_body = true\n",
        ));
        assert_contains(&message, "`max_request_body` must be a size");
    }

    #[test]
    fn zero_max_concurrency_is_rejected() {
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nmax_concurrency = 0\n",
        ));
        assert_contains(&message, "tool.spindle.max_concurrency: must be at least 1");
    }

    #[test]
    fn migrations_without_database_are_rejected() {
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nmigrations = \"m\"\n",
        ));
        assert_contains(&message, "needs `database`");
    }

    #[test]
    fn bad_outbound_policies_are_rejected() {
        let message = parse_err(&with(
            "[[component.hello.tool.spindle.outbound_http]]\nhost = \"https://api.example.com\"\n",
        ));
        assert_contains(&message, "tool.spindle.outbound_http");
        assert_contains(&message, "no scheme, port or path");
        let message = parse_err(&with(
            "[[component.hello.tool.spindle.outbound_http]]\nhost = \"*\"\ntimeout = \"soon\"\n",
        ));
        assert_contains(&message, "soon");
    }

    #[test]
    fn bad_publish_subject_is_rejected() {
        let message = parse_err(&with(
            "[component.hello.tool.spindle]\nallowed_publish = [\"a..b\"]\n",
        ));
        assert_contains(&message, "\"a..b\" is not a NATS subject");
    }

    #[test]
    fn nats_trigger_settings_are_typed_with_defaults() {
        let app = parse_ok(&with(
            "[[trigger.nats]]\nsubject = \"jobs.>\"\ncomponent = \"hello\"\ndurable = \"jobs\"\nmax_deliver = 3\nack_wait = \"2s\"\ndead_letter_subject = \"jobs.failed\"\nfuture_key = 1\n",
        ));
        let trigger = &app.nats_triggers[0];
        assert_eq!(trigger.durable.as_deref(), Some("jobs"));
        assert_eq!(trigger.max_deliver, 3);
        assert_eq!(trigger.ack_wait, Duration::from_secs(2));
        assert_eq!(trigger.dead_letter_subject, "jobs.failed");
    }

    #[test]
    fn bad_nats_triggers_are_rejected_by_key() {
        let cases = [
            ("component = \"hello\"", "missing `subject`"),
            ("subject = \"a\"", "missing `component`"),
            (
                "subject = \"a\"\ncomponent = \"nope\"",
                "names component `nope`",
            ),
            (
                "subject = \"a b\"\ncomponent = \"hello\"",
                "is not a NATS subject",
            ),
            (
                "subject = \"a\"\ncomponent = \"hello\"\ndurable = \"a.b\"",
                "durable",
            ),
            (
                "subject = \"a\"\ncomponent = \"hello\"\nmax_deliver = 0",
                "max_deliver",
            ),
            (
                "subject = \"a\"\ncomponent = \"hello\"\nack_wait = \"soon\"",
                "ack_wait",
            ),
            (
                "subject = \"a\"\ncomponent = \"hello\"\ndead_letter_subject = \"dl.*\"",
                "without wildcards",
            ),
        ];
        for (body, expected) in cases {
            let message = parse_err(&with(&format!("[[trigger.nats]]\n{body}\n")));
            assert_contains(&message, "[[trigger.nats]]` #1");
            assert_contains(&message, expected);
        }
    }

    #[test]
    fn http_base_must_start_with_slash() {
        let message = parse_err(
            "spin_manifest_version = 2\n[application]\nname = \"d\"\n[application.trigger.http]\nbase = \"api\"\n",
        );
        assert_contains(&message, "[application.trigger.http] base");
    }

    #[test]
    fn http_trigger_naming_undefined_component_is_rejected() {
        let message = parse_err(&with(
            "[[trigger.http]]\nroute = \"/x\"\ncomponent = \"foo\"\n",
        ));
        assert_contains(
            &message,
            "`[[trigger.http]]` route \"/x\" names component `foo`, which is not defined",
        );
    }

    #[test]
    fn bad_route_is_rejected_naming_the_route() {
        for route in ["x", "/a//b", "/a/.../b", "/:"] {
            let message = parse_err(&with(&format!(
                "[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"hello\"\n"
            )));
            assert_contains(&message, &format!("route \"{route}\" is invalid"));
        }
    }

    #[test]
    fn duplicate_route_is_rejected_naming_both_components() {
        let message = parse_err(&format!(
            "{}[component.other]\nsource = \"o.wasm\"\n[[trigger.http]]\nroute = \"/x/...\"\ncomponent = \"hello\"\n[[trigger.http]]\nroute = \"/x/...\"\ncomponent = \"other\"\n",
            with("")
        ));
        assert_contains(&message, "route \"/x/...\" is given twice");
        assert_contains(&message, "`hello` and `other`");
    }

    #[test]
    fn several_private_routes_are_allowed() {
        let app = parse_ok(&with(
            "[[trigger.http]]\nroute = { private = true }\ncomponent = \"hello\"\n[[trigger.http]]\nroute = { private = true }\ncomponent = \"hello\"\n",
        ));
        assert_eq!(app.http_triggers.len(), 2);
    }

    #[test]
    fn http_trigger_without_route_is_rejected_naming_the_given_keys() {
        let message = parse_err(&with(
            "[[trigger.http]]\nrout = \"/x\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&message, "missing `route`");
        assert_contains(&message, "unknown field `rout`");
    }

    #[test]
    fn http_trigger_without_component_is_rejected() {
        let message = parse_err(&with("[[trigger.http]]\nroute = \"/x\"\n"));
        assert_contains(&message, "`[[trigger.http]]` #1: missing `component`");
    }

    #[test]
    fn inline_component_is_rejected() {
        let message = parse_err(&with(
            "[[trigger.http]]\nroute = \"/x\"\ncomponent = { source = \"x.wasm\" }\n",
        ));
        assert_contains(
            &message,
            "inline components are not supported; define [component.<id>]",
        );
    }

    #[test]
    fn route_of_wrong_type_is_rejected() {
        let message = parse_err(&with(
            "[[trigger.http]]\nroute = 3\ncomponent = \"hello\"\n",
        ));
        assert_contains(&message, "`route` must be a string");
    }

    #[test]
    fn unsupported_trigger_type_is_rejected() {
        let message = parse_err(&with(
            "[[trigger.mqtt]]\naddress = \"mqtt://localhost\"\ncomponent = \"hello\"\n",
        ));
        assert_contains(&message, "trigger type `mqtt` is not supported by spindle");
    }

    #[test]
    fn unreferenced_component_is_fine() {
        let app = parse_ok(&with(
            "[component.lonely]\nsource = \"l.wasm\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"hello\"\n",
        ));
        assert!(app.components.contains_key("lonely"));
    }

    #[test]
    fn wrong_value_type_reports_the_line() {
        let message = parse_err(&with("key_value_stores = \"default\"\n"));
        assert_contains(&message, &format!("{PATH}:6:"));
        assert_contains(&message, "invalid type");
    }
}
