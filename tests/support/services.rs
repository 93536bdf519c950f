//! The real services integration tests talk to. Each address comes from an
//! environment variable with the local default; a service that does not
//! answer is started with `scripts/services`, and if it still does not
//! answer the test fails naming it — it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::workspace_root;

/// The PostgreSQL server's URL (`SPINDLE_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    let url = std::env::var("SPINDLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    require("PostgreSQL", &url, 5432);
    url
}

/// The Redis server's URL (`SPINDLE_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    let url =
        std::env::var("SPINDLE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    require("Redis", &url, 6379);
    url
}

/// The NATS server's URL (`SPINDLE_TEST_NATS_URL`), JetStream enabled.
pub fn nats_url() -> String {
    let url =
        std::env::var("SPINDLE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    require("NATS", &url, 4222);
    url
}

fn require(name: &str, url: &str, default_port: u16) {
    let address = host_port(url, default_port);
    if answers(&address) {
        return;
    }
    start_services();
    assert!(
        answers(&address),
        "{name} does not answer at {address} ({url}), and scripts/services could not start it"
    );
}

fn start_services() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let status = Command::new(workspace_root().join("scripts/services")).status();
        if let Err(error) = status {
            eprintln!("running scripts/services: {error}");
        }
    });
}

fn answers(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
}

/// `scheme://[user@]host[:port][/...]` → `host:port`.
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}
