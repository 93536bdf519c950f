//! Property tests of `allowed_outbound_hosts`: no entry makes the parser
//! panic; an entry printed from its parts parses back to those parts, in
//! any of its spellings; and `allows` agrees with a model of Spin's rules
//! written here (CIDR ranges checked bit by bit, names compared without
//! case or a final dot).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::{AllowedHost, AllowedHosts, HostPattern, IpRange, PortPattern};

/// An entry's parts, as a person means them.
#[derive(Debug, Clone)]
struct Entry {
    /// `None` for `*`.
    scheme: Option<&'static str>,
    host: Host,
    port: Port,
}

#[derive(Debug, Clone)]
enum Host {
    Any,
    ToSelf,
    /// `*.` and these labels.
    Subdomains(Vec<String>),
    Name(Vec<String>),
    Ip(IpAddr),
    Range(IpAddr, u8),
}

#[derive(Debug, Clone)]
enum Port {
    /// Not written: the scheme's default.
    Default,
    Any,
    One(u16),
    /// `a..b`, `b` excluded.
    Range(u16, u16),
}

/// `http+h2c` is `http` spoken over h2c; every other scheme is itself.
fn model_base(scheme: &str) -> (&str, bool) {
    if scheme.eq_ignore_ascii_case("http+h2c") {
        ("http", true)
    } else {
        (scheme, false)
    }
}

/// The scheme defaults Spin documents (`http+h2c` has `http`'s).
fn model_default_port(scheme: &str) -> Option<u16> {
    let scheme = model_base(scheme).0;
    let ports = [
        ("http", 80),
        ("https", 443),
        ("postgres", 5432),
        ("mysql", 3306),
        ("redis", 6379),
        ("mqtt", 1883),
    ];
    ports
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(scheme))
        .map(|(_, port)| *port)
}

fn render_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

impl Entry {
    /// The entry as a manifest would have it.
    fn render(&self) -> String {
        let host = match &self.host {
            Host::Any => "*".to_string(),
            Host::ToSelf => "self".to_string(),
            Host::Subdomains(labels) => format!("*.{}", labels.join(".")),
            Host::Name(labels) => labels.join("."),
            Host::Ip(ip) => render_ip(*ip),
            Host::Range(ip, prefix) => format!("{}/{prefix}", render_ip(*ip)),
        };
        let port = match self.port {
            Port::Default => String::new(),
            Port::Any => ":*".to_string(),
            Port::One(port) => format!(":{port}"),
            Port::Range(start, end) => format!(":{start}..{end}"),
        };
        format!("{}://{host}{port}", self.scheme.unwrap_or("*"))
    }

    /// Whether parsing must fail: no port and no default for the scheme, or
    /// an empty port range.
    fn is_invalid(&self) -> bool {
        match self.port {
            Port::Default => self.scheme.and_then(model_default_port).is_none(),
            Port::Range(start, end) => end <= start,
            _ => false,
        }
    }

    /// What the parser should make of it.
    fn parsed(&self) -> AllowedHost {
        let lower = |labels: &[String]| labels.join(".").to_ascii_lowercase();
        let host = match &self.host {
            Host::Any => HostPattern::Any,
            Host::ToSelf => HostPattern::ToSelf,
            Host::Subdomains(labels) => HostPattern::Subdomains(format!(".{}", lower(labels))),
            Host::Name(labels) => HostPattern::Exact(lower(labels)),
            Host::Ip(ip) => HostPattern::Exact(ip.to_string()),
            Host::Range(network, prefix) => HostPattern::Range(IpRange {
                network: *network,
                prefix: *prefix,
            }),
        };
        let port = match self.port {
            Port::Default => {
                let port = self.scheme.and_then(model_default_port).unwrap_or(0);
                PortPattern::Range(port..=port)
            }
            Port::Any => PortPattern::Any,
            Port::One(port) => PortPattern::Range(port..=port),
            Port::Range(start, end) => PortPattern::Range(start..=end.saturating_sub(1)),
        };
        AllowedHost {
            scheme: self
                .scheme
                .map(|scheme| model_base(scheme).0.to_ascii_lowercase()),
            h2c: self.is_h2c(),
            host,
            port,
        }
    }

    /// Written `http+h2c://`.
    fn is_h2c(&self) -> bool {
        self.scheme.is_some_and(|scheme| model_base(scheme).1)
    }

