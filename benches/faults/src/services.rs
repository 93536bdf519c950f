//! The platform's backing services as the scenarios need them: a private
//! NATS JetStream server they may stop and start, databases on the local
//! PostgreSQL, and a TCP proxy that can cut a connection path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The local PostgreSQL server (trust auth), as `scripts/services` runs it.
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
/// The local Redis.
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Starts PostgreSQL, NATS and Redis when they do not answer (the repository's
/// `scripts/services`, which installs them on a bare machine).
pub fn ensure_running(root: &Path) -> anyhow::Result<()> {
    let status = Command::new(root.join("scripts/services"))
        .current_dir(root)
        .stdout(Stdio::null())
        .status()
        .context("running scripts/services")?;
    if !status.success() {
        bail!("scripts/services could not start PostgreSQL, NATS and Redis ({status})");
    }
    Ok(())
}

/// A NATS server of the scenario's own, JetStream on, its store in a
/// temporary directory that outlives restarts.
pub struct PrivateNats {
    port: u16,
    store: tempfile::TempDir,
    process: Option<Child>,
}

impl PrivateNats {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let mut nats = Self {
            port: free_port()?,
            store: tempfile::tempdir().context("a directory for JetStream")?,
            process: None,
        };
        nats.resume().await?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): clients lose it at once.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let process = Command::new(nats_server_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (apt-get install -y nats-server)")?;
        self.process = Some(process);
        wait_until_answers(&format!("127.0.0.1:{}", self.port), Duration::from_secs(10)).await
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nats_server_binary() -> PathBuf {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// One database per service on the local PostgreSQL, under names of this
/// run's own; `spindle up` creates them, [`Databases::drop`] removes them.
pub struct Databases {
    prefix: String,
    services: Vec<String>,
}

impl Databases {
    /// Names for `services`' databases, fresh for this scenario.
    pub fn new(scenario: &str, services: &[&str]) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!(
                "spindle_faults_{}_{}",
                scenario.replace('-', "_"),
                &run[..8]
            ),
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The database name of `service`.
    pub fn name(&self, service: &str) -> String {
        format!("{}_{service}", self.prefix)
    }

    /// The runtime config's `[database.<service>]` tables, on `server`
    /// (`postgres://user@host:port`).
    pub fn runtime_config(&self, server: &str) -> String {
        self.services
            .iter()
            .map(|service| {
                format!(
                    "\n[database.{service}]\nurl = \"{server}/{}\"\n",
                    self.name(service)
                )
            })
            .collect()
    }

    /// Runs `sql` on `service`'s database with psql and returns the rows,
    /// fields separated by `|`.
    pub fn query(&self, service: &str, sql: &str) -> anyhow::Result<Vec<String>> {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
            ])
            .arg(self.name(service))
            .args(["-c", sql])
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql on {}: {sql}: {}",
                self.name(service),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The single number `sql` selects on `service`'s database.
    pub fn count(&self, service: &str, sql: &str) -> anyhow::Result<i64> {
        let rows = self.query(service, sql)?;
        let first = rows.first().with_context(|| format!("{sql}: no row"))?;
        first
            .trim()
            .parse()
            .with_context(|| format!("{sql}: not a number: {first}"))
    }
}

impl Drop for Databases {
    /// Drops the databases, unless `FAULTS_KEEP_DATABASES` is set (to look
    /// into a violation).
    fn drop(&mut self) {
        if std::env::var_os("FAULTS_KEEP_DATABASES").is_some() {
            eprintln!("   kept the databases {}_*", self.prefix);
            return;
        }
        for service in &self.services {
            let _ = Command::new("psql")
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-c"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name(service)
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A TCP proxy on a local port in front of `upstream`. While cut, it closes
/// every connection it carries and refuses new ones, as a network partition
/// seen by the client would.
pub struct TcpProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    severed: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts proxying a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let address = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (severed, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut.clone(),
            severed.clone(),
        ));
        Ok(Self {
            address,
            cut,
            severed,
            task,
        })
    }

    /// `127.0.0.1:<port>`, where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every carried connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.severed.send_modify(|generation| *generation += 1);
    }

    /// Carries connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    severed: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut severed = severed.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = severed.changed() => {}
            }
        });
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on `address`.
pub async fn wait_until_answers(address: &str, deadline: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while TcpStream::connect(address).await.is_err() {
        if Instant::now() > until {
            bail!("nothing answers on {address} after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
