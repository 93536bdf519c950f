//! The manifest exactly as written: serde types that mirror Spin's v2 schema.
//! `deny_unknown_fields` everywhere except trigger entries and `tool` tables,
//! which Spin leaves open for other tools (that is where Spindle's keys live).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Read first, leniently, so a v1 manifest gets a version error rather than a
/// pile of unknown-key errors, and an unsupported trigger type is named.
#[derive(Deserialize)]
pub(super) struct Probe {
    pub spin_manifest_version: Option<toml::Value>,
    #[serde(default)]
    pub trigger: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    #[allow(dead_code)] // checked by `Probe`
    pub spin_manifest_version: IgnoredAny,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Application {
    pub name: String,
    pub version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for Spin compatibility
    pub authors: Vec<String>,
    pub description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for Spin compatibility
    pub targets: Vec<String>,
    #[serde(default)]
    pub trigger: BTreeMap<String, toml::Table>,
    #[allow(dead_code)] // other tools' settings
    pub tool: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Variable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

/// Not `deny_unknown_fields`: `Probe` has already rejected unsupported types.
#[derive(Deserialize, Default)]
pub(super) struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    #[serde(default)]
    pub nats: Vec<NatsTrigger>,
    #[serde(default)]
    pub redis: Vec<RedisTrigger>,
}

/// `[[trigger.redis]]`, Spin's: a channel on a Redis server. Other keys are
/// ignored, as Spin ignores them.
#[derive(Deserialize)]
pub(super) struct RedisTrigger {
    pub address: Option<String>,
    pub channel: Option<String>,
    pub component: Option<ComponentRef>,
}

/// `[[trigger.nats]]`; every key optional here so that a missing one is
/// reported by name. Other keys are ignored, as Spin ignores them.
#[derive(Deserialize)]
pub(super) struct NatsTrigger {
    pub subject: Option<String>,
    pub component: Option<ComponentRef>,
    pub queue_group: Option<String>,
    pub durable: Option<String>,
    pub max_deliver: Option<u32>,
    pub ack_wait: Option<String>,
    pub dead_letter_subject: Option<String>,
}

/// `route` and `component` are optional here so that a missing one can be
/// reported together with the keys that were given instead.
#[derive(Deserialize)]
pub(super) struct HttpTrigger {
    pub route: Option<Route>,
    pub component: Option<ComponentRef>,
    pub executor: Option<toml::Table>,
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`route` must be a string such as \"/hello/...\" or { private = true }"
)]
pub(super) enum Route {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "`component` must be a component id")]
pub(super) enum ComponentRef {
    Id(String),
    Inline(#[allow(dead_code)] toml::Table),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Component {
    pub description: Option<String>,
    pub source: Source,
    #[serde(default)]
    pub files: Vec<FileMount>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated in Spin; present only to give a helpful error.
    pub allowed_http_hosts: Option<IgnoredAny>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub build: Option<Build>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub tool: ComponentTools,
    #[serde(default)]
    #[allow(dead_code)] // only meaningful with `dependencies`, which is rejected
    pub dependencies_inherit_configuration: bool,
    #[serde(default)]
    pub dependencies: toml::Table,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "`source` must be a path to a wasm file")]
pub(super) enum Source {
    Path(String),
    Remote(#[allow(dead_code)] toml::Table),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "each `files` entry must be a glob pattern string or a table { source = \"...\", destination = \"/...\" }"
)]
pub(super) enum FileMount {
    Pattern(String),
    Placement(FilePlacement),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePlacement {
    pub source: String,
    pub destination: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Build {
    pub command: Command,
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`command` must be a string or a list of strings"
)]
pub(super) enum Command {
    One(String),
    Many(Vec<String>),
}

/// A size written with a unit (`"16MiB"`) or as a whole number of bytes;
/// both are checked by the same parser in `validate`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`max_request_body` must be a size such as \"16MiB\" or a whole number of bytes"
)]
pub(super) enum Size {
    Bytes(i64),
    Text(String),
}

/// Only `tool.spindle` is ours; other tools' tables are ignored.
#[derive(Deserialize, Default)]
pub(super) struct ComponentTools {
    pub spindle: Option<Spindle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Spindle {
    pub max_concurrency: Option<u32>,
    pub timeout: Option<String>,
    pub memory_limit: Option<String>,
    pub max_request_body: Option<Size>,
    pub database: Option<String>,
    pub migrations: Option<String>,
    #[serde(default)]
    pub allowed_publish: Vec<String>,
    #[serde(default)]
    pub outbound_http: Vec<super::OutboundPolicy>,
}
