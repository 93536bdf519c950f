//! The Spin manifest (`spin.toml`, version 2) and the runtime config file.
//! Parsing is two steps: serde types that mirror the file (`raw`), then
//! `validate` turns them into the types below, which are always valid. Every
//! error is one line naming the file and the key, because people read them.

mod raw;
mod runtime_config;
mod syntax;
mod validate;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use runtime_config::{
    DatabaseConfig, KeyValueStoreConfig, MessagingConfig, RuntimeConfig, SqliteDatabaseConfig,
    VariablesProvider, load_runtime_config, parse_runtime_config,
};
pub use syntax::{
    SyntaxError, check_component_id, check_route, check_variable_name, parse_duration, parse_size,
    template_references,
};

/// A loaded and validated Spin manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// The manifest file as given, for error messages.
    pub manifest_path: PathBuf,
    /// The directory containing the manifest; relative paths resolve against it.
    pub base_dir: PathBuf,
    /// `[application] name`.
    pub name: String,
    /// `[application] version`.
    pub version: Option<String>,
    /// `[application] description`.
    pub description: Option<String>,
    /// `[application.trigger.http] base`, prefixed to every HTTP route; default `/`.
    pub http_base: String,
    /// `[variables]`: what the operator may or must provide.
    pub variables: BTreeMap<String, Variable>,
    /// `[component.<id>]`, by id.
    pub components: BTreeMap<String, Component>,
    /// `[[trigger.http]]` in file order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.nats]]` in file order.
    pub nats_triggers: Vec<NatsTrigger>,
    /// `[[trigger.redis]]` in file order.
    pub redis_triggers: Vec<RedisTrigger>,
}

impl App {
    /// The app cut down to the components `only` names and their triggers
    /// (`spindle up -c`): what is not selected is not loaded, opened or
    /// subscribed. An empty `only` keeps everything.
    pub fn select(mut self, only: &[String]) -> anyhow::Result<App> {
        if let Some(unknown) = only.iter().find(|id| !self.components.contains_key(*id)) {
            anyhow::bail!(
                "-c {unknown}: no component `{unknown}` in {}",
                self.manifest_path.display()
            );
        }
        if only.is_empty() {
            return Ok(self);
        }
        let selected = |id: &String| only.contains(id);
        self.components.retain(|id, _| selected(id));
        self.http_triggers
            .retain(|trigger| selected(&trigger.component));
        self.nats_triggers
            .retain(|trigger| selected(&trigger.component));
        self.redis_triggers
            .retain(|trigger| selected(&trigger.component));
        Ok(self)
    }
}

/// An application variable from `[variables]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Used when no provider supplies a value; `None` only if `required`.
    pub default: Option<String>,
    /// The app cannot start without a value from a provider.
    pub required: bool,
    /// The value must not be logged.
    pub secret: bool,
}

/// A component from `[component.<id>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The kebab-case id, also the key in [`App::components`].
    pub id: String,
    /// The wasm file, joined to the base dir (not canonicalised, not checked).
    pub source: PathBuf,
    /// `description`.
    pub description: Option<String>,
    /// Component variables: name -> template that may use `{{ app_var }}`.
    pub variables: BTreeMap<String, String>,
    /// Environment variables the guest sees.
    pub environment: BTreeMap<String, String>,
    /// Hosts the guest may connect to; may contain `{{ var }}` templates.
    pub allowed_outbound_hosts: Vec<String>,
    /// Key-value store labels the guest may open.
    pub key_value_stores: Vec<String>,
    /// SQLite database labels the guest may open.
    pub sqlite_databases: Vec<String>,
    /// Files mapped into the guest's filesystem.
    pub files: Vec<FileMount>,
    /// Glob patterns (relative to the base dir) removed from `files`.
    pub exclude_files: Vec<String>,
    /// How `spindle build` builds the source.
    pub build: Option<BuildConfig>,
    /// Spindle's own settings from `[component.<id>.tool.spindle]`.
    pub spindle: SpindleSettings,
}

/// One entry of a component's `files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMount {
    /// A glob pattern relative to the base dir, mounted at the same path.
    Pattern(String),
    /// `{ source, destination }`: a file or directory mounted elsewhere.
    Placement {
        /// Joined to the base dir.
        source: PathBuf,
        /// An absolute path in the guest.
        destination: String,
    },
}

