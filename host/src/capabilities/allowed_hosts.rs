//! `allowed_outbound_hosts`: which `scheme://host:port` a component may
//! reach, in Spin's syntax. Pure and shared by every capability that
//! connects somewhere (outbound HTTP, PostgreSQL, sockets). A host is a
//! name, `*.domain`, `*`, an IP address or an IP range (`10.0.0.0/8`).
//! Spindle adds one scheme, `http+h2c`: a permission for `http` that also
//! says the host speaks HTTP/2 with prior knowledge (see [`H2C_SCHEME`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::variables;
use crate::manifest::App;

/// Every component's `allowed_outbound_hosts`, by component id.
pub type ByComponent = HashMap<String, Arc<AllowedHosts>>;

/// Renders and parses every component's `allowed_outbound_hosts`, once at
/// start-up, for all the capabilities that connect somewhere; an error
/// names the component and the entry.
pub fn render_all(app: &App, variables: &variables::AppState) -> anyhow::Result<ByComponent> {
    app.components
        .values()
        .map(|component| {
            let hosts = AllowedHosts::render(&component.allowed_outbound_hosts, variables)
                .with_context(|| format!("[component.{}] allowed_outbound_hosts", component.id))?;
            Ok((component.id.clone(), Arc::new(hosts)))
        })
        .collect()
}

/// The host name that addresses the app itself (routed by path).
pub const SELF_HOST: &str = "self";

/// `http+h2c://host[:port]`: the guest still writes `http://host`, and the
/// host speaks HTTP/2 with prior knowledge (h2c) to it instead of HTTP/1.1,
/// so gRPC trailers pass. Such an entry is an `http` permission too (a
/// permission for more is one for less): it allows `http://host`, on `http`'s
/// default port 80 unless one is written. Spin has no such scheme, so a Spin
/// manifest never means anything else by it.
pub const H2C_SCHEME: &str = "http+h2c";