    /// The model: may `scheme://host:port` be reached under this entry?
    fn model_allows(&self, scheme: &str, host: &RequestHost, port: Option<u16>) -> bool {
        let scheme_ok = self
            .scheme
            .is_none_or(|own| model_base(own).0.eq_ignore_ascii_case(scheme));
        if !scheme_ok {
            return false;
        }
        if let RequestHost::ToSelf = host {
            return matches!(self.host, Host::Any | Host::ToSelf);
        }
        let Some(port) = port.or_else(|| model_default_port(scheme)) else {
            return false;
        };
        let port_ok = match self.port {
            Port::Default => Some(port) == self.scheme.and_then(model_default_port),
            Port::Any => true,
            Port::One(own) => port == own,
            Port::Range(start, end) => start <= port && port < end,
        };
        let same_name = |labels: &[String], name: &[String]| {
            labels.len() == name.len()
                && labels
                    .iter()
                    .zip(name)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        };
        let host_ok = match (&self.host, host) {
            (Host::Any, _) => true,
            (Host::ToSelf, _) => false,
            (Host::Subdomains(domain), RequestHost::Name(name, _)) => {
                name.len() > domain.len() && same_name(domain, &name[name.len() - domain.len()..])
            }
            (Host::Name(own), RequestHost::Name(name, _)) => same_name(own, name),
            (Host::Ip(own), RequestHost::Ip(ip, _)) => own == ip,
            (Host::Range(network, prefix), RequestHost::Ip(ip, _)) => {
                in_range(*network, *prefix, *ip)
            }
            _ => false,
        };
        port_ok && host_ok
    }
}

/// The first `prefix` bits of both addresses agree, read one bit at a time.
fn in_range(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let (network, address) = (bytes(network), bytes(address));
    let bit = |bytes: &[u8], index: usize| bytes[index / 8] >> (7 - index % 8) & 1;
    network.len() == address.len()
        && (0..usize::from(prefix)).all(|index| bit(&network, index) == bit(&address, index))
}

/// A host a guest asks for.
#[derive(Debug, Clone)]
enum RequestHost {
    ToSelf,
    /// The labels, and how they are written (case, a final dot).
    Name(Vec<String>, String),
    /// The address, and how it is written (brackets, long IPv6 forms).
    Ip(IpAddr, String),
}

impl RequestHost {
    fn text(&self) -> &str {
        match self {
            Self::ToSelf => "self",
            Self::Name(_, text) | Self::Ip(_, text) => text,
        }
    }
}

/// Few labels, so entries and requests share names; none is `self`.
fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "api", "example", "com", "spin", "internal", "db-1", "x",
    ])
    .prop_map(str::to_string)
}

fn labels() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(label(), 1..4)
}

/// Addresses from a few networks, so ranges often contain them.
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (prop::sample::select(vec![10u8, 127, 192]), any::<[u8; 3]>())
            .prop_map(|(first, [b, c, d])| IpAddr::V4(Ipv4Addr::new(first, b & 3, c, d))),
        (
            prop::sample::select(vec![0xfd00u16, 0xfe80, 0]),
            any::<[u16; 2]>()
        )
            .prop_map(|(first, [g, h])| IpAddr::V6(Ipv6Addr::new(
                first,
                g & 1,
                0,
                0,
                0,
                0,
                g,
                h
            ))),
    ]
}

fn scheme() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::weighted(
        0.8,
        prop::sample::select(vec![
            "http", "https", "HTTP", "postgres", "redis", "tcp", "mqtt", "http+h2c", "HTTP+H2C",
        ]),
    )
}

fn entry() -> impl Strategy<Value = Entry> {
    let host = prop_oneof![
        1 => Just(Host::Any),
        1 => Just(Host::ToSelf),
        2 => labels().prop_map(Host::Subdomains),
        3 => labels().prop_map(Host::Name),
        2 => ip().prop_map(Host::Ip),
        2 => (ip(), any::<u8>()).prop_map(|(ip, prefix)| {
            let bits = if ip.is_ipv4() { 33 } else { 129 };
            Host::Range(ip, prefix % bits)
        }),
    ];
    let port = prop_oneof![
        2 => Just(Port::Default),
        1 => Just(Port::Any),
        2 => prop::sample::select(vec![80u16, 443, 5432, 8080, 0, 65535]).prop_map(Port::One),
        2 => (0u16..10, 0u16..10).prop_map(|(a, b)| Port::Range(8000 + a, 8000 + b)),
    ];
    (scheme(), host, port).prop_map(|(scheme, host, port)| Entry { scheme, host, port })
}

