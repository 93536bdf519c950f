//! The runtime config file (`--runtime-config-file`): which backend serves
//! each label. Spin's keys where Spin has them, plus `[messaging]` and
//! `[database.<label>]`. Unknown keys are errors; relative paths resolve
//! against the file's own directory, not the working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::Deserialize;

use super::toml_error;

/// The operator's backend choices; `Default` is an empty config (embedded backends).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `[key_value_store.<label>]`.
    #[serde(default, rename = "key_value_store")]
    pub key_value_stores: BTreeMap<String, KeyValueStoreConfig>,
    /// `[sqlite_database.<label>]`.
    #[serde(default, rename = "sqlite_database")]
    pub sqlite_databases: BTreeMap<String, SqliteDatabaseConfig>,
    /// `[database.<label>]`: managed PostgreSQL databases.
    #[serde(default, rename = "database")]
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// `[messaging]`: the NATS server for NATS triggers and publishing.
    pub messaging: Option<MessagingConfig>,
    /// `[[outbound_http]]`: resilience of outbound HTTP by host pattern.
    #[serde(default)]
    pub outbound_http: Vec<super::OutboundPolicy>,
    /// `[[variables_provider]]`: where app variables come from, in order,
    /// after `--variable` and the default `SPIN_VARIABLE_*` / `.env`.
    #[serde(default, rename = "variables_provider")]
    pub variables_providers: Vec<VariablesProvider>,
}

/// One `[[variables_provider]]`. Spin's `vault` and `azure_key_vault` types
/// are refused (unknown variant): Spindle reads no secret store but the
/// environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VariablesProvider {
    /// `type = "env"`: `<PREFIX>_<NAME>` environment variables and,
    /// optionally, a dotenv file of the same names.
    Env {
        /// The variables' prefix, without the `_`; Spin's default is
        /// `SPIN_VARIABLE`.
        prefix: Option<String>,
        /// A dotenv file, joined to the config file's directory.
        dotenv_path: Option<PathBuf>,
    },
}

/// The backend of one key-value store label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeyValueStoreConfig {
    /// `type = "spin"`: an SQLite file; `None` means the default under the state dir.
    Spin {
        /// The SQLite file, joined to the config file's directory.
        path: Option<PathBuf>,
    },
    /// `type = "redis"`.
    Redis {
        /// `redis://` or `rediss://` URL.
        url: String,
    },
}

/// The backend of one SQLite database label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SqliteDatabaseConfig {
    /// `type = "spin"`: a local file; `None` means the default under the state dir.
    Spin {
        /// The database file, joined to the config file's directory.
        path: Option<PathBuf>,
    },
}

/// A managed PostgreSQL database, `[database.<label>]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://` or `postgresql://` connection URL.
    pub url: String,
}

/// The NATS server, `[messaging]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// `nats://` or `tls://` URL.
    pub url: String,
}

/// Reads and validates the runtime config file at `path`.
pub fn load_runtime_config(path: &Path) -> anyhow::Result<RuntimeConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow!(
            "{}: cannot read the runtime config file: {e}",
            path.display()
        )
    })?;
    parse_runtime_config(&text, path)
}

/// Parses and validates runtime config text as if read from `path`.
pub fn parse_runtime_config(text: &str, path: &Path) -> anyhow::Result<RuntimeConfig> {
    check_variables_provider_types(text, path)?;
    let mut config: RuntimeConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let at = |location: String, problem: String| {
        let message = format!("{}: {location}: {problem}", path.display());
        anyhow!("{}", super::escape_controls(&message))
    };
    // URLs are not echoed: they may carry passwords.
    let check_scheme = |location: String, url: &str, schemes: &[&str]| {
        if schemes
            .iter()
            .any(|scheme| url.starts_with(&format!("{scheme}://")))
        {
            Ok(())
        } else {
            let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            Err(at(
                location,
                format!("url must start with {}", expected.join(" or ")),
            ))
        }
    };
    for (label, store) in &config.key_value_stores {
        if let KeyValueStoreConfig::Redis { url } = store {
            check_scheme(
                format!("[key_value_store.{label}]"),
                url,
                &["redis", "rediss"],
            )?;
        }
    }
    for (label, database) in &config.databases {
        check_scheme(
            format!("[database.{label}]"),
            &database.url,
            &["postgres", "postgresql"],
        )?;
    }
    if let Some(messaging) = &config.messaging {
        check_scheme("[messaging]".to_owned(), &messaging.url, &["nats", "tls"])?;
    }
    super::check_outbound_policies(&config.outbound_http)
        .map_err(|problem| at("[[outbound_http]]".to_owned(), problem))?;

    let base_dir = path.parent().unwrap_or(Path::new(""));
    for store in config.key_value_stores.values_mut() {
        if let KeyValueStoreConfig::Spin { path: Some(file) } = store {
            *file = base_dir.join(&*file);
        }
    }
    for database in config.sqlite_databases.values_mut() {
        let SqliteDatabaseConfig::Spin { path: Some(file) } = database else {
            continue;
        };
        *file = base_dir.join(&*file);
    }
    for provider in &mut config.variables_providers {
        let VariablesProvider::Env {
            dotenv_path: Some(file),
            ..
        } = provider
        else {
            continue;
        };
        *file = base_dir.join(&*file);
    }
    Ok(config)
}