/// A component's `allowed_outbound_hosts`, parsed: the pure policy that
/// decides whether a `scheme://host:port` may be reached. Spin's syntax and
/// semantics, reusable by any capability that connects somewhere (postgres).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Renders the `{{ var }}` templates of manifest entries and parses them.
    /// An error quotes the entry as written, never its rendered value, which
    /// may hold a secret.
    pub fn render(entries: &[String], variables: &variables::AppState) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                variables
                    .render(entry)
                    .and_then(|rendered| AllowedHost::parse(&rendered))
                    .with_context(|| format!("\"{entry}\""))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Parses entries without templates; an error quotes the entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                AllowedHost::parse(entry).with_context(|| format!("\"{entry}\""))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// Whether `scheme://host[:port]` may be reached; a missing port is the
    /// scheme's default. `host` `self` is the app itself, allowed by a
    /// `self` entry or a `*` host.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = normalize_host(host);
        self.0.iter().any(|entry| entry.allows(scheme, &host, port))
    }

    /// Whether `scheme://host[:port]` goes over h2c: it is `http` and an
    /// `http+h2c` entry allows it. Such an entry wins over a plain `http`
    /// one for the same host, since it says how the host speaks, not only
    /// that it may be reached; a request nothing allows is never h2c.
    pub fn wants_h2c(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = normalize_host(host);
        self.0
            .iter()
            .any(|entry| entry.h2c && entry.allows(scheme, &host, port))
    }

    /// Whether nothing is allowed at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The host names (not addresses or wildcards) of entries that would
    /// allow `scheme` to `port` if the name resolved to the address at hand:
    /// what a socket check must look up, since a socket sees only addresses.
    pub fn names_for(&self, scheme: &str, port: u16) -> Vec<String> {
        self.0
            .iter()
            .filter(|entry| entry.allows_scheme(scheme) && entry.port.allows(port))
            .filter_map(|entry| match &entry.host {
                HostPattern::Exact(name) if name.parse::<IpAddr>().is_err() => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, each part
/// possibly a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// `None` for `*://`; `http` for `http+h2c://`.
    scheme: Option<String>,
    /// Written `http+h2c://`: reached over HTTP/2 with prior knowledge.
    h2c: bool,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`
    Any,
    /// `*.example.com`, stored as `.example.com`: subdomains only.
    Subdomains(String),
    /// `self`: the app itself.
    ToSelf,
    /// A name or an IP address, normalised.
    Exact(String),
    /// `10.0.0.0/8`, `[fd00::]/8`: every address in the range.
    Range(IpRange),
}

/// An IP network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `address/prefix`, or `None` when `host` is not written as a range.
    fn parse(host: &str) -> Option<anyhow::Result<Self>> {
        let (address, prefix) = host.split_once('/')?;
        let address = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        let network = address.parse::<IpAddr>().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        Some(match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= bits => Ok(Self { network, prefix }),
            _ => Err(anyhow::anyhow!(
                "`{prefix}` is not a prefix length from 0 to {bits}"
            )),
        })
    }

    fn contains(&self, address: IpAddr) -> bool {
        let keep = |bits: u32, total: u32| {
            if bits == 0 {
                0
            } else {
                !0u128 << (total - bits)
            }
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = keep(self.prefix.into(), 32) as u32;
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = keep(self.prefix.into(), 128);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// `*`
    Any,
    /// One port (`p..=p`), or Spin's `a..b` range.
    Range(RangeInclusive<u16>),
}

impl AllowedHost {
    fn parse(entry: &str) -> anyhow::Result<Self> {
        let entry = entry.trim();
        if entry == "insecure:allow-all" {
            // Spin's older spelling of `*://*:*`.
            return Ok(Self {
                scheme: None,
                h2c: false,
                host: HostPattern::Any,
                port: PortPattern::Any,
            });
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("needs a scheme, like `https://` or `*://`");
        };
        let h2c = scheme.eq_ignore_ascii_case(H2C_SCHEME);
        let scheme = match scheme {
            "*" => None,
            _ if h2c => Some("http".to_string()),
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => bail!(
                "the scheme must be letters (`https`, `http`, `postgres`, `tcp`, ...), \
                 `http+h2c` (HTTP/2 without TLS) or `*`"
            ),
        };
        // A trailing `/` is tolerated; a path is not, but an IP range is.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host_port(authority)?;
        if host.contains('/') && IpRange::parse(host).is_none() {
            bail!("must not have a path; write only scheme://host[:port]");
        }
        let port = match port {
            None => {
                let default = scheme.as_deref().and_then(default_port).with_context(
                    || "has no port and its scheme has no default port; add `:PORT` or `:*`",
                )?;
                PortPattern::Range(default..=default)
            }
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::parse(port)?,
        };
        Ok(Self {
            scheme,
            h2c,
            host: HostPattern::parse(host)?,
            port,
        })
    }

    fn allows_scheme(&self, scheme: &str) -> bool {
        self.scheme
            .as_deref()
            .is_none_or(|allowed| allowed.eq_ignore_ascii_case(scheme))
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if !self.allows_scheme(scheme) {
            return false;
        }
        if host == SELF_HOST {
            // The app is not reached through a port: only the scheme counts.
            return matches!(self.host, HostPattern::Any | HostPattern::ToSelf);
        }
        let Some(port) = port.or_else(|| default_port(&scheme.to_ascii_lowercase())) else {
            return false;
        };
        self.host.allows(host) && self.port.allows(port)
    }
}