/// Mixed case and a final dot for names; brackets and long forms for IPs.
fn request_host() -> impl Strategy<Value = RequestHost> {
    let name = (labels(), any::<bool>(), any::<bool>()).prop_map(|(labels, upper, dot)| {
        let mut text = labels.join(".");
        if upper {
            text = text.to_ascii_uppercase();
        }
        if dot {
            text.push('.');
        }
        RequestHost::Name(labels, text)
    });
    let address = (ip(), any::<bool>(), any::<bool>()).prop_map(|(ip, brackets, long)| {
        let text = match ip {
            IpAddr::V6(v6) if long => {
                let groups: Vec<String> =
                    v6.segments().iter().map(|g| format!("{g:04x}")).collect();
                groups.join(":")
            }
            other => other.to_string(),
        };
        let text = if brackets && ip.is_ipv6() {
            format!("[{text}]")
        } else {
            text
        };
        RequestHost::Ip(ip, text)
    });
    prop_oneof![1 => Just(RequestHost::ToSelf), 3 => name, 3 => address]
}

/// A host just inside or just outside what `entry` names: the entry's own
/// name respelled, with a label more or less, glued onto a label; an
/// address that differs from the entry's in one bit around the prefix.
fn request_near(entry: &Entry) -> BoxedStrategy<RequestHost> {
    let name = |labels: Vec<String>| {
        let text = labels.join(".");
        RequestHost::Name(labels, text)
    };
    match &entry.host {
        Host::Name(own) | Host::Subdomains(own) => {
            let own = own.clone();
            (label(), 0..4usize, any::<bool>())
                .prop_map(move |(extra, how, upper)| {
                    let mut labels = own.clone();
                    match how {
                        0 => labels.insert(0, extra),
                        1 if labels.len() > 1 => {
                            labels.remove(0);
                        }
                        2 => labels[0] = format!("{extra}{}", labels[0]),
                        _ => {}
                    }
                    let RequestHost::Name(labels, text) = name(labels) else {
                        unreachable!("name() makes names")
                    };
                    let text = if upper {
                        text.to_ascii_uppercase()
                    } else {
                        text
                    };
                    RequestHost::Name(labels, text)
                })
                .boxed()
        }
        Host::Ip(own) | Host::Range(own, _) => {
            let own = *own;
            let prefix = match &entry.host {
                Host::Range(_, prefix) => usize::from(*prefix),
                _ => {
                    if own.is_ipv4() {
                        32
                    } else {
                        128
                    }
                }
            };
            (0..4usize, any::<usize>())
                .prop_map(move |(near, anywhere)| {
                    let bits = if own.is_ipv4() { 32 } else { 128 };
                    // One bit flipped: around the prefix, or anywhere.
                    let index = match near {
                        0 => prefix.saturating_sub(1),
                        1 => prefix,
                        2 => prefix + 1,
                        _ => anywhere % bits,
                    };
                    let address = if index >= bits {
                        own
                    } else {
                        match own {
                            IpAddr::V4(ip) => {
                                IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ (1 << (31 - index))))
                            }
                            IpAddr::V6(ip) => {
                                IpAddr::V6(Ipv6Addr::from(u128::from(ip) ^ (1 << (127 - index))))
                            }
                        }
                    };
                    let text = match address {
                        IpAddr::V6(ip) => format!("[{ip}]"),
                        IpAddr::V4(ip) => ip.to_string(),
                    };
                    RequestHost::Ip(address, text)
                })
                .boxed()
        }
        Host::Any | Host::ToSelf => request_host().boxed(),
    }
}

/// A port at or next to the entry's own ports.
fn port_near(entry: &Entry) -> BoxedStrategy<Option<u16>> {
    let ports: Vec<u16> = match entry.port {
        Port::Default | Port::Any => vec![80, 443, 5432, 6379, 1883, 8080],
        Port::One(port) => vec![port, port.wrapping_add(1), port.wrapping_sub(1)],
        Port::Range(start, end) => vec![start, end, start.wrapping_sub(1), end.wrapping_sub(1)],
    };
    prop::option::weighted(0.8, prop::sample::select(ports)).boxed()
}

