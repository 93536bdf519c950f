//! The real services integration tests talk to. Each address comes from an
//! environment variable with the local default; a service that does not
//! answer is started with `scripts/services`, and if it still does not
//! answer the test fails naming it — it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use std::path::Path;

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

/// The MySQL (MariaDB) server's URL (`SPINDLE_TEST_MYSQL_URL`): root with
/// no password, database `test`.
pub fn mysql_url() -> String {
    let url = std::env::var("SPINDLE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    require("MySQL", &url, 3306);
    url
}

/// The MQTT broker's `host:port` (`SPINDLE_TEST_MQTT_ADDRESS`), anonymous
/// clients allowed.
pub fn mqtt_address() -> String {
    let address =
        std::env::var("SPINDLE_TEST_MQTT_ADDRESS").unwrap_or_else(|_| "127.0.0.1:1883".into());
    require("MQTT", &address, 1883);
    address
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
pub fn host_port(url: &str, default_port: u16) -> String {
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

/// A NATS server of the test's own (JetStream on, storage in a temp dir),
/// for tests that stop and restart the broker without disturbing others.
pub struct PrivateNats {
    port: u16,
    store: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl PrivateNats {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut nats = Self {
            port,
            store: tempfile::tempdir().expect("a temp dir for JetStream"),
            process: None,
        };
        nats.launch();
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.resume();
    }

    /// Starts the server again after [`PrivateNats::stop`].
    pub fn resume(&mut self) {
        self.launch();
    }

    fn launch(&mut self) {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("nats-server");
        let process = Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("starting {binary} (apt-get install -y nats-server): {error}")
            });
        self.process = Some(process);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !answers(&address) {
            assert!(
                std::time::Instant::now() < deadline,
                "the private NATS server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}