impl HostPattern {
    fn parse(host: &str) -> anyhow::Result<Self> {
        if host.is_empty() {
            bail!("has no host");
        }
        if host == "*" {
            return Ok(Self::Any);
        }
        if host == SELF_HOST {
            return Ok(Self::ToSelf);
        }
        if let Some(range) = IpRange::parse(host) {
            return Ok(Self::Range(range?));
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                bail!("a wildcard host is `*` or `*.domain`");
            }
            return Ok(Self::Subdomains(format!(".{}", normalize_host(domain))));
        }
        if host.contains('*') {
            bail!("a wildcard host is `*` or `*.domain`");
        }
        Ok(Self::Exact(normalize_host(host)))
    }

    /// `host` is normalised.
    fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            Self::ToSelf => false,
            Self::Exact(exact) => host == exact,
            Self::Range(range) => host
                .parse::<IpAddr>()
                .is_ok_and(|address| range.contains(address)),
        }
    }
}

impl PortPattern {
    fn parse(port: &str) -> anyhow::Result<Self> {
        let number = |text: &str| {
            text.parse::<u16>()
                .with_context(|| format!("port `{text}` is not a number from 0 to 65535"))
        };
        match port.split_once("..") {
            Some((start, end)) => {
                let (start, end) = (number(start)?, number(end)?);
                // Spin's `a..b` excludes `b`, like Rust's.
                if end <= start {
                    bail!("port range `{port}` is empty");
                }
                Ok(Self::Range(start..=end - 1))
            }
            None => {
                let port = number(port)?;
                Ok(Self::Range(port..=port))
            }
        }
    }