/// Text around and inside the grammar's edges, pieced together so the
/// parser gets past its first checks.
fn near_entry() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "http",
        "HTTPS",
        "*",
        "",
        "h2c+x",
        "ftp",
        "tcp",
        "insecure:allow-all",
        "é",
    ]);
    let host = prop::sample::select(vec![
        "example.com",
        "*.example.com",
        "*",
        "self",
        "127.0.0.1",
        "[::1]",
        "::1",
        "[::1",
        "10.0.0.0/8",
        "[fd00::]/8",
        "fd00::/8",
        "10.0.0.0/33",
        "[::]/129",
        "*.",
        "a.*.b",
        "",
        "Example.COM.",
        "[",
        "]",
        "256.1.1.1",
        "[10.0.0.1]",
        "a/b",
        "[fd00::]/x",
        "[]/8",
        "/8",
        "[x]/8",
        "é.example",
        "{{ host }}",
    ]);
    let port = prop::sample::select(vec![
        "", ":", ":*", ":80", ":0", ":65535", ":65536", ":1..3", ":3..1", ":..", ":x", ":+80",
        ":1..", ":..9", ":1..2..3", ":-1", ":80:80",
    ]);
    let tail = prop::sample::select(vec!["", "/", "//", "/path", " ", "\n", "é"]);
    (scheme, host, port, tail, any::<bool>()).prop_map(|(scheme, host, port, tail, separator)| {
        let separator = if separator { "://" } else { ":/" };
        format!("{scheme}{separator}{host}{port}{tail}")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_entry_parses_or_fails_without_panicking(entry in prop_oneof![near_entry(), any::<String>()]) {
        if let Ok(hosts) = AllowedHosts::parse(&[&entry]) {
            // Whatever was accepted can be asked about anything.
            for (scheme, host) in [("http", "example.com"), ("tcp", "[::1]"), ("https", "self"), ("x", "")] {
                let _ = hosts.allows(scheme, host, None);
                let _ = hosts.allows(scheme, host, Some(0));
            }
            let _ = hosts.names_for("tcp", 5432);
        }
    }

    #[test]
    fn printed_entry_parses_back_to_its_parts(entry in entry()) {
        let text = entry.render();
        match AllowedHost::parse(&text) {
            Ok(parsed) => {
                prop_assert!(!entry.is_invalid(), "{text} should be refused");
                prop_assert_eq!(parsed, entry.parsed(), "{}", text);
            }
            Err(error) => prop_assert!(entry.is_invalid(), "{text} refused: {error:#}"),
        }
    }

    #[test]
    fn spelling_does_not_change_an_entry(entry in entry(), upper: bool, slash: bool, spaces: bool) {
        let text = entry.render();
        let Ok(canonical) = AllowedHosts::parse(&[&text]) else {
            return Ok(());
        };
        let mut respelled = if upper { text.to_ascii_uppercase() } else { text.clone() };
        // `*://` stays `*://`; only letters change case, and `SELF` is a name, not `self`.
        if matches!(entry.host, Host::ToSelf) {
            respelled = respelled.replace("SELF", "self");
        }
        if slash {
            respelled.push('/');
        }
        if spaces {
            respelled = format!("  {respelled}\t");
        }
        let parsed = AllowedHosts::parse(&[&respelled]);
        prop_assert_eq!(parsed.ok(), Some(canonical), "{} vs {}", text, respelled);
    }

    #[test]
    fn allows_agrees_with_the_model(
        (entry, host, port) in entry().prop_flat_map(|entry| {
            let host = prop_oneof![3 => request_near(&entry), 1 => request_host()];
            let port = port_near(&entry);
            (Just(entry), host, port)
        }),
        scheme in prop::sample::select(vec!["http", "https", "HTTPS", "postgres", "redis", "tcp", "mqtt"]),
    ) {
        let text = entry.render();
        let Ok(hosts) = AllowedHosts::parse(&[&text]) else {
            prop_assert!(entry.is_invalid(), "{text} refused");
            return Ok(());
        };
        prop_assert_eq!(
            hosts.allows(scheme, host.text(), port),
            entry.model_allows(scheme, &host, port),
            "{} allows {}://{}:{:?}", text, scheme, host.text(), port
        );
        prop_assert_eq!(
            hosts.wants_h2c(scheme, host.text(), port),
            entry.is_h2c() && entry.model_allows(scheme, &host, port),
            "{} wants h2c for {}://{}:{:?}", text, scheme, host.text(), port
        );
    }

    #[test]
    fn a_list_allows_what_any_of_its_entries_allows(
        entries in prop::collection::vec(entry(), 0..5),
        host in request_host(),
        port in prop::option::of(8000u16..8010),
    ) {
        let valid: Vec<&Entry> = entries.iter().filter(|entry| !entry.is_invalid()).collect();
        let texts: Vec<String> = valid.iter().map(|entry| entry.render()).collect();
        let hosts = AllowedHosts::parse(&texts).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        let expected = valid.iter().any(|entry| entry.model_allows("http", &host, port));
        prop_assert_eq!(hosts.allows("http", host.text(), port), expected, "{:?}", texts);
    }
}