/// Spin's secret-store providers, refused with a sentence of their own
/// rather than serde's "unknown variant".
fn check_variables_provider_types(text: &str, path: &Path) -> anyhow::Result<()> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(()); // The typed parse reports the syntax error.
    };
    let Some(toml::Value::Array(providers)) = table.get("variables_provider") else {
        return Ok(());
    };
    for provider in providers {
        let kind = provider.get("type").and_then(toml::Value::as_str);
        if let Some(kind @ ("vault" | "azure_key_vault")) = kind {
            return Err(anyhow!(
                "{}: [[variables_provider]] type = \"{kind}\" is not supported: Spindle \
                 reads variables only from the environment (type = \"env\"), `.env` files \
                 and --variable",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/spindle/runtime.toml";

    fn parse_ok(text: &str) -> RuntimeConfig {
        match parse_runtime_config(text, Path::new(PATH)) {
            Ok(config) => config,
            Err(e) => panic!("expected the config to parse, got: {e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        let message = match parse_runtime_config(text, Path::new(PATH)) {
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

    #[test]
    fn full_config_parses_and_resolves_paths_against_its_directory() {
        let config = parse_ok(
            r#"
[key_value_store.default]
type = "spin"
path = "data/kv.db"

[key_value_store.cache]
type = "redis"
url = "redis://localhost:6379"

[key_value_store.plain]
type = "spin"

[sqlite_database.default]
type = "spin"
path = "/var/lib/app.db"

[database.orders]
url = "postgres://app@localhost/orders"

[messaging]
url = "nats://localhost:4222"

[[variables_provider]]
type = "env"
prefix = "APP"
dotenv_path = "app.env"
"#,
        );
        assert_eq!(
            config.key_value_stores["default"],
            KeyValueStoreConfig::Spin {
                path: Some(PathBuf::from("/etc/spindle/data/kv.db"))
            }
        );
        assert_eq!(
            config.key_value_stores["cache"],
            KeyValueStoreConfig::Redis {
                url: "redis://localhost:6379".into()
            }
        );
        assert_eq!(
            config.key_value_stores["plain"],
            KeyValueStoreConfig::Spin { path: None }
        );
        assert_eq!(
            config.sqlite_databases["default"],
            SqliteDatabaseConfig::Spin {
                path: Some(PathBuf::from("/var/lib/app.db"))
            }
        );
        assert_eq!(
            config.databases["orders"].url,
            "postgres://app@localhost/orders"
        );
        assert_eq!(
            config.messaging,
            Some(MessagingConfig {
                url: "nats://localhost:4222".into()
            })
        );
        assert_eq!(
            config.variables_providers,
            vec![VariablesProvider::Env {
                prefix: Some("APP".into()),
                dotenv_path: Some(PathBuf::from("/etc/spindle/app.env")),
            }]
        );
    }

    #[test]
    fn a_secret_store_provider_is_refused_naming_the_type() {
        let message = parse_err("[[variables_provider]]\ntype = \"vault\"\nurl = \"http://v\"\n");
        assert_contains(&message, "vault");
        assert_contains(&message, "env");
    }

    #[test]
    fn empty_config_is_the_default() {
        assert_eq!(parse_ok(""), RuntimeConfig::default());
    }

    #[test]
    fn unknown_top_level_key_is_rejected_with_its_name() {
        let message = parse_err("[llm_compute]\ntype = \"spin\"\n");
        assert_contains(&message, "unknown field `llm_compute`");
        assert_contains(&message, &format!("{PATH}:1:"));
    }

    #[test]
    fn unknown_store_type_is_rejected() {
        let message = parse_err("[key_value_store.x]\ntype = \"azure_cosmos\"\n");
        assert_contains(&message, "azure_cosmos");
    }

    #[test]
    fn unknown_key_in_store_is_rejected() {
        let message = parse_err("[key_value_store.x]\ntype = \"spin\"\npth = \"a\"\n");
        assert_contains(&message, "unknown field `pth`");
    }

    #[test]
    fn redis_store_without_url_is_rejected() {
        let message = parse_err("[key_value_store.x]\ntype = \"redis\"\n");
        assert_contains(&message, "missing field `url`");
    }

    #[test]
    fn a_newline_in_a_label_is_escaped_so_the_error_stays_one_line() {
        // Found by manifest::proptests: this error ran over two lines.
        let message = parse_err("[key_value_store.\"a\\nb\"]\ntype = \"redis\"\nurl = \"x\"\n");
        assert_contains(
            &message,
            r"[key_value_store.a\nb]: url must start with redis://",
        );
    }

    #[test]
    fn database_url_must_be_postgres() {
        let message = parse_err("[database.orders]\nurl = \"mysql://x\"\n");
        assert_contains(
            &message,
            "[database.orders]: url must start with postgres://",
        );
    }

    #[test]
    fn messaging_url_must_be_nats() {
        let message = parse_err("[messaging]\nurl = \"http://x\"\n");
        assert_contains(&message, "[messaging]: url must start with nats://");
    }

    #[test]
    fn outbound_http_policies_are_read_and_checked() {
        let config = parse_runtime_config(
            "[[outbound_http]]\nhost = \"*.example.com\"\ntimeout = \"1500ms\"\nbreaker_failures = 3\n",
            Path::new("rc.toml"),
        )
        .expect("valid");
        assert_eq!(
            config.outbound_http[0].timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        assert!(config.outbound_http[0].matches("api.example.com"));
        assert!(!config.outbound_http[0].matches("example.com"));
        let message = parse_err("[[outbound_http]]\nhost = \"*\"\nbreaker_failures = 0\n");
        assert_contains(
            &message,
            "[[outbound_http]]: breaker_failures must be at least 1",
        );
    }

    #[test]
    fn load_reports_a_missing_file_with_its_path() {
        let message = match load_runtime_config(Path::new("/nonexistent/rc.toml")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert_contains(
            &message,
            "/nonexistent/rc.toml: cannot read the runtime config file",
        );
    }
}