    fn allows(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Range(range) => range.contains(&port),
        }
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address or
/// range (`[fd00::]/8`).
fn split_host_port(authority: &str) -> anyhow::Result<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            bail!("an IPv6 address needs its closing `]`");
        };
        if after.starts_with('/') {
            // A range keeps its brackets; the port follows the prefix.
            let host_len = address.len() + 2 + after.find(':').unwrap_or(after.len());
            let (host, port) = authority.split_at(host_len);
            return Ok((host, port.strip_prefix(':')));
        }
        return match after {
            "" => Ok((address, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((address, Some(port))),
                None => bail!("unexpected text after the IPv6 address"),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Lowercase names; IP addresses in their canonical form, without brackets,
/// so `[::1]`, `::1` and `0:0::1` compare equal.
fn normalize_host(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The port a scheme uses when none is written, as in Spin.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid allowed_outbound_hosts")
    }

    fn parse_error(entry: &str) -> String {
        format!(
            "{:#}",
            AllowedHosts::parse(&[entry]).expect_err("must be rejected")
        )
    }

    #[test]
    fn exact_host_allows_only_its_scheme_and_default_port() {
        let hosts = allowed(&["https://example.com"]);
        assert!(hosts.allows("https", "example.com", None));
        assert!(hosts.allows("https", "example.com", Some(443)));
        assert!(!hosts.allows("https", "example.com", Some(8443)));
        assert!(!hosts.allows("http", "example.com", None));
        assert!(!hosts.allows("https", "api.example.com", None));
        assert!(!hosts.allows("https", "example.org", None));
    }

    #[test]
    fn explicit_port_replaces_the_default() {
        let hosts = allowed(&["http://example.com:8080"]);
        assert!(hosts.allows("http", "example.com", Some(8080)));
        assert!(!hosts.allows("http", "example.com", None));
        assert!(!hosts.allows("http", "example.com", Some(80)));
    }

    #[test]
    fn default_port_written_out_still_matches() {
        let hosts = allowed(&["http://example.com"]);
        assert!(hosts.allows("http", "example.com", Some(80)));
    }

    #[test]
    fn wildcard_subdomain_does_not_match_the_bare_domain() {
        let hosts = allowed(&["https://*.example.com"]);
        assert!(hosts.allows("https", "api.example.com", None));
        assert!(hosts.allows("https", "a.b.example.com", None));
        assert!(!hosts.allows("https", "example.com", None));
        assert!(!hosts.allows("https", "badexample.com", None));
    }

    #[test]
    fn wildcard_scheme_and_port_allow_any_scheme_and_port() {
        let hosts = allowed(&["*://example.com:*"]);
        assert!(hosts.allows("http", "example.com", None));
        assert!(hosts.allows("https", "example.com", Some(9000)));
        assert!(hosts.allows("postgres", "example.com", None));
        assert!(!hosts.allows("http", "other.com", None));
    }

    #[test]
    fn localhost_with_any_port() {
        let hosts = allowed(&["http://localhost:*"]);
        assert!(hosts.allows("http", "localhost", Some(3000)));
        assert!(hosts.allows("http", "LOCALHOST", Some(3000)));
        assert!(!hosts.allows("https", "localhost", Some(3000)));
        assert!(!hosts.allows("http", "127.0.0.1", Some(3000)));
    }

    #[test]
    fn ip_addresses_match_in_any_spelling() {
        let hosts = allowed(&["http://127.0.0.1:8080", "http://[::1]:8080"]);
        assert!(hosts.allows("http", "127.0.0.1", Some(8080)));
        assert!(!hosts.allows("http", "127.0.0.1", Some(8081)));
        assert!(hosts.allows("http", "[::1]", Some(8080)));
        assert!(hosts.allows("http", "[0:0::1]", Some(8080)));
    }

    #[test]
    fn everything_wildcard_allows_everything_including_the_app() {
        let hosts = allowed(&["*://*:*"]);
        assert!(hosts.allows("https", "example.com", Some(1)));
        assert!(hosts.allows("http", "b.spin.internal", None));
        assert!(hosts.allows("http", "self", None));
    }

    #[test]
    fn insecure_allow_all_is_everything() {
        let hosts = allowed(&["insecure:allow-all"]);
        assert!(hosts.allows("redis", "cache.internal", Some(6380)));
    }

    #[test]
    fn port_range_excludes_its_end_as_in_spin() {
        let hosts = allowed(&["http://localhost:3000..3002"]);
        assert!(hosts.allows("http", "localhost", Some(3000)));
        assert!(hosts.allows("http", "localhost", Some(3001)));
        assert!(!hosts.allows("http", "localhost", Some(3002)));
    }

    #[test]
    fn self_is_allowed_only_by_self_or_any_host() {
        assert!(allowed(&["http://self"]).allows("http", "self", None));
        assert!(!allowed(&["http://self"]).allows("https", "self", None));
        assert!(allowed(&["http://*:8080"]).allows("http", "self", None));
        assert!(!allowed(&["http://*.spin.internal"]).allows("http", "self", None));
        assert!(!allowed(&["http://example.com"]).allows("http", "self", None));
    }

    #[test]
    fn service_chaining_needs_its_host_listed() {
        let any = allowed(&["http://*.spin.internal"]);
        assert!(any.allows("http", "b.spin.internal", None));
        let one = allowed(&["http://b.spin.internal"]);
        assert!(one.allows("http", "b.spin.internal", None));
        assert!(!one.allows("http", "c.spin.internal", None));
        assert!(!allowed(&["http://self"]).allows("http", "b.spin.internal", None));
    }

    #[test]
    fn nothing_listed_allows_nothing() {
        let hosts = AllowedHosts::default();
        assert!(!hosts.allows("https", "example.com", None));
        assert!(!hosts.allows("http", "self", None));
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        assert!(parse_error("example.com").contains("needs a scheme"));
        assert!(parse_error("https://example.com/api").contains("must not have a path"));
        assert!(parse_error("https://example.com:http").contains("not a number"));
        assert!(parse_error("*://example.com").contains("no default port"));
        assert!(parse_error("ftp://example.com").contains("no default port"));
        assert!(parse_error("https://api.*.com").contains("wildcard host"));
        assert!(parse_error("https://:443").contains("no host"));
        assert!(parse_error("http://localhost:9..9").contains("empty"));
        assert!(parse_error("h2c+x://example.com:1").contains("scheme"));
    }

    #[test]
    fn ip_ranges_allow_every_address_in_them() {
        let hosts = allowed(&["*://127.0.0.0/24:7000", "tcp://[fd00::]/8:*"]);
        assert!(hosts.allows("tcp", "127.0.0.1", Some(7000)));
        assert!(hosts.allows("tcp", "127.0.0.255", Some(7000)));
        assert!(!hosts.allows("tcp", "127.0.1.1", Some(7000)));
        assert!(!hosts.allows("tcp", "127.0.0.1", Some(7001)));
        assert!(hosts.allows("tcp", "fd12::1", Some(22)));
        assert!(!hosts.allows("tcp", "fe80::1", Some(22)));
        assert!(allowed(&["*://0.0.0.0/0:*"]).allows("tcp", "8.8.8.8", Some(53)));
        for bad in [
            "*://127.0.0.0/33:80",
            "*://127.0.0.0/x:80",
            "*://example.com/24:80",
        ] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_checks_look_up_only_names_that_could_allow_the_port() {
        let hosts = allowed(&[
            "*://db.internal:5432",
            "*://10.0.0.1:5432",
            "https://api.example.com",
        ]);
        assert_eq!(hosts.names_for("tcp", 5432), ["db.internal"]);
        assert!(hosts.names_for("tcp", 443).is_empty());
    }

    #[test]
    fn h2c_entry_allows_plain_http_and_asks_for_h2c() {
        let hosts = allowed(&[
            "http+h2c://127.0.0.1:50051",
            "HTTP+H2C://users.spin.internal",
        ]);
        assert!(hosts.allows("http", "127.0.0.1", Some(50051)));
        assert!(hosts.wants_h2c("http", "127.0.0.1", Some(50051)));
        // No port written: http's default, 80.
        assert!(hosts.allows("http", "users.spin.internal", None));
        assert!(hosts.wants_h2c("http", "users.spin.internal", Some(80)));
        assert!(!hosts.allows("http", "127.0.0.1", Some(50052)));
        assert!(!hosts.wants_h2c("http", "127.0.0.1", Some(50052)));
    }

    #[test]
    fn h2c_entry_grants_no_other_scheme() {
        let hosts = allowed(&["http+h2c://db.internal:5432"]);
        assert!(!hosts.allows("https", "db.internal", Some(5432)));
        assert!(!hosts.allows("tcp", "db.internal", Some(5432)));
        assert!(!hosts.allows("postgres", "db.internal", Some(5432)));
        assert!(!hosts.wants_h2c("https", "db.internal", Some(5432)));
        assert!(hosts.names_for("tcp", 5432).is_empty());
    }

    #[test]
    fn h2c_entry_wins_over_a_plain_http_entry_for_its_host_only() {
        let hosts = allowed(&["http://*:*", "http+h2c://*.spin.internal"]);
        assert!(hosts.wants_h2c("http", "users.spin.internal", None));
        assert!(hosts.allows("http", "example.com", Some(8080)));
        assert!(!hosts.wants_h2c("http", "example.com", Some(8080)));
        // Plain entries and wildcard schemes never ask for h2c.
        assert!(!allowed(&["*://*:*"]).wants_h2c("http", "users.spin.internal", None));
        assert!(!allowed(&["http://users.spin.internal"]).wants_h2c(
            "http",
            "users.spin.internal",
            None
        ));
    }

    #[test]
    fn h2c_entry_can_reach_self() {
        let hosts = allowed(&["http+h2c://self"]);
        assert!(hosts.allows("http", "self", None));
        assert!(hosts.wants_h2c("http", "self", None));
    }

    #[test]
    fn other_plus_schemes_are_rejected_naming_the_accepted_ones() {
        for entry in [
            "https+h2c://example.com:443",
            "*+h2c://example.com:80",
            "http+h2://example.com",
        ] {
            let error = parse_error(entry);
            assert!(error.contains("`http+h2c`"), "{entry}: {error}");
        }
    }

    #[test]
    fn trailing_slash_is_tolerated() {
        assert!(allowed(&["https://example.com/"]).allows("https", "example.com", None));
    }
}

#[cfg(test)]
mod proptests;