/// A component's `[component.<id>.build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// Shell commands run in order (`command` may be a string or a list).
    pub commands: Vec<String>,
    /// Where the commands run, joined to the base dir; default the base dir.
    pub workdir: Option<PathBuf>,
    /// Glob patterns that trigger a rebuild in watch mode.
    pub watch: Vec<String>,
}

/// `[component.<id>.tool.spindle]`; Spin ignores it, so the manifest stays valid for Spin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpindleSettings {
    /// Instances of this component running at once (at least 1).
    pub max_concurrency: Option<u32>,
    /// Wall-clock limit per request or message, from e.g. `"30s"` or `"500ms"`.
    pub timeout: Option<Duration>,
    /// Linear memory limit per instance in bytes, from e.g. `"64MiB"`.
    pub memory_limit: Option<u64>,
    /// Largest request body the HTTP trigger passes to it, in bytes, from
    /// e.g. `"16MiB"` or `1048576`; a larger one is answered 413.
    pub max_request_body: Option<u64>,
    /// The managed database label this component owns.
    pub database: Option<String>,
    /// The migrations folder for `database`, joined to the base dir.
    pub migrations: Option<PathBuf>,
    /// NATS subjects the component may publish to (wildcards allowed).
    pub allowed_publish: Vec<String>,
    /// Outbound HTTP resilience by host pattern, beating the runtime config's.
    pub outbound_http: Vec<OutboundPolicy>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTrigger {
    /// The route, relative to [`App::http_base`].
    pub route: HttpRoute,
    /// The id of a component defined in the manifest.
    pub component: String,
    /// `executor`, kept raw: Spindle runs every component the same way.
    pub executor: Option<toml::Table>,
}

/// Resilience settings for outbound HTTP to hosts matching `host`: from
/// `[[outbound_http]]` in the runtime config or
/// `[[component.<id>.tool.spindle.outbound_http]]` in the manifest. Unset
/// fields fall back to a less specific entry, then to the defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundPolicy {
    /// `api.example.com`, `*.example.com`, `orders.spin.internal` or `*`.
    pub host: String,
    /// Time for one attempt to answer (response headers), e.g. `"5s"`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Extra attempts for idempotent requests (and others that carry an
    /// `Idempotency-Key`) that failed or got 502/503/504.
    pub retries: Option<u32>,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: Option<u32>,
    /// How long an open breaker fails calls fast before one probe may pass.
    #[serde(default, deserialize_with = "optional_duration")]
    pub breaker_cooldown: Option<Duration>,
}

impl OutboundPolicy {
    /// Whether `host` (lowercase, no port) is one this entry is for.
    pub fn matches(&self, host: &str) -> bool {
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            // Without case, as an exact host compares.
            Some(suffix) => host
                .len()
                .checked_sub(suffix.len())
                .and_then(|at| Some((host.get(..at)?, host.get(at..)?)))
                .is_some_and(|(label, tail)| {
                    tail.eq_ignore_ascii_case(suffix) && label.len() > 1 && label.ends_with('.')
                }),
            None => self.host.eq_ignore_ascii_case(host),
        }
    }

    /// Higher for more specific patterns: an exact host, then `*.suffix`
    /// (longer first), then `*`.
    pub fn specificity(&self) -> usize {
        const EXACT: usize = 1 << 16;
        match self.host.as_str() {
            "*" => 0,
            pattern if pattern.starts_with("*.") => pattern.len(),
            pattern => EXACT + pattern.len(),
        }
    }

    fn check(&self) -> Result<(), String> {
        let valid = self.host == "*"
            || (!self.host.is_empty()
                && !self.host.contains(['/', ':', ' '])
                // One `*.` at most: `*.*.x` is no host name and would never match.
                && !self.host.strip_prefix("*.").unwrap_or(&self.host).contains('*'));
        if !valid {
            return Err(format!(
                "host \"{}\" must be a host name, `*.domain` or `*` (no scheme, port or path)",
                self.host
            ));
        }
        if self.breaker_failures == Some(0) {
            return Err("breaker_failures must be at least 1".into());
        }
        Ok(())
    }
}

