//! The address a guest opens: a URL (`postgres://user:pass@host:5432/db`) or
//! libpq key-value text (`host=h user=u dbname=d`), as tokio-postgres (and so
//! Spin) accepts.
//!
//! Parsed here rather than by sqlx, whose parser fills gaps from the host's
//! own `PG*` environment variables and `~/.pgpass`: a guest must never
//! connect with the operator's credentials. Errors never quote the address,
//! which may hold a password.

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::AddressError;

/// What to connect to, and as whom; also the key of the shared pools.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port; 5432 unless given.
    pub port: u16,
    /// The role to log in as.
    pub user: String,
    /// `None` when the server is expected not to ask (trust auth).
    pub password: Option<String>,
    /// `None` means the server's default: the database named like the user.
    pub database: Option<String>,
    /// Shown in `pg_stat_activity`.
    pub application_name: Option<String>,
}

impl Address {
    /// Parses either form; unsupported settings (TLS, Unix sockets, several
    /// hosts, unknown keys) are errors rather than silently ignored.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        let settings = match text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        {
            Some(rest) => url_settings(rest)?,
            None if text.contains("://") => return Err(AddressError::Scheme),
            None => key_value_settings(text)?,
        };
        let mut address = Self {
            host: String::new(),
            port: 5432,
            user: String::new(),
            password: None,
            database: None,
            application_name: None,
        };
        for (key, value) in settings {
            match key.as_str() {
                "host" | "hostaddr" => address.host = value,
                "port" => {
                    address.port = value
                        .parse()
                        .map_err(|_| AddressError::Invalid("port".into()))?
                }
                "user" => address.user = value,
                "password" => address.password = Some(value),
                "dbname" => address.database = Some(value),
                "application_name" => address.application_name = Some(value),
                "sslmode" => match value.as_str() {
                    // Without TLS support these all mean "unencrypted".
                    "disable" | "allow" | "prefer" => {}
                    "require" | "verify-ca" | "verify-full" => return Err(AddressError::Tls),
                    _ => return Err(AddressError::Invalid("sslmode".into())),
                },
                // The pool has its own acquire timeout.
                "connect_timeout" => {}
                _ => return Err(AddressError::UnknownSetting(key)),
            }
        }
        if address.host.is_empty() {
            return Err(AddressError::Missing("host"));
        }
        if address.host.starts_with('/') {
            return Err(AddressError::UnixSocket);
        }
        if address.host.contains(',') {
            return Err(AddressError::SeveralHosts);
        }
        if address.user.is_empty() {
            return Err(AddressError::Missing("user"));
        }
        Ok(address)
    }

    /// sqlx options for this address and nothing else: every field the
    /// environment could have filled is set explicitly.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            // No password means none is sent, not the host's `PGPASSWORD`.
            .password(self.password.as_deref().unwrap_or_default())
            .database(self.database.as_deref().unwrap_or(&self.user))
            .application_name(self.application_name.as_deref().unwrap_or("spindle"))
            .ssl_mode(PgSslMode::Disable)
            // The interface's datetimes carry no zone and mean UTC.
            .options([("TimeZone", "UTC")])
    }
}

/// `[user[:password]@]host[:port][/dbname][?key=value&...]`, percent-decoded.
fn url_settings(rest: &str) -> Result<Vec<(String, String)>, AddressError> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => (Some(credentials), host_port),
        None => (None, authority),
    };
    let mut settings = Vec::new();
    if let Some(credentials) = credentials {
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (credentials, None),
        };
        settings.push(("user".into(), percent_decode(user, "user")?));
        if let Some(password) = password {
            settings.push(("password".into(), percent_decode(password, "password")?));
        }
    }
    if !host_port.is_empty() {
        let (host, port) = split_host_port(host_port)?;
        settings.push(("host".into(), percent_decode(host, "host")?));
        if let Some(port) = port {
            settings.push(("port".into(), port.to_string()));
        }
    }
    if !path.is_empty() {
        settings.push(("dbname".into(), percent_decode(path, "dbname")?));
    }
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, "query")?;
        let value = percent_decode(value, "query")?;
        settings.push((key, value));
    }
    Ok(settings)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), AddressError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::Invalid("host".into()))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(AddressError::Invalid("host".into())),
            },
        };
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

/// `%XX` escapes (and `+` is left alone, as in URL paths).
fn percent_decode(text: &str, part: &str) -> Result<String, AddressError> {
    let invalid = || AddressError::Invalid(part.into());
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(invalid)?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// `key=value` pairs separated by whitespace; a value may be single-quoted,
/// with `\'` and `\\` escapes inside.
fn key_value_settings(text: &str) -> Result<Vec<(String, String)>, AddressError> {
    let mut settings = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(settings);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(AddressError::Invalid("key=value setting".into()));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(AddressError::Invalid("key=value setting".into())),
                    },
                    Some(c) => value.push(c),
                    None => return Err(AddressError::Invalid("key=value setting".into())),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        settings.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Address {
        Address::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn url_gives_every_part() {
        let address =
            parse("postgres://alice:s%40cret@db.example.com:6543/shop?application_name=x");
        assert_eq!(address.host, "db.example.com");
        assert_eq!(address.port, 6543);
        assert_eq!(address.user, "alice");
        assert_eq!(address.password.as_deref(), Some("s@cret"));
        assert_eq!(address.database.as_deref(), Some("shop"));
        assert_eq!(address.application_name.as_deref(), Some("x"));
    }

    #[test]
    fn url_defaults_to_port_5432_and_no_password() {
        let address = parse("postgresql://bob@127.0.0.1");
        assert_eq!(address.port, 5432);
        assert_eq!(address.password, None);
        assert_eq!(address.database, None);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        assert_eq!(parse("postgres://u@[::1]:5433/db").host, "::1");
    }

    #[test]
    fn key_value_form_allows_quoted_values() {
        let address = parse("host=localhost user=postgres password='a b\\'c\\\\' dbname = mydb");
        assert_eq!(address.host, "localhost");
        assert_eq!(address.user, "postgres");
        assert_eq!(address.password.as_deref(), Some("a b'c\\"));
        assert_eq!(address.database.as_deref(), Some("mydb"));
    }

    #[test]
    fn plain_and_preferred_sslmodes_connect_unencrypted() {
        parse("postgres://u@h/db?sslmode=disable");
        parse("host=h user=u sslmode=prefer");
    }

    #[test]
    fn unsupported_settings_are_refused() {
        let error = |text: &str| Address::parse(text).expect_err(text).to_string();
        assert!(error("postgres://u@h/db?sslmode=require").contains("TLS"));
        assert!(error("host=/var/run/postgresql user=u").contains("Unix"));
        assert!(error("postgres://u@a,b/db").contains("several hosts"));
        assert!(error("postgres://u@h/db?sslrootcert=/etc/passwd").contains("sslrootcert"));
        assert!(error("mysql://u@h/db").contains("postgres://"));
        assert!(error("postgres://h/db").contains("user"));
        assert!(error("user=u").contains("host"));
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for text in [
            "postgres://u:hunter2@h:notaport/db",
            "host=h user=u password='hunter2 x",
            "host=h user=u hunter2",
        ] {
            let error = Address::parse(text).expect_err(text);
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
}
