//! A component's `allowed_outbound_hosts`, parsed once and matched against
//! the (scheme, host, port) a guest asks to reach.
//!
//! Entries follow Spin: `scheme://host[:port]`, where the scheme may be `*`,
//! the host `*` or `*.domain`, and the port a number, a range `a-b` or `*`; a
//! missing port means the scheme's well-known port. `insecure:allow-all`
//! allows everything. Pure and free of any one protocol, so that every
//! outbound capability can share it.

use anyhow::{Context, bail};

/// Allows everything, as in Spin; meant for development only.
const ALLOW_ALL: &str = "insecure:allow-all";

/// The parsed allow-list of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

/// One `scheme://host:port` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: Pattern,
    host: HostPattern,
    ports: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exactly(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`: any subdomain of `example.com` (not the domain itself).
    SubdomainOf(String),
    Exactly(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    /// An inclusive range; a single port is a range of one.
    Range(u16, u16),
}

impl AllowedHosts {
    /// Parses rendered entries (templates already filled in); an entry that
    /// is not `scheme://host[:port]` is an error naming it.
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry == ALLOW_ALL {
                parsed.push(Entry {
                    scheme: Pattern::Any,
                    host: HostPattern::Any,
                    ports: PortPattern::Any,
                });
                continue;
            }
            parsed.push(Entry::parse(entry).with_context(|| format!("allowed host \"{entry}\""))?);
        }
        Ok(Self { entries: parsed })
    }

    /// Whether any entry allows connecting to `host:port` with `scheme`.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = normalise_host(host);
        self.entries
            .iter()
            .any(|entry| entry.matches(scheme, &host, port))
    }
}

impl Entry {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let Some((scheme, rest)) = text.split_once("://") else {
            bail!("needs a scheme, e.g. \"postgres://{text}\"");
        };
        if scheme.is_empty() {
            bail!("has an empty scheme");
        }
        let authority = match rest.split_once('/') {
            Some((authority, "")) => authority,
            Some(_) => bail!("must not have a path"),
            None => rest,
        };
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            bail!("has no host");
        }
        let ports = match port {
            None => match default_port(scheme) {
                Some(port) => PortPattern::Range(port, port),
                None => bail!("needs a port: `{scheme}` has no well-known one"),
            },
            Some("*") => PortPattern::Any,
            Some(port) => match port.split_once('-') {
                Some((low, high)) => {
                    let (low, high) = (parse_port(low)?, parse_port(high)?);
                    if low > high {
                        bail!("has an empty port range {low}-{high}");
                    }
                    PortPattern::Range(low, high)
                }
                None => {
                    let port = parse_port(port)?;
                    PortPattern::Range(port, port)
                }
            },
        };
        let host = match host {
            "*" => HostPattern::Any,
            _ => match host.strip_prefix("*.") {
                Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                    HostPattern::SubdomainOf(normalise_host(domain))
                }
                _ if host.contains('*') => {
                    bail!("may use `*` only as the whole host or as `*.domain`")
                }
                _ => HostPattern::Exactly(normalise_host(host)),
            },
        };
        let scheme = match scheme {
            "*" => Pattern::Any,
            _ => Pattern::Exactly(scheme.to_ascii_lowercase()),
        };
        Ok(Self {
            scheme,
            host,
            ports,
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match &self.scheme {
            Pattern::Any => true,
            Pattern::Exactly(allowed) => allowed.eq_ignore_ascii_case(scheme),
        };
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exactly(allowed) => allowed == host,
            HostPattern::SubdomainOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        };
        let port_ok = match self.ports {
            PortPattern::Any => true,
            PortPattern::Range(low, high) => (low..=high).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> anyhow::Result<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            bail!("has an unclosed `[`");
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => bail!("has text after `]` that is not a port"),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn parse_port(text: &str) -> anyhow::Result<u16> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("has an invalid port `{text}`"))
}

/// Hosts compare case-insensitively, and IPv6 literals with or without brackets.
fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The port an entry without one stands for.
fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        "postgres" | "postgresql" => 5432,
        "mysql" => 3306,
        "redis" => 6379,
        "rediss" => 6379,
        "mqtt" => 1883,
        "nats" => 4222,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        AllowedHosts::parse(&entries).expect("valid entries")
    }

    fn parse_error(entry: &str) -> String {
        format!(
            "{:#}",
            AllowedHosts::parse(&[entry.to_string()]).expect_err("must be rejected")
        )
    }

    #[test]
    fn exact_entry_allows_only_its_scheme_host_and_port() {
        let hosts = allowed(&["postgres://localhost:5432"]);
        assert!(hosts.allows("postgres", "localhost", 5432));
        assert!(!hosts.allows("postgres", "localhost", 5433));
        assert!(!hosts.allows("postgres", "example.com", 5432));
        assert!(!hosts.allows("mysql", "localhost", 5432));
    }

    #[test]
    fn entry_without_port_means_the_schemes_default_port() {
        let hosts = allowed(&["postgres://127.0.0.1"]);
        assert!(hosts.allows("postgres", "127.0.0.1", 5432));
        assert!(!hosts.allows("postgres", "127.0.0.1", 6543));
    }

    #[test]
    fn wildcard_host_allows_any_host_on_that_port() {
        let hosts = allowed(&["postgres://*:5432"]);
        assert!(hosts.allows("postgres", "db.internal", 5432));
        assert!(!hosts.allows("postgres", "db.internal", 1234));
    }

    #[test]
    fn all_wildcards_allow_everything() {
        let hosts = allowed(&["*://*:*"]);
        assert!(hosts.allows("postgres", "anything", 1));
        assert!(allowed(&["insecure:allow-all"]).allows("redis", "x", 6379));
    }

    #[test]
    fn subdomain_wildcard_does_not_allow_the_domain_itself() {
        let hosts = allowed(&["postgres://*.example.com:5432"]);
        assert!(hosts.allows("postgres", "db.example.com", 5432));
        assert!(!hosts.allows("postgres", "example.com", 5432));
        assert!(!hosts.allows("postgres", "badexample.com", 5432));
    }

    #[test]
    fn port_ranges_are_inclusive() {
        let hosts = allowed(&["postgres://db:5432-5434"]);
        assert!(hosts.allows("postgres", "db", 5434));
        assert!(!hosts.allows("postgres", "db", 5435));
    }

    #[test]
    fn hosts_compare_case_insensitively_and_ipv6_with_or_without_brackets() {
        let hosts = allowed(&["postgres://DB.local", "postgres://[::1]:5432"]);
        assert!(hosts.allows("postgres", "db.LOCAL", 5432));
        assert!(hosts.allows("postgres", "::1", 5432));
        assert!(hosts.allows("postgres", "[::1]", 5432));
    }

    #[test]
    fn empty_list_allows_nothing() {
        assert!(!allowed(&[]).allows("postgres", "localhost", 5432));
    }

    #[test]
    fn malformed_entries_are_rejected_naming_the_problem() {
        assert!(parse_error("localhost:5432").contains("needs a scheme"));
        assert!(parse_error("postgres://db:port").contains("invalid port"));
        assert!(parse_error("postgres://db:5432/mydb").contains("path"));
        assert!(parse_error("foo://db").contains("needs a port"));
        assert!(parse_error("postgres://d*b").contains("`*`"));
        assert!(parse_error("postgres://db:9-1").contains("empty port range"));
    }
}