/// Checks every entry of an `outbound_http` list.
pub(crate) fn check_outbound_policies(policies: &[OutboundPolicy]) -> Result<(), String> {
    policies.iter().try_for_each(OutboundPolicy::check)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    text.map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// One `[[trigger.nats]]` entry: a subscription whose messages go to a
/// component's `message-handler` export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTrigger {
    /// The id of a component defined in the manifest.
    pub component: String,
    /// The subject, with `*` and `>` wildcards.
    pub subject: String,
    /// Subscribers in one group (replicas) share the messages.
    pub queue_group: Option<String>,
    /// A JetStream durable consumer name: at-least-once delivery on NATS.
    pub durable: Option<String>,
    /// Deliveries of one message before it is dead-lettered (default 5).
    pub max_deliver: u32,
    /// How long a delivery may go unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Where messages that were rejected or ran out of deliveries go
    /// (default `spindle.dead-letter.<component>`).
    pub dead_letter_subject: String,
}

/// One `[[trigger.redis]]`: messages published on a Redis channel, each
/// handed to the component's `spin:redis/inbound-redis` export.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTrigger {
    /// The id of a component defined in the manifest.
    pub component: String,
    /// `redis://` or `rediss://`: the entry's `address`, or
    /// `[application.trigger.redis] address`. May hold a password.
    pub address: String,
    /// The channel subscribed to.
    pub channel: String,
}

impl std::fmt::Debug for RedisTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address may carry a password.
        f.debug_struct("RedisTrigger")
            .field("component", &self.component)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Deliveries of one message unless `max_deliver` says otherwise.
pub const DEFAULT_MAX_DELIVER: u32 = 5;

/// Time to acknowledge a delivery unless `ack_wait` says otherwise.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// An HTTP trigger's `route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRoute {
    /// A route whose syntax [`check_route`] accepted.
    Route(String),
    /// `route = { private = true }`: reachable only from other components.
    Private,
}

/// Reads, parses and validates the manifest at `path`.
pub fn load(path: &Path) -> anyhow::Result<App> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the manifest: {e}", path.display()))?;
    parse(&text, path)
}

/// Parses and validates manifest text as if read from `manifest_path`.
pub fn parse(text: &str, manifest_path: &Path) -> anyhow::Result<App> {
    validate::parse(text, manifest_path)
}

/// Turns a toml error into one line: `path:LINE:COL: message`.
fn toml_error(path: &Path, text: &str, error: &toml::de::Error) -> anyhow::Error {
    let message = one_line(error.message());
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            anyhow::anyhow!("{}:{line}:{column}: {message}", path.display())
        }
        None => anyhow::anyhow!("{}: {message}", path.display()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `message` with control characters escaped (`\n`): keys and values
/// quoted in an error may hold them, and an error stays one line.
fn escape_controls(message: &str) -> String {
    message
        .chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_only_the_named_components_and_their_triggers() {
        let text = r#"spin_manifest_version = 2
[application]
name = "two"
[[trigger.http]]
route = "/a"
component = "a"
[[trigger.http]]
route = "/b"
component = "b"
[[trigger.nats]]
subject = "b.events"
component = "b"
[component.a]
source = "a.wasm"
[component.b]
source = "b.wasm"
"#;
        let app = parse(text, Path::new("spin.toml")).expect("valid");
        let only_a = app.clone().select(&["a".into()]).expect("a exists");
        assert_eq!(only_a.components.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(only_a.http_triggers.len(), 1);
        assert!(only_a.nats_triggers.is_empty());
        assert_eq!(app.clone().select(&[]).expect("all"), app);
        let error = app.select(&["c".into()]).expect_err("no c");
        assert!(error.to_string().contains("no component `c`"), "{error}");
    }

    fn policy(host: &str) -> OutboundPolicy {
        OutboundPolicy {
            host: host.into(),
            timeout: None,
            retries: None,
            breaker_failures: None,
            breaker_cooldown: None,
        }
    }

    #[test]
    fn outbound_policy_hosts_have_one_wildcard_label_at_most() {
        // Found by manifest::proptests: `*.*.x` was accepted, and matched nothing.
        assert!(policy("*.*.x").check().is_err());
        assert!(policy("*.x").check().is_ok());
        assert!(policy("*").check().is_ok());
    }

    #[test]
    fn outbound_policy_hosts_match_without_case() {
        // Found by manifest::proptests: `*.Example` did not match `api.example`,
        // though `Example` matches `example`.
        assert!(policy("*.Example").matches("api.example"));
        assert!(policy("Example").matches("example"));
        assert!(!policy("*.Example").matches("example"));
        assert!(!policy("*.example").matches(".example"));
        assert!(!policy("*.é").matches("é"));
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 5), (2, 3));
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
